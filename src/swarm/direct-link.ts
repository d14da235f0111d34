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
import type { AddressInfo } from 'node:net'
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

/** Maximum of direct links a node accepts at once. */
const MAX_LINKS = 512

/** Time allowed for a TLS handshake, in ms. */
const HANDSHAKE_MS = 10_000

/** A link with no traffic for this long is closed, in ms. */
export const LINK_IDLE_MS = 120_000

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
  /** Address to listen on, such as 0.0.0.0. */
  host: string
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
  private readonly links = new Set<tls.TLSSocket>()
  private readonly server: tls.Server
  private listening = false

  constructor (init: DirectServerInit) {
    this.init = init
    this.server = tls.createServer({
      ...TLS_OPTIONS,
      handshakeTimeout: HANDSHAKE_MS,
      pskCallback: (socket, identity) => this.redeem(socket, identity)
    }, (socket) => { this.accept(socket) })
    this.server.maxConnections = MAX_LINKS
    this.server.on('tlsClientError', (err, socket) => { init.logger.debug({ err: err.message, remote: socket.remoteAddress }, 'direct link handshake failed') })
  }

  /** Starts listening; throws when the address cannot be listened on. */
  async start (): Promise<void> {
    this.server.listen(this.init.port, this.init.host)
    await once(this.server, 'listening')
    this.listening = true
  }

  get port (): number {
    return (this.server.address() as AddressInfo).port
  }

  /** Issues a ticket for `peer`, or returns undefined when the server is not listening. */
  ticket (peer: string): Ticket | undefined {
    if (!this.listening) return undefined
    const now = Date.now()
    for (const [id, issued] of this.tickets) {
      if (issued.expires > now && this.tickets.size < MAX_TICKETS) break
      this.tickets.delete(id)
    }
    const id = randomBytes(16).toString('base64url')
    const psk = randomBytes(32)
    this.tickets.set(id, { psk, peer, expires: now + TICKET_TTL_MS })
    return { port: this.port, id, psk }
  }

  async stop (): Promise<void> {
    if (!this.listening) return
    this.listening = false
    this.tickets.clear()
    const closed = once(this.server, 'close')
    this.server.close()
    // close() waits for the open links.
    for (const socket of this.links) socket.destroy()
    await closed
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
    this.links.add(socket)
    socket.on('close', () => { this.links.delete(socket) })
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
