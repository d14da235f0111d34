/**
 * State the downloader keeps about one holder of a content: which pieces it
 * has, its open piece stream, the requests in flight and how it behaved.
 */
import type { PeerId } from '@libp2p/interface'
import type { PieceClient } from './piece-client.ts'

export class Source {
  readonly peer: PeerId
  readonly id: string
  /**
   * True for a supernode: one whose peer id is in a configured multiaddr, or one that
   * responded to a seed request. A holder first seen through gossip or the DHT becomes one then.
   */
  supernode: boolean
  /** Pieces the holder has verified. */
  readonly has = new Set<number>()
  /** Pieces requested from this holder and not received yet. */
  readonly inflight = new Set<number>()
  client?: PieceClient
  /** The libp2p stream that a direct link replaced, until its requests are served. */
  draining?: PieceClient
  connecting?: Promise<PieceClient | undefined>
  /** Bytes of verified pieces received from it. */
  bytes = 0
  /** Dial or stream failures in a row. */
  failures = 0
  /** No new request before this time (ms since epoch) after a failure. */
  retryAt = 0
  /** Set after it sent bytes that failed verification: never asked again. */
  banned = false
  /** Pieces it asked to fetch elsewhere first, with the time (ms since epoch) to ask again. */
  readonly deferred = new Map<number, number>()
  /** Last time its bitfield was requested, ms since epoch. */
  polledAt = 0
  /** True once its pieces came over a direct link. */
  linked = false

  constructor (peer: PeerId, supernode: boolean) {
    this.peer = peer
    this.id = peer.toString()
    this.supernode = supernode
  }

  usable (now: number): boolean {
    return !this.banned && now >= this.retryAt
  }
}
