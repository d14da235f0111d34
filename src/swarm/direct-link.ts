/**
 * Direct links: piece transfers on a TLS connection of their own, beside the
 * libp2p connection. On a libp2p connection every byte passes through noise
 * and yamux in JavaScript; TLS runs in OpenSSL and costs a fraction of the CPU
 * time per byte (docs/architecture.md, "Direct links").
 *
 * A holder hands out a ticket over the libp2p piece stream, which noise has
 * authenticated: a random identity and a random 32-byte pre-shared key, valid
 * once and for TICKET_TTL_MS. The requester connects with TLS-PSK, so only
 * the peer that got the ticket can open the link, and the link is as private
 * as the libp2p connection.
 */
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import type { AddressInfo, Socket } from 'node:net'
import tls from 'node:tls'
import type { Logger } from '../log.ts'
import { SocketChannel } from './socket-channel.ts'

/** TLS 1.2 PSK cipher suites, where the pre-shared key alone authenticates both ends. AES-GCM first, because CPUs accelerate it. */
const TLS_OPTIONS = {
  ciphers: 'PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305',
  minVersion: 'TLSv1.2',
  maxVersion: 'TLSv1.2'
} as const

/** Time a ticket stays valid, in ms. */
const TICKET_TTL_MS = 30_000

/** Maximum of unused tickets; the oldest is dropped first. */
const MAX_TICKETS = 4096

/** Maximum of connections a node accepts on its data port at once, handshakes in progress included. */
const MAX_LINKS = 512

/**
 * Maximum of connections from one address. Each process keeps one link to a node, so this
 * leaves room for many processes on one host, and keeps one address that never finishes a
 * handshake from taking all MAX_LINKS.
 */
const MAX_CONNECTIONS_PER_ADDRESS = 64

/** Time allowed for a TLS handshake, in ms. */
const HANDSHAKE_MS = 5_000

/** A link with no traffic for this long is closed, in ms. */
const LINK_IDLE_MS = 120_000

export interface Ticket {
  port: number
  id: string
  psk: Uint8Array
}

interface IssuedTicket {
  psk: Buffer
  peer: string
  expires: number
}

export interface DirectServerInit {
  /** Addresses to listen on, such as 0.0.0.0, all on the same port. */
  hosts: string[]
  /** TCP port, 0 for one the system picks. */
  port: number
  logger: Logger
  /** Receives each link once its handshake is done, with the peer id the ticket was issued to. */
  onLink: (channel: SocketChannel, peer: string) => void
}

export class DirectServer {
  private readonly init: DirectServerInit
  private readonly tickets = new Map<string, IssuedTicket>()
  /** Peer id of each connection, from the ticket it used. */
  private readonly peers = new WeakMap<tls.TLSSocket, string>()
  /** Open TCP connections, handshakes in progress included, so that stop can end them. */
  private readonly connections = new Set<Socket>()
  /** Open connections by remote address. */
  private readonly perAddress = new Map<string, number>()
  private readonly servers: tls.Server[] = []
  private boundPort = 0

  constructor (init: DirectServerInit) {
    this.init = init
  }

  /**
   * Listens on the first host, then on the others at the same port. Throws when the first
   * cannot be listened on. Another host that fails is logged and left out, so peers that
   * reach this node at that address send pieces over libp2p.
   */
  async start (): Promise<void> {
    const [first, ...others] = this.init.hosts
    if (first == null) throw new Error('no address to listen on for direct links')
    this.boundPort = await this.listen(first, this.init.port, others.length > 0)
    for (const host of others) {
      try {
        await this.listen(host, this.boundPort, true)
      } catch (err) {
        this.init.logger.warn({ host, port: this.boundPort, err: (err as Error).message }, 'cannot listen for direct links on this address; peers that reach this node there send pieces over libp2p')
      }
    }
  }

  /** Port of the direct links, 0 before start. */
  get port (): number {
    return this.boundPort
  }

  /** Issues a ticket for `peer`, or returns undefined when the server is not listening. */
  ticket (peer: string): Ticket | undefined {
    if (this.servers.length === 0) return undefined
    const now = Date.now()
    for (const [id, issued] of this.tickets) {
      if (issued.expires > now && this.tickets.size < MAX_TICKETS) break
      this.tickets.delete(id)
    }
    const id = randomBytes(16).toString('base64url')
    const psk = randomBytes(32)
    this.tickets.set(id, { psk, peer, expires: now + TICKET_TTL_MS })
    return { port: this.boundPort, id, psk }
  }

  async stop (): Promise<void> {
    const servers = this.servers.splice(0)
    this.tickets.clear()
    const closed = servers.map(async server => {
      const done = once(server, 'close')
      server.close()
      await done
    })
    // close() waits for the open connections.
    for (const socket of this.connections) socket.destroy()
    await Promise.all(closed)
  }

  /** Starts one TLS server on `host` and `port`; returns the port it got. */
  private async listen (host: string, port: number, ipv6Only: boolean): Promise<number> {
    const server = tls.createServer({
      ...TLS_OPTIONS,
      handshakeTimeout: HANDSHAKE_MS,
      pskCallback: (socket, identity) => this.redeem(socket, identity)
    }, (socket) => { this.accept(socket) })
    server.maxConnections = MAX_LINKS
    server.on('connection', (socket: Socket) => { this.track(socket) })
    // Node's TLS server reports a failed or timed-out handshake but leaves the connection open.
    server.on('tlsClientError', (err, socket) => {
      this.init.logger.debug({ err: err.message, remote: socket.remoteAddress }, 'direct link handshake failed')
      socket.destroy()
    })
    server.listen({ port, host, ipv6Only })
    await once(server, 'listening')
    this.servers.push(server)
    return (server.address() as AddressInfo).port
  }

  /** Tracks a new connection, and ends it at once when its address already has too many. */
  private track (socket: Socket): void {
    const address = socket.remoteAddress ?? ''
    const open = this.perAddress.get(address) ?? 0
    if (open >= MAX_CONNECTIONS_PER_ADDRESS) {
      this.init.logger.debug({ remote: address, open }, 'rejected a direct link connection: too many connections from this address')
      socket.destroy()
      return
    }
    this.perAddress.set(address, open + 1)
    this.connections.add(socket)
    socket.on('close', () => {
      this.connections.delete(socket)
      const left = (this.perAddress.get(address) ?? 1) - 1
      if (left > 0) this.perAddress.set(address, left)
      else this.perAddress.delete(address)
    })
  }

  /** Returns the key of a valid ticket and uses it up, or null, which fails the handshake. */
  private redeem (socket: tls.TLSSocket, identity: string): Buffer | null {
    const issued = this.tickets.get(identity)
    if (issued == null) return null
    this.tickets.delete(identity)
    if (issued.expires < Date.now()) return null
    this.peers.set(socket, issued.peer)
    return issued.psk
  }

  private accept (socket: tls.TLSSocket): void {
    const peer = this.peers.get(socket)
    if (peer == null) {
      socket.destroy()
      return
    }
    socket.setNoDelay(true)
    socket.setTimeout(LINK_IDLE_MS, () => { socket.destroy() })
    this.init.onLink(new SocketChannel(socket), peer)
  }
}

/**
 * Opens a direct link to `host` with a ticket that the holder issued. Rejects when
 * the connection or the handshake fails, or when `signal` aborts first.
 */
export async function connectDirect (host: string, ticket: Ticket, signal: AbortSignal): Promise<SocketChannel> {
  const socket = tls.connect({
    ...TLS_OPTIONS,
    host,
    port: ticket.port,
    pskCallback: () => ({ psk: Buffer.from(ticket.psk), identity: ticket.id }),
    // No certificate: the pre-shared key authenticates both ends.
    checkServerIdentity: () => undefined
  })
  try {
    await once(socket, 'secureConnect', { signal })
  } catch (err) {
    socket.destroy()
    throw err
  }
  socket.setNoDelay(true)
  socket.setTimeout(LINK_IDLE_MS, () => { socket.destroy() })
  return new SocketChannel(socket)
}
