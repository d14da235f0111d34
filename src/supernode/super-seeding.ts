/**
 * Super-seeding: a supernode hands each fresh piece to one peer first and
 * responds 'busy' to the others, which fetch it from that peer. So its upload
 * carries new pieces instead of copies. A second peer gets a piece from the supernode
 * only after a grace period, when the first one may have failed to pass it on.
 */
import type { CID } from 'multiformats/cid'

export interface SuperSeedingInit {
  /** Peers that get a piece from the supernode before others are sent elsewhere. Default 1. */
  copies?: number
  /** After this long since a piece's first upload, anybody may have it from the supernode, in ms. Default 2000. */
  graceMs?: number
  /** Tells whether a peer is still connected; a piece whose recipients all left is served again. */
  isConnected?: (peer: string) => boolean
}

interface PieceEntry {
  peers: Set<string>
  first: number
}

/** Contents tracked at once; the oldest are forgotten first. */
const MAX_CONTENTS = 1024

export class SuperSeeding {
  private readonly init: SuperSeedingInit
  private readonly contents = new Map<string, Map<number, PieceEntry>>()

  constructor (init: SuperSeedingInit = {}) {
    this.init = init
  }

  /** Decides whether `peer` gets piece `index` of `key` now or is sent to other holders. */
  decide (key: CID, index: number, peer: string): 'serve' | 'busy' {
    const id = key.toString()
    let pieces = this.contents.get(id)
    if (pieces == null) {
      pieces = new Map()
      this.contents.set(id, pieces)
      if (this.contents.size > MAX_CONTENTS) this.contents.delete(this.contents.keys().next().value!)
    }
    const now = Date.now()
    let entry = pieces.get(index)
    if (entry == null) {
      entry = { peers: new Set(), first: now }
      pieces.set(index, entry)
    }

    const copies = this.init.copies ?? 1
    const recipientsLeft = this.init.isConnected != null && ![...entry.peers].some(this.init.isConnected)
    const serve = entry.peers.has(peer) || entry.peers.size < copies || recipientsLeft || now - entry.first > (this.init.graceMs ?? 2000)
    if (!serve) return 'busy'
    entry.peers.add(peer)
    return 'serve'
  }
}
