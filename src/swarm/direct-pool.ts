/**
 * One direct link to each connected peer, shared by every download. A link
 * opens as soon as the libp2p connection to a peer opens, because a link
 * opened while the network carries piece data took 4.8 s at the median in
 * the 16-peer swarm benchmark.
 */
import type { Connection, PeerId } from '@libp2p/interface'
import type { Logger } from '../log.ts'
import { hostOfAddress, type DfnodeLibp2p } from '../p2p/node.ts'
import { connectDirect } from './direct-link.ts'
import { FramedStream } from './frames.ts'
import { PieceClient } from './piece-client.ts'
import { PIECE_PROTOCOL } from './wire.ts'

/** Time allowed to get a ticket and open the link, in ms. */
const OPEN_TIMEOUT_MS = 30_000

/** Wait before another attempt to a peer whose link failed or that offered none, in ms. */
const RETRY_MS = 60_000

export interface DirectPoolInit {
  node: DfnodeLibp2p
  logger: Logger
  /** Stall limit of the piece clients on the links, in ms. */
  stallMs: number
}

export class DirectPool {
  private readonly init: DirectPoolInit
  private readonly links = new Map<string, PieceClient>()
  private readonly clients = new WeakSet<PieceClient>()
  private readonly opening = new Set<string>()
  /** Peers not to try again before the given time, ms since the epoch. */
  private readonly refused = new Map<string, number>()
  private readonly controller = new AbortController()
  private readonly onOpen = (event: CustomEvent<Connection>): void => { this.open(event.detail) }

  constructor (init: DirectPoolInit) {
    this.init = init
  }

  /** Opens a link to each peer that connects from now on. */
  start (): void {
    this.init.node.addEventListener('connection:open', this.onOpen)
  }

  /** Returns the open link to `peer`, or undefined. */
  get (peer: PeerId): PieceClient | undefined {
    const link = this.links.get(peer.toString())
    if (link == null || !link.closed) return link
    this.links.delete(peer.toString())
    return undefined
  }

  /** Tells whether `client` is one of the pool's links. */
  owns (client: PieceClient): boolean {
    return this.clients.has(client)
  }

  /** Opens a link to `peer` over one of its connections, unless one is open or opening. */
  request (peer: PeerId): void {
    const connection = this.init.node.getConnections(peer).find(candidate => candidate.status === 'open')
    if (connection != null) this.open(connection)
  }

  stop (): void {
    this.init.node.removeEventListener('connection:open', this.onOpen)
    this.controller.abort(new Error('stopping'))
    for (const link of this.links.values()) void link.close()
    this.links.clear()
  }

  private open (connection: Connection): void {
    const id = connection.remotePeer.toString()
    if (this.opening.has(id) || this.get(connection.remotePeer) != null || (this.refused.get(id) ?? 0) > Date.now()) return
    const host = hostOfAddress(connection.remoteAddr)
    if (host == null) return
    this.opening.add(id)
    void this.connect(connection, host).finally(() => { this.opening.delete(id) })
  }

  private async connect (connection: Connection, host: string): Promise<void> {
    const id = connection.remotePeer.toString()
    const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(OPEN_TIMEOUT_MS)])
    const started = Date.now()
    let bootstrap: PieceClient | undefined
    try {
      bootstrap = new PieceClient(new FramedStream(await connection.newStream(PIECE_PROTOCOL, { signal })), { stallMs: this.init.stallMs })
      const ticket = await bootstrap.direct()
      if (ticket == null) {
        this.refused.set(id, Date.now() + RETRY_MS)
        return
      }
      const channel = await connectDirect(host, ticket, signal)
      if (this.controller.signal.aborted) {
        channel.abort(new Error('stopping'))
        return
      }
      const link = new PieceClient(channel, { stallMs: this.init.stallMs })
      this.clients.add(link)
      this.links.set(id, link)
      this.init.logger.debug({ peer: id, host, ms: Date.now() - started }, 'direct link open')
    } catch (err) {
      this.refused.set(id, Date.now() + RETRY_MS)
      this.init.logger.debug({ peer: id, host, err: (err as Error).message }, 'no direct link; pieces come over libp2p')
    } finally {
      void bootstrap?.close()
    }
  }
}
