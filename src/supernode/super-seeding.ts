/**
 * Super-seeding: a supernode hands each fresh piece to one peer first and
 * responds 'busy' to the others, which fetch it from that peer. So its upload
 * carries new pieces instead of copies. A second peer gets a piece from the supernode
 * only when the first upload failed, its recipients left, or a grace period has passed
 * since the first upload finished. While the supernode still cuts the content, a copy also
 * waits until no first upload of that content runs, because until then fresh pieces fill the upload.
 * The grace period is shorter once the supernode has stored the whole content. A copy of such a
 * content's piece also goes out at once when the supernode has sent no piece to any other peer
 * for IDLE_MS, so one downloader alone gets its pieces from the supernode and from peers.
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

/** Upload state of one content. */
interface ContentEntry {
  /** Pieces by index. */
  pieces: Map<number, PieceEntry>
  /** First uploads in progress: piece index and start, in ms since the epoch. */
  firstUploads: Map<number, number>
}

interface PieceEntry {
  /** Peers the piece was or is being uploaded to. */
  peers: Set<string>
  /** Start of the first upload, in ms since the epoch. */
  first: number
  /** End of the first upload that finished, in ms since the epoch. */
  delivered?: number
}

/**
 * Time without uploads to other peers after which the supernode serves copies at once, in ms. In a
 * swarm, requests of several peers follow each other closer than that, so super-seeding holds.
 */
const IDLE_MS = 100

/** Contents tracked at once; the oldest are forgotten first. */
const MAX_CONTENTS = 1024

export class SuperSeeding implements UploadPolicy {
  private readonly init: SuperSeedingInit
  private readonly contents = new Map<string, ContentEntry>()
  /**
   * Uploads per peer allowed by `decide` whose end `finished` has not reported yet, and the time
   * the last of them started or ended. Entries of peers with no upload for IDLE_MS are dropped.
   */
  private readonly uploads = new Map<string, { running: number, at: number }>()

  constructor (init: SuperSeedingInit = {}) {
    this.init = init
  }

  /** Decides whether `peer` gets piece `index` of `key` now or is sent to other holders. */
  decide (key: CID, index: number, peer: string): 'serve' | 'busy' {
    const content = this.contentOf(key)
    const now = Date.now()
    let entry = content.pieces.get(index)
    if (entry == null) {
      entry = { peers: new Set(), first: now }
      content.pieces.set(index, entry)
    }

    const copies = this.init.copies ?? 1
    const pendingMs = this.init.pendingMs ?? 30_000
    const recipientsLeft = this.init.isConnected != null && entry.peers.size > 0 && ![...entry.peers].some(this.init.isConnected)
    const complete = this.init.isComplete?.(key) === true
    const grace = complete ? (this.init.completeGraceMs ?? 1000) : (this.init.graceMs ?? 5000)
    const waited = entry.delivered != null
      ? now - entry.delivered > grace && (complete || !this.firstUploadRunning(content, now, pendingMs))
      : now - entry.first > pendingMs
    // With no piece sent to another peer lately, a copy delays no other peer's upload.
    const idle = complete && this.idleFor(peer, now)
    const serve = entry.peers.has(peer) || entry.peers.size < copies || recipientsLeft || waited || idle
    if (!serve) return 'busy'
    const uploads = this.uploads.get(peer) ?? { running: 0, at: now }
    uploads.running++
    uploads.at = now
    this.uploads.set(peer, uploads)
    if (entry.peers.size === 0) {
      entry.first = now
      content.firstUploads.set(index, now)
    }
    entry.peers.add(peer)
    return 'serve'
  }

  /** Records the end of an upload: a failed one frees the piece for the next requester. */
  finished (key: CID, index: number, peer: string, ok: boolean): void {
    const uploads = this.uploads.get(peer)
    if (uploads != null) {
      uploads.running = Math.max(0, uploads.running - 1)
      uploads.at = Date.now()
    }
    const content = this.contents.get(key.toString())
    const entry = content?.pieces.get(index)
    if (content == null || entry == null) return
    if (ok) {
      entry.delivered ??= Date.now()
      content.firstUploads.delete(index)
    } else if (entry.delivered == null) {
      entry.peers.delete(peer)
      if (entry.peers.size === 0) content.firstUploads.delete(index)
    }
  }

  /** Tells whether no upload to a peer other than `peer` runs or started or ended within IDLE_MS. */
  private idleFor (peer: string, now: number): boolean {
    let idle = true
    for (const [other, uploads] of this.uploads) {
      const quiet = uploads.running === 0 && now - uploads.at > IDLE_MS
      if (quiet) this.uploads.delete(other)
      else if (other !== peer) idle = false
    }
    return idle
  }

  /** Tells whether a first upload of the content started less than `pendingMs` ago and still runs. */
  private firstUploadRunning (content: ContentEntry, now: number, pendingMs: number): boolean {
    for (const started of content.firstUploads.values()) if (now - started <= pendingMs) return true
    return false
  }

  private contentOf (key: CID): ContentEntry {
    const id = key.toString()
    let content = this.contents.get(id)
    if (content == null) {
      content = { pieces: new Map(), firstUploads: new Map() }
      this.contents.set(id, content)
      if (this.contents.size > MAX_CONTENTS) this.contents.delete(this.contents.keys().next().value!)
    }
    return content
  }
}
