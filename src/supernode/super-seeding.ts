/**
 * Super-seeding: a supernode hands each fresh piece to one peer first and
 * responds 'busy' to the others, which fetch it from that peer. So its upload
 * carries new pieces instead of copies. A second peer gets a piece from the supernode
 * only when the first upload failed, its recipients left, or a grace period has passed
 * since the first upload finished. The grace period is shorter once the supernode has stored
 * the whole content.
 */
import type { CID } from 'multiformats/cid'
import type { UploadPolicy } from '../swarm/piece-server.ts'

export interface SuperSeedingInit {
  /** Peers that get a piece from the supernode before others are sent elsewhere. Default 1. */
  copies?: number
  /** Grace period: time after a piece's first upload finished until anybody may have it from the supernode, in ms. Default 5000. */
  graceMs?: number
  /**
   * Grace period once the supernode has stored the whole content, in ms. Default 1000. Its upload no
   * longer carries fresh pieces then, so copies of the last pieces go out sooner.
   */
  completeGraceMs?: number
  /** Time after a piece's first upload started until anybody may have it, even if that upload has not finished, in ms. Default 30 000. */
  pendingMs?: number
  /** Tells whether the supernode has stored every piece of a content. */
  isComplete?: (key: CID) => boolean
  /** Tells whether a peer is still connected; a piece whose recipients all left is served again. */
  isConnected?: (peer: string) => boolean
}

interface PieceEntry {
  /** Peers the piece was or is being uploaded to. */
  peers: Set<string>
  /** Start of the first upload, in ms since the epoch. */
  first: number
  /** End of the first upload that finished, in ms since the epoch. */
  delivered?: number
}

/** Contents tracked at once; the oldest are forgotten first. */
const MAX_CONTENTS = 1024

export class SuperSeeding implements UploadPolicy {
  private readonly init: SuperSeedingInit
  private readonly contents = new Map<string, Map<number, PieceEntry>>()

  constructor (init: SuperSeedingInit = {}) {
    this.init = init
  }

  /** Decides whether `peer` gets piece `index` of `key` now or is sent to other holders. */
  decide (key: CID, index: number, peer: string): 'serve' | 'busy' {
    const pieces = this.piecesOf(key)
    const now = Date.now()
    let entry = pieces.get(index)
    if (entry == null) {
      entry = { peers: new Set(), first: now }
      pieces.set(index, entry)
    }

    const copies = this.init.copies ?? 1
    const recipientsLeft = this.init.isConnected != null && entry.peers.size > 0 && ![...entry.peers].some(this.init.isConnected)
    const grace = this.init.isComplete?.(key) === true ? (this.init.completeGraceMs ?? 1000) : (this.init.graceMs ?? 5000)
    const waited = entry.delivered != null
      ? now - entry.delivered > grace
      : now - entry.first > (this.init.pendingMs ?? 30_000)
    const serve = entry.peers.has(peer) || entry.peers.size < copies || recipientsLeft || waited
    if (!serve) return 'busy'
    if (entry.peers.size === 0) entry.first = now
    entry.peers.add(peer)
    return 'serve'
  }

  /** Records the end of an upload: a failed one frees the piece for the next requester. */
  finished (key: CID, index: number, peer: string, ok: boolean): void {
    const entry = this.contents.get(key.toString())?.get(index)
    if (entry == null) return
    if (ok) entry.delivered ??= Date.now()
    else if (entry.delivered == null) entry.peers.delete(peer)
  }

  private piecesOf (key: CID): Map<number, PieceEntry> {
    const id = key.toString()
    let pieces = this.contents.get(id)
    if (pieces == null) {
      pieces = new Map()
      this.contents.set(id, pieces)
      if (this.contents.size > MAX_CONTENTS) this.contents.delete(this.contents.keys().next().value!)
    }
    return pieces
  }
}
