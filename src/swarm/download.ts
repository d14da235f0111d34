/**
 * Download of one content on a peer. It requests the rendezvous supernode to
 * seed the content and finds other holders by gossip and the DHT. It fetches
 * verified pieces from several holders at once, and from the origin when no
 * holder has a piece.
 */
import { stat } from 'node:fs/promises'
import type { PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { CID } from 'multiformats/cid'
import { EMPTY_CONTENT_CID, cidOfBytes, cidOfSha256, cidToDigest, isContentCid, sameCid } from '../content/ids.ts'
import { cutPieces } from '../content/cutter.ts'
import { decodeManifest, type Manifest } from '../content/manifest.ts'
import { choosePieceSize, pieceCount, pieceLength, pieceOffset } from '../content/pieces.ts'
import { DfnodeError, NoSourceError, OriginNotAllowedError, OriginUnreachableError, ProtocolError, StorageError, TimeoutError, VerificationError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { OriginClient } from '../origin/client.ts'
import { dialFailureReason, type DfnodeLibp2p } from '../p2p/node.ts'
import type { ContentRecord, ContentRecords } from '../store/content-records.ts'
import type { PieceStore } from '../store/piece-store.ts'
import type { ContentHasher, HashSession } from './content-hasher.ts'
import type { Discovery } from './discovery.ts'
import { PieceClient } from './piece-client.ts'
import type { DirectPool } from './direct-pool.ts'
import { FramedStream } from './frames.ts'
import { ownPiece, releasePiece } from './piece-buffers.ts'
import type { PeerSlots } from './peer-slots.ts'
import { ENDGAME_DUPLICATES, endgameReached, pickPiece } from './piece-picker.ts'
import { errorFromSeedEvent, openSeed } from './seed-client.ts'
import { Source } from './sources.ts'
import { rankSupernodes } from './supernodes.ts'
import { PIECE_PROTOCOL, bitIsSet } from './wire.ts'
import { stripQuery } from '../supernode/seed-task.ts'

export interface DownloadComponents {
  node: DfnodeLibp2p
  /** Requests in flight per peer over all downloads of the process, or no limit when undefined. */
  slots?: PeerSlots
  store: PieceStore
  records: ContentRecords
  discovery: Discovery
  origin: OriginClient
  logger: Logger
  /** Direct links to other peers, shared by the downloads; pieces come over libp2p streams only when undefined. */
  links?: DirectPool
  /** Thread that hashes the whole content from the stored pieces. */
  hasher: ContentHasher
}

/**
 * A file that takes each verified piece at its offset in place of the piece store, so that
 * the piece is written to disk once. The store then serves the piece from that file.
 */
export interface PieceSink {
  path: string
  write: (index: number, bytes: Uint8Array, offset: number) => Promise<void>
}

export interface DownloadInit {
  key: CID
  /** Content CID the bytes must hash to, when known before the download. */
  expected?: CID
  url: string
  headers: Record<string, string>
  digest?: string
  filter: string[]
  /** Supernode multiaddrs, in configuration order. */
  supernodes: string[]
  /** Fetch from the origin when no supernode or holder can supply a piece. */
  backSource: boolean
  /** Piece size used when this peer cuts the content itself, in bytes. Undefined chooses it by content size. */
  pieceSize?: number
  /**
   * Requests in flight per peer. Default 2. A holder splits its upload between the requests it
   * serves, so with fewer of them each piece arrives sooner and its receiver can pass it on sooner.
   */
  peerRequests?: number
  /** Requests in flight to a supernode. Default 2. */
  supernodeRequests?: number
  /** A piece request without progress for this long is abandoned, in ms. Default 10000. */
  stallMs?: number
  /** Wait for holders on the DHT before back-to-source when no supernode responds, in ms. Default 3000. */
  holderWaitMs?: number
  /** Delays before each further dial of a supernode whose dial failed, in ms. Default 250 and 1000. */
  seedDialDelaysMs?: readonly number[]
  /** File that takes verified pieces in place of the piece store. */
  sink?: PieceSink
}

export interface DownloadStats {
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
}

export interface DownloadLayout {
  size: number
  pieceSize: number
  count: number
  contentType?: string
}

/** Range requests to the origin at once during back-to-source of single pieces. */
const ORIGIN_REQUESTS = 2

/** Bitfield poll interval for holders that have nothing new to offer, in ms. */
const POLL_MS = 1500

/** Wait before requesting a piece again from a holder that responded 'busy', in ms. */
const BUSY_RETRY_MS = 400

/** Reconnections to a supernode after its seed stream broke, before the next supernode. */
const SEED_RETRIES = 2

/**
 * Delays before the second and third dial of a supernode whose first dial failed, in ms. A
 * supernode that many peers dial at once may reset some connections, and one failed dial
 * should not send the whole content to the origin.
 */
const SEED_DIAL_DELAYS_MS: readonly number[] = [250, 1000]

/** Time allowed to open a piece stream to a holder, in ms. */
const DIAL_TIMEOUT_MS = 10_000

/** DHT provider lookups while downloading, every this many ms. */
const PROVIDER_LOOKUP_MS = 4000

/** Failed requests in a row after which a peer no longer keeps its pieces from the origin. */
const PEER_CHANCES = 2

/** Failed requests in a row after which a supernode no longer keeps its pieces from the origin. */
const SUPERNODE_CHANCES = 4

/** Holders known to a download beyond which DHT lookups become sparse. */
const ENOUGH_HOLDERS = 4

/** With enough holders, a DHT lookup runs only every this many lookup intervals. */
const SPARSE_LOOKUP_EVERY = 8

/**
 * Pieces per download being written below which a verified piece leaves its holder's request
 * window before its write. In two traced 1 GiB single-link runs, a 4 MiB piece took 5.5 and
 * 14.3 ms to write at the median while one arrived about every 15 ms.
 */
const MAX_WRITING = 2

/**
 * Factor over the average time per piece after which the end game requests a piece again. Copies
 * requested at once mostly arrived after the first copy and were discarded (figures in docs/benchmarks.md).
 */
const ENDGAME_OVERDUE_FACTOR = 1.5

/** Shortest wait per piece of the end game before it requests a piece again, in ms. */
const ENDGAME_MIN_WAIT_MS = 200

/** End-game wait before the download has received any piece, in ms. */
const ENDGAME_FIRST_WAIT_MS = 1000

/**
 * Largest piece that the end game copies without a wait. Such a copy costs little upload, and a small
 * piece may queue behind large ones at its holder, which serves a link's requests in order.
 */
const ENDGAME_SMALL_PIECE_BYTES = 256 * 1024

/** Weight of the latest piece in the moving average of the time per piece. */
const PIECE_TIME_WEIGHT = 0.2

/** Wait before the scheduler looks again at overdue pieces that no holder could take, in ms. */
const OVERDUE_RECHECK_MS = 400

/** A piece request in flight, as input to the end game's wait. */
interface Flight {
  /** Start of the request, in ms since the epoch. A dial that hangs counts toward the wait. */
  at: number
  /**
   * Number of requests on the holder's link when this one was sent, itself included. The holder
   * serves them in order, so this request waits for the others.
   */
  queue: number
}

type PieceFrom = 'supernode' | 'peer' | 'origin' | 'local'

/** Returns true when two layouts number the same pieces: one piece or none is the same whatever its size. */
function sameLayout (a: { size: number, pieceSize: number, count: number }, b: { size: number, pieceSize: number, count: number }): boolean {
  return a.size === b.size && (a.pieceSize === b.pieceSize || (a.count <= 1 && b.count <= 1))
}

export class Download {
  readonly key: CID
  readonly stats: DownloadStats = { fromSupernode: 0, fromPeers: 0, fromOrigin: 0, fromLocal: 0 }
  layout?: DownloadLayout
  /** CID of the whole content once verified. */
  content?: CID
  /** Resolves when every piece is stored and the whole content verified; rejects on failure. */
  readonly done: Promise<void>

  private readonly init: DownloadInit
  private readonly components: DownloadComponents
  private readonly controller = new AbortController()
  private readonly sources = new Map<string, Source>()
  private readonly trusted = new Set<string>()
  private cids: (CID | undefined)[] = []
  private local: boolean[] = []
  private localCount = 0
  private inflightCount: number[] = []
  /** Pieces with at least one request in flight to a holder. */
  private readonly requested = new Set<number>()
  /** Requests in flight to holders, per piece. */
  private readonly flights = new Map<number, Flight[]>()
  /**
   * Moving average of the time a holder took per piece, in ms: from sending the request to the
   * last byte, divided by the requests queued on the link. Undefined before the first piece.
   */
  private pieceMs: number | undefined
  /** Wakes the scheduler when the end game's next piece becomes overdue. */
  private endgameTimer: NodeJS.Timeout | undefined
  /**
   * Set when piece CIDs or the layout came from a source that only the content hash proves: a
   * peer's manifest, or the record of a download that did not finish. Readers then wait for it.
   */
  private cidsUnproven = false
  /** Readers that hold the pins (see `hold`), and whether `release` waits for them. */
  private readers = 0
  private releaseRequested = false
  private originInflight = new Set<number>()
  /** Set once the origin ignored a Range request: the rest then comes from one read in order (readOriginInOrder). */
  private originInOrder = false
  private originReading = false
  private expectedContent?: CID
  private seedLost = false
  private fullBackSource = false
  private cursor = -1
  private failure?: Error
  private finished = false
  private readonly resolveDone: () => void
  private readonly rejectDone: (err: Error) => void
  private readonly layoutReady = Promise.withResolvers<DownloadLayout>()
  private readonly waiters = new Map<number, Array<() => void>>()
  private readonly pieceListeners = new Set<(index: number, bytes?: Uint8Array) => void>()
  private readonly unpins: Array<() => void> = []
  /** The content hash over the stored prefix of pieces, created with the layout. */
  private hash: HashSession | undefined
  /** Pieces added to the content hash: the stored prefix [0, hashed). */
  private hashed = 0
  /** Set once the content digest is requested. */
  private digesting = false
  /** Pieces being written to disk, not yet stored. */
  private readonly writing = new Set<number>()
  /** Stored pieces whose bytes on disk this download did not verify and write: the content hash checks them. */
  private readonly unchecked = new Set<number>()
  private scheduled = false
  private lookingUp = false
  /** Piece bytes received after the piece was stored from another source (end-game copies). */
  private duplicateBytes = 0
  /** Piece bytes received on requests that failed before the piece was complete. */
  private abortedBytes = 0
  /** Holders whose pieces came over a direct link. */
  private directLinks = 0
  /** Piece bytes received on end-game copies that were cancelled once another holder's copy arrived. */
  private cancelledBytes = 0
  /** End-game copies cancelled. */
  private cancelled = 0
  private readonly unreachable: string[] = []
  private readonly refused: string[] = []
  private unwatch?: () => void
  private unslot?: () => void
  private timers: NodeJS.Timeout[] = []
  private readonly started = Date.now()
  /** Peer ids in the configured supernode multiaddrs. */
  private readonly supernodeIds: Set<string>

  constructor (init: DownloadInit, components: DownloadComponents) {
    this.key = init.key
    this.init = init
    this.components = components
    if (init.expected != null) this.expectedContent = init.expected
    this.supernodeIds = new Set(init.supernodes.map(peerIdIn).filter(id => id != null))
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    this.done = promise
    this.resolveDone = resolve
    this.rejectDone = reject
    this.done.catch(() => {})
    this.layoutReady.promise.catch(() => {})
  }

  /** Resolves with the layout once size and piece size are known. */
  async ready (signal?: AbortSignal): Promise<DownloadLayout> {
    if (signal == null) return await this.layoutReady.promise
    return await raceSignal(this.layoutReady.promise, signal)
  }

  /** Tells whether piece `index` is stored locally. */
  hasPiece (index: number): boolean {
    return this.local[index] === true
  }

  /** Returns the CID of a stored piece. */
  cidOf (index: number): CID | undefined {
    return this.local[index] === true ? this.cids[index] : undefined
  }

  /** Peers (supernode included) with requests in flight. */
  activeSources (): number {
    let active = 0
    for (const source of this.sources.values()) if (source.inflight.size > 0) active++
    return active + (this.originInflight.size > 0 || this.originReading ? 1 : 0)
  }

  /** Peers other than supernodes that hold pieces and are not dropped. */
  private peerHolders (): number {
    let holders = 0
    for (const source of this.sources.values()) if (!source.supernode && !source.banned && source.has.size > 0) holders++
    return holders
  }

  /** Bytes verified so far. */
  received (): number {
    return this.stats.fromLocal + this.stats.fromOrigin + this.stats.fromPeers + this.stats.fromSupernode
  }

  /** Waits until piece `index` is stored; rejects when the download fails. */
  async waitPiece (index: number, signal?: AbortSignal): Promise<void> {
    if (this.local[index] === true) return
    if (this.failure != null) throw this.failure
    const { promise, resolve } = Promise.withResolvers<void>()
    const list = this.waiters.get(index) ?? []
    list.push(resolve)
    this.waiters.set(index, list)
    this.cursor = this.cursor < 0 ? index : Math.min(this.cursor, index)
    this.schedule()
    const settled = Promise.race([promise, this.done])
    await (signal != null ? raceSignal(settled, signal) : settled)
    if (!this.hasPiece(index)) throw this.failure ?? new NoSourceError(`piece ${index} of ${this.key.toString()} was not downloaded`)
  }

  /**
   * Waits until the piece CIDs are proven: at once when they came from a supernode or from the
   * record of a content this host verified, else once the whole content matched its hash.
   * Rejects when the download fails first.
   */
  async verified (signal?: AbortSignal): Promise<void> {
    if (!this.cidsUnproven) return
    await (signal != null ? raceSignal(this.done, signal) : this.done)
  }

  /**
   * Registers a listener called for every piece stored from now on, with its bytes when they
   * are at hand. The bytes are valid only during the call: the download may free them after
   * it, so a listener that needs them later keeps a copy. Returns the function that removes it.
   */
  onPiece (listener: (index: number, bytes?: Uint8Array) => void): () => void {
    this.pieceListeners.add(listener)
    return () => { this.pieceListeners.delete(listener) }
  }

  /**
   * Tells the download that a reader will stream the content from its start. The first requests,
   * which go out as soon as the piece CIDs are known, then ask for the first pieces in order.
   */
  expectReader (): void {
    if (this.cursor < 0) this.setCursor(0)
  }

  /** Moves the streaming reader's position, so nearby pieces are fetched first. */
  setCursor (index: number): void {
    this.cursor = index
    this.schedule()
  }

  /** Starts the download in the background. */
  start (): void {
    void this.run()
  }

  /** Stops all transfers and fails waiters. */
  abort (err: Error): void {
    this.fail(err)
  }

  private async run (): Promise<void> {
    const { discovery, logger } = this.components
    try {
      // Pieces already on disk from an earlier run count as local; with all of them, only the content check is left.
      await this.loadLocal()
      if (this.layout != null && this.localCount === this.layout.count) {
        await this.done
        return
      }

      // Holders announce pieces by gossip; the DHT finds those that joined earlier.
      this.unwatch = discovery.watch(this.key, (peer, indexes) => { this.onHave(peer, indexes) })
      // A request of another download that ends may free a slot this one waits for.
      this.unslot = this.components.slots?.onRelease(() => { this.schedule() })
      void this.lookupProviders()
      let lookupTicks = 0
      this.timers.push(setInterval(() => {
        // Gossip reports holders as they get pieces. With enough of them, the DHT is queried rarely.
        if (++lookupTicks % SPARSE_LOOKUP_EVERY === 0 || this.peerHolders() < ENOUGH_HOLDERS) void this.lookupProviders()
      }, PROVIDER_LOOKUP_MS))
      this.timers.push(setInterval(() => { this.poll() }, POLL_MS / 3))
      for (const timer of this.timers) timer.unref()

      // The supernode streams piece CIDs as it verifies them; its loss leaves the swarm and the origin.
      await this.followSupernodes()
      this.seedLost = true
      this.schedule()

      // No supernode seeded and no holder showed up: fetch it from the origin and seed it ourselves.
      if (this.layout == null) await this.withoutLayout()
      await this.done
    } catch (err) {
      this.fail(err as Error)
      logger.debug({ err, key: this.key.toString() }, 'download failed')
    }
  }

  /**
   * Finds a complete content stored under another key (a URL key) whose digest is this download's
   * key, and records it under this key too: a fetch by digest then reads what a fetch by URL stored.
   */
  private async recordByContent (): Promise<ContentRecord | undefined> {
    if (!isContentCid(this.key)) return undefined
    const { records } = this.components
    const stored = records.completeWithContent(this.key)[0]
    if (stored == null) return undefined
    await records.set({ ...stored, key: this.key, updatedAt: Date.now() })
    return records.get(this.key)
  }

  private async loadLocal (): Promise<void> {
    const { records, store } = this.components
    const record = records.get(this.key) ?? await this.recordByContent()
    if (record == null) return
    const manifest = records.manifestOf(this.key)
    if (manifest != null) this.expectedContent ??= manifest.content
    // A record without a content CID comes from a download that did not finish, whose CIDs may have come from a peer.
    if (record.content == null) this.cidsUnproven = true
    this.setLayout({ size: record.size, pieceSize: record.pieceSize, count: pieceCount(record.size, record.pieceSize) })
    const inStore = record.pieces.map(cid => cid != null && store.has(cid))
    record.pieces.forEach((cid, index) => {
      if (cid == null) return
      if (manifest != null || record.content != null) this.cids[index] = cid
      if (inStore[index] === true) {
        this.cids[index] = cid
        this.unchecked.add(index)
        this.markLocal(index, undefined, 'local')
      }
    })
    // Piece CIDs of an incomplete record came from a supernode earlier; they are trusted again.
    record.pieces.forEach((cid, index) => { if (cid != null) this.cids[index] = cid })

    // The output of an earlier fetch contains the other pieces while it is unchanged. Each counts once
    // its bytes match, so a file changed since is fetched again where it differs.
    const fileSize = manifest != null && record.file != null ? await regularFileSize(record.file) : undefined
    if (record.file != null && fileSize !== record.size) {
      this.components.logger.info({ key: this.key.toString(), file: record.file, size: fileSize ?? null, expected: record.size }, 'earlier output is missing or has another size; only pieces inside it are checked')
    }
    if (manifest != null && record.file != null && fileSize != null) {
      for (const [index, cid] of record.pieces.entries()) {
        if (cid == null || inStore[index] === true || this.local[index] === true || this.failure != null) continue
        const offset = pieceOffset(index, record.pieceSize)
        const length = pieceLength(index, record.size, record.pieceSize)
        if (offset + length > fileSize) continue
        store.adoptRange(cid, { path: record.file, offset, length })
        const bytes = await store.get(cid).catch(() => undefined)
        if (bytes != null && !this.hasPiece(index)) this.markLocal(index, bytes, 'local')
      }
    }
    this.checkFinished()
  }

  private async followSupernodes (): Promise<void> {
    const ranked = rankSupernodes(this.key, this.init.supernodes)
    for (const [rank, address] of ranked.entries()) {
      const hasNext = rank + 1 < ranked.length
      // A lost seed stream is retried on the same supernode, which still runs the task, before the next one.
      for (let attempt = 0; attempt <= SEED_RETRIES; attempt++) {
        if (this.finished || this.failure != null) return
        if (attempt > 0) await sleep(1000 * attempt, this.controller.signal)
        const outcome = await this.followSupernode(address, attempt, hasNext)
        if (outcome === 'done') return
        if (outcome === 'unreachable') break
      }
    }
  }

  /**
   * Follows one seed stream and returns how it ended, or throws the supernode's error. `hasNext`
   * is true when another supernode follows this one, which the log lines then mention.
   */
  private async followSupernode (address: string, attempt: number, hasNext: boolean): Promise<'done' | 'lost' | 'unreachable'> {
    const { node, logger } = this.components
    let session
    for (let dial = 0; session == null; dial++) {
      try {
        session = await openSeed(node, address, {
          url: this.init.url,
          headers: this.init.headers,
          ...(this.init.digest != null ? { digest: this.init.digest } : {}),
          filter: this.init.filter
        }, this.controller.signal)
      } catch (err) {
        const delay = (this.init.seedDialDelaysMs ?? SEED_DIAL_DELAYS_MS)[dial]
        if (delay != null && !this.controller.signal.aborted) {
          logger.debug({ supernode: address, attempt, dial, err: (err as Error).message }, 'supernode dial failed, dialling again')
          await sleep(delay, this.controller.signal)
          continue
        }
        const reason = dialFailureReason(err as Error)
        logger.warn({ supernode: address, attempt, dials: dial + 1, err: reason }, hasNext ? 'cannot connect to the supernode, trying the next' : 'cannot connect to the supernode, and no other supernode is configured')
        if (attempt === 0) this.unreachable.push(`${address}: ${reason}`)
        return 'unreachable'
      }
    }

    this.trusted.add(session.peer.toString())
    const source = this.sourceFor(session.peer, true)
    try {
      for await (const event of session.events) {
        if (event.t === 'error') throw errorFromSeedEvent(event)
        if (event.t === 'meta') {
          if (!sameCid(event.key, this.key)) throw new ProtocolError(`supernode seeds ${event.key.toString()}, expected ${this.key.toString()}`)
          this.setLayout({ size: event.size, pieceSize: event.pieceSize, count: pieceCount(event.size, event.pieceSize), ...(event.contentType != null ? { contentType: event.contentType } : {}) })
        } else if (event.t === 'pieces') {
          this.addTrustedCids(event.from, event.cids, source)
        } else if (event.t === 'done') {
          if (this.expectedContent != null && !sameCid(this.expectedContent, event.content)) {
            throw new VerificationError(`supernode reports content ${event.content.toString()}, expected ${this.expectedContent.toString()}`)
          }
          this.expectedContent = event.content
          this.schedule()
        }
      }
      // The seed stream ended after 'done': the supernode stays a holder.
      return 'done'
    } catch (err) {
      if (err instanceof OriginNotAllowedError) {
        logger.warn({ supernode: address, err: err.message }, hasNext ? 'supernode may not fetch from this origin, trying the next' : 'supernode may not fetch from this origin, and no other supernode is configured')
        this.refused.push(address)
        return 'unreachable'
      }
      if (err instanceof DfnodeError && !(err instanceof ProtocolError)) throw err
      if (this.finished || this.failure != null) return 'done'
      logger.warn({ supernode: address, key: this.key.toString(), attempt, err: (err as Error).message }, hasNext ? 'lost the supernode; continuing with peers, retrying it, then the next supernode' : 'lost the supernode; continuing with peers and retrying it')
      source.has.clear()
      this.schedule()
      return 'lost'
    }
  }

  /** Finds a holder with a complete manifest, or falls back to the origin. */
  private async withoutLayout (): Promise<void> {
    const deadline = Date.now() + (this.init.holderWaitMs ?? 3000)
    while (this.layout == null && Date.now() < deadline && this.failure == null) {
      // A node without any connection can neither ask a peer nor be found by one, so no holder can turn up.
      if (this.components.node.getConnections().length === 0) break
      void this.lookupProviders(1000)
      await sleep(250, this.controller.signal)
      this.poll()
    }
    if (this.layout != null || this.failure != null) return
    if (!this.init.backSource) {
      const url = stripQuery(this.init.url)
      let reason = 'check that a supernode runs at the configured address, or drop --no-back-source'
      if (this.refused.length > 0) {
        const notAllowed = this.refused.length === 1 ? `supernode ${this.refused[0]!} may not fetch from this origin: start it` : `supernodes ${this.refused.join(', ')} may not fetch from this origin: start them`
        reason = `${notAllowed} with --allow-origin ${new URL(this.init.url).host}, or drop --no-back-source`
      } else if (this.unreachable.length > 0) {
        reason = `no supernode answered. ${this.unreachable.join('; ')}. Correct the supernode address, or drop --no-back-source to fetch from the origin`
      } else if (this.init.supernodes.length === 0) {
        reason = 'no supernode is configured: pass --supernode MULTIADDR, or drop --no-back-source'
      }
      throw new NoSourceError(`no supernode or peer has ${url} and back-to-source is off; ${reason}`)
    }
    await this.backSourceAll()
  }

  private async backSourceAll (): Promise<void> {
    const { origin, logger } = this.components
    this.fullBackSource = true
    logger.info({ key: this.key.toString(), url: stripQuery(this.init.url) }, 'back-to-source: fetching the whole content from the origin')
    const response = await origin.open({ url: this.init.url, headers: this.init.headers, signal: this.controller.signal })
    if (response.size == null) throw new OriginUnreachableError(`origin sent no Content-Length for ${stripQuery(this.init.url)}`)
    const pieceSize = choosePieceSize(response.size, this.init.pieceSize)
    this.setLayout({ size: response.size, pieceSize, count: pieceCount(response.size, pieceSize), ...(response.contentType != null ? { contentType: response.contentType } : {}) })

    const pieces = cutPieces(response.body, pieceSize)
    let next = await pieces.next()
    while (next.done !== true) {
      const piece = next.value
      ownPiece(piece.bytes)
      if (this.local[piece.index] !== true) {
        this.cids[piece.index] = piece.cid
        await this.accept(piece.index, piece.bytes, 'origin')
      }
      releasePiece(piece.bytes)
      next = await pieces.next()
    }
    if (next.value.size !== response.size) throw new OriginUnreachableError(`origin sent ${next.value.size} bytes, expected ${response.size}`)
  }

  private setLayout (layout: DownloadLayout): void {
    if (this.layout != null) {
      if (!sameLayout(this.layout, layout)) {
        throw new ProtocolError(`conflicting layouts for ${stripQuery(this.init.url)}: size ${this.layout.size} in pieces of ${this.layout.pieceSize} bytes, and size ${layout.size} in pieces of ${layout.pieceSize} bytes; hosts that cut a content differently cannot exchange its pieces, so set the same pieceSize on every host, or on none`)
      }
      return
    }
    this.layout = layout
    this.cids = new Array<CID | undefined>(layout.count).fill(undefined)
    this.local = new Array<boolean>(layout.count).fill(false)
    this.inflightCount = new Array<number>(layout.count).fill(0)
    // A content of one piece is hashed as that piece, and a content of none needs no hash.
    if (layout.count > 1) this.hash = this.components.hasher.open()
    this.layoutReady.resolve(layout)
    this.checkFinished()
    this.schedule()
  }

  private addTrustedCids (from: number, cids: CID[], source?: Source): void {
    if (this.layout == null) throw new ProtocolError('supernode sent piece CIDs before the content size')
    if (from + cids.length > this.layout.count) throw new ProtocolError(`supernode sent CIDs beyond piece ${this.layout.count - 1}`)
    cids.forEach((cid, offset) => {
      const index = from + offset
      const known = this.cids[index]
      if (known != null && !sameCid(known, cid) && this.local[index] === true) {
        throw new VerificationError(`supernode piece ${index} is ${cid.toString()}, but ${known.toString()} is stored`)
      }
      this.cids[index] = cid
      source?.has.add(index)
    })
    this.saveRecord()
    this.schedule()
  }

  /** Adopts a complete manifest from any holder when its content CID is the key, which the end check enforces. */
  private adoptManifest (manifest: Manifest, from: Source): void {
    if (!sameCid(manifest.key, this.key)) return
    const trusted = this.trusted.has(from.id) || (this.expectedContent != null && manifest.content.equals(this.expectedContent))
    if (!trusted) return
    if (!this.trusted.has(from.id)) this.cidsUnproven = true
    this.setLayout({ size: manifest.size, pieceSize: manifest.pieceSize, count: manifest.pieces.length })
    this.expectedContent ??= manifest.content
    manifest.pieces.forEach((cid, index) => { this.cids[index] ??= cid })
    this.schedule()
  }

  private sourceFor (peer: PeerId, supernode: boolean): Source {
    const id = peer.toString()
    const isSupernode = supernode || this.supernodeIds.has(id)
    let source = this.sources.get(id)
    if (source == null) {
      source = new Source(peer, isSupernode)
      this.sources.set(id, source)
    } else if (isSupernode) {
      source.supernode = true
    }
    return source
  }

  private onHave (peer: PeerId, indexes: number[]): void {
    if (peer.equals(this.components.node.peerId)) return
    const source = this.sourceFor(peer, this.trusted.has(peer.toString()))
    this.components.logger.trace({ peer: source.id, pieces: indexes.length }, 'have received')
    for (const index of indexes) if (this.layout == null || index < this.layout.count) source.has.add(index)
    this.schedule()
  }

  private async lookupProviders (timeoutMs = PROVIDER_LOOKUP_MS): Promise<void> {
    if (this.finished || this.failure != null || this.lookingUp) return
    this.lookingUp = true
    try {
      await this.collectProviders(AbortSignal.any([this.controller.signal, AbortSignal.timeout(timeoutMs)]))
    } finally {
      this.lookingUp = false
    }
  }

  private async collectProviders (signal: AbortSignal): Promise<void> {
    for await (const provider of this.components.discovery.findProviders(this.key, signal)) {
      if (provider.multiaddrs.length > 0) {
        await this.components.node.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs }).catch(() => {})
      }
      const source = this.sourceFor(provider.id, this.trusted.has(provider.id.toString()))
      this.components.logger.debug({ peer: source.id, key: this.key.toString() }, 'provider found')

      // Ask a new holder for its bitfield at once rather than at the next poll.
      if (!source.supernode && source.usable(Date.now()) && Date.now() - source.polledAt >= POLL_MS) {
        source.polledAt = Date.now()
        void this.refreshBitfield(source)
      }
      this.schedule()
    }
  }

  /** Asks holders with nothing to offer for their bitfield again. */
  private poll (): void {
    if (this.finished || this.failure != null) return
    const now = Date.now()
    for (const source of this.sources.values()) {
      if (!source.usable(now) || source.supernode || source.inflight.size > 0 || now - source.polledAt < POLL_MS) continue
      source.polledAt = now
      void this.refreshBitfield(source)
    }
  }

  private async refreshBitfield (source: Source): Promise<void> {
    const client = await this.clientFor(source)
    if (client == null) return
    try {
      const response = await client.have(this.key)
      if (response.manifest != null) {
        try {
          this.adoptManifest(decodeManifest(response.manifest), source)
        } catch (err) {
          this.components.logger.debug({ peer: source.id, err: (err as Error).message }, 'ignored an invalid manifest')
        }
      }
      // A holder that cut the content in pieces of another size numbers other pieces.
      // NOTE: gossip HAVEs carry no layout, so a holder that gossip announces is still asked for
      // pieces. Its answers then fail verification until the download drops it (not tested).
      const layout = this.layout
      const { size, pieceSize } = response
      if (layout != null && size != null && pieceSize != null && !sameLayout(layout, { size, pieceSize, count: pieceCount(size, pieceSize) })) {
        this.components.logger.debug({ peer: source.id, size, pieceSize }, 'ignored the bitfield of a holder with another piece size')
      } else if (response.bits != null && layout != null) {
        for (let index = 0; index < layout.count; index++) if (bitIsSet(response.bits, index)) source.has.add(index)
      }
      this.schedule()
    } catch (err) {
      this.dropClient(source, err as Error)
    }
  }

  /**
   * Returns the client that piece requests to `source` go to: the direct link to it when one
   * is open, else a piece stream on the libp2p connection, opened on first use. A stream that
   * a direct link replaces closes once it has served its requests.
   */
  private async clientFor (source: Source): Promise<PieceClient | undefined> {
    const link = this.components.links?.get(source.peer)
    if (link != null) {
      if (source.client !== link) {
        if (source.client != null && !this.components.links!.owns(source.client)) {
          source.draining = source.client
          source.client.closeWhenIdle()
        }
        source.client = link
        if (!source.linked) this.directLinks++
        source.linked = true
      }
      return link
    }
    if (source.client != null && !source.client.closed) return source.client
    source.connecting ??= (async () => {
      // The dial deadline must not outlive the dial: libp2p keeps the signal on the stream it opens.
      const deadline = new AbortController()
      const timer = setTimeout(() => { deadline.abort(new TimeoutError(`dialling ${source.id} timed out`)) }, DIAL_TIMEOUT_MS)
      try {
        const signal = AbortSignal.any([this.controller.signal, deadline.signal])
        const connection = await this.components.node.dial(source.peer, { signal })
        const stream = await connection.newStream(PIECE_PROTOCOL, { signal })
        source.client = new PieceClient(new FramedStream(stream), { stallMs: this.init.stallMs ?? 10_000 })
        this.components.links?.request(source.peer)
        source.failures = 0
        return source.client
      } catch (err) {
        this.dropClient(source, err as Error)
        return undefined
      } finally {
        clearTimeout(timer)
        source.connecting = undefined
      }
    })()
    return await source.connecting
  }

  /** Ends the piece stream of `source` after it failed. A failure of a stream that a direct link replaced ends that stream only. */
  private dropClient (source: Source, err: Error, client?: PieceClient): void {
    if (client != null && client !== source.client) {
      client.abort(err)
      return
    }
    source.client?.abort(err)
    source.client = undefined
    source.failures++
    source.retryAt = Date.now() + Math.min(30_000, 500 * 2 ** source.failures)
    if (source.failures > 5 && !source.supernode) source.banned = true
    this.components.logger.debug({ peer: source.id, key: this.key.toString(), err: err.message, failures: source.failures }, 'piece stream failed')
    this.schedule()
  }

  /** Coalesces scheduling requests into one pass per tick. */
  private schedule (): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      try {
        this.schedulePass()
      } catch (err) {
        this.fail(err as Error)
      }
    })
  }

  private schedulePass (): void {
    if (this.layout == null || this.finished || this.failure != null || this.fullBackSource) return
    const now = Date.now()
    // A piece being written is not requested again, also not in the end game.
    const local = (index: number): boolean => this.local[index] === true || this.writing.has(index)
    const state = {
      count: this.layout.count,
      known: (index: number) => this.cids[index] != null,
      local,
      inflight: (index: number) => this.inflightCount[index] ?? 0,
      sources: [...this.sources.values()].filter(source => source.usable(now)),
      cursor: this.cursor,
      frontier: this.hashed,
      endgame: endgameReached(this.layout.count - this.localCount - this.writing.size, this.requested, local),
      overdue: (index: number) => this.overdueAt(index) <= now
    }

    // Fill each holder's request window.
    for (const source of state.sources) {
      const limit = source.supernode ? (this.init.supernodeRequests ?? 2) : (this.init.peerRequests ?? 2)
      while (source.inflight.size < limit) {
        const index = pickPiece(source, state)
        if (index == null) break
        if (this.components.slots?.take(source.id) === false) break
        this.request(source, index)
      }
    }

    // The requests above may have started the end game.
    if (endgameReached(this.layout.count - this.localCount - this.writing.size, this.requested, local)) this.wakeWhenOverdue(now, local)

    // Once no supernode is left, pieces that no holder offers come from the origin.
    if (this.seedLost && this.init.backSource && !this.originInOrder) {
      for (let index = 0; index < this.layout.count && this.originInflight.size < ORIGIN_REQUESTS; index++) {
        if (this.local[index] === true || this.originInflight.has(index) || (this.inflightCount[index] ?? 0) > 0) continue
        if (!this.offered(index, now)) this.requestOrigin(index)
      }
    } else if (this.seedLost && !this.init.backSource && this.activeSources() === 0 && !state.sources.some(source => source.has.size > 0)) {
      this.fail(new NoSourceError(`no supernode or peer can supply the rest of ${stripQuery(this.init.url)} and back-to-source is off`))
    }
  }

  /** Returns the time from which the end game may request piece `index` again, in ms since the epoch. */
  private overdueAt (index: number): number {
    let at = 0
    for (const flight of this.flights.get(index) ?? []) at = Math.max(at, flight.at + this.endgameWaitMs(index, flight))
    return at
  }

  /** Time the end game waits for a request of piece `index` before it requests the piece again, in ms. */
  private endgameWaitMs (index: number, flight: Flight): number {
    if (pieceLength(index, this.layout!.size, this.layout!.pieceSize) <= ENDGAME_SMALL_PIECE_BYTES) return 0
    if (this.pieceMs == null) return ENDGAME_FIRST_WAIT_MS
    // A slow holder lengthens the average, so the wait is capped below the stall limit.
    const perPiece = Math.max(ENDGAME_MIN_WAIT_MS, ENDGAME_OVERDUE_FACTOR * this.pieceMs)
    return Math.min((this.init.stallMs ?? 10_000) / 2, perPiece * flight.queue)
  }

  /**
   * Schedules a pass for when the next piece in flight becomes overdue. Pieces already overdue
   * that no holder took are looked at again after OVERDUE_RECHECK_MS, unless a request ends first.
   */
  private wakeWhenOverdue (now: number, local: (index: number) => boolean): void {
    let next = Infinity
    for (const index of this.flights.keys()) {
      if (local(index) || (this.inflightCount[index] ?? 0) >= ENDGAME_DUPLICATES) continue
      const at = this.overdueAt(index)
      next = Math.min(next, at > now ? at : now + OVERDUE_RECHECK_MS)
    }
    clearTimeout(this.endgameTimer)
    this.endgameTimer = undefined
    if (next === Infinity) return
    this.endgameTimer = setTimeout(() => {
      this.endgameTimer = undefined
      this.schedule()
    }, next - now)
    this.endgameTimer.unref()
  }

  /**
   * Tells whether a holder can supply a piece soon: a usable one, or one in back-off after few
   * failures, which gets more chances before the origin is requested. A supernode that finished
   * seeding has every piece. When it is slow (a stalled request on a busy host), waiting for it
   * keeps the origin's bytes at one copy, so it gets more chances than a peer.
   */
  private offered (index: number, now: number): boolean {
    if (this.cids[index] == null) return false
    for (const source of this.sources.values()) {
      if (!source.has.has(index) || source.banned) continue
      if (source.usable(now) || source.failures < (source.supernode ? SUPERNODE_CHANCES : PEER_CHANCES)) return true
    }
    return false
  }

  private request (source: Source, index: number): void {
    this.components.logger.trace({ peer: source.id, supernode: source.supernode, key: this.key.toString(), index }, 'piece requested')
    source.inflight.add(index)
    this.inflightCount[index] = (this.inflightCount[index] ?? 0) + 1
    this.requested.add(index)
    const flight: Flight = { at: Date.now(), queue: 1 }
    const flights = this.flights.get(index) ?? []
    flights.push(flight)
    this.flights.set(index, flights)
    let received = 0
    let client: PieceClient | undefined
    let windowFreed = false
    const freeWindow = (): void => {
      if (windowFreed) return
      windowFreed = true
      this.components.slots?.release(source.id)
      source.inflight.delete(index)
    }
    void (async () => {
      try {
        client = await this.clientFor(source)
        if (client == null) return
        flight.queue = client.inflight + 1
        const sentAt = Date.now()
        const result = await client.get(this.key, index, count => { received += count })
        if (result === 'missing') {
          source.has.delete(index)
          return
        }
        if (result === 'busy') {
          this.components.logger.trace({ peer: source.id, key: this.key.toString(), index }, 'piece busy')
          source.deferred.set(index, Date.now() + BUSY_RETRY_MS)
          setTimeout(() => { this.schedule() }, BUSY_RETRY_MS).unref()
          return
        }
        if (result === 'cancelled') {
          this.cancelledBytes += received
          return
        }
        const bytes = result.bytes
        ownPiece(bytes)
        try {
          if (this.local[index] === true || this.writing.has(index)) {
            this.duplicateBytes += bytes.byteLength
            return
          }
          const expected = this.cids[index]
          const actual = result.cid
          if (expected == null || !sameCid(actual, expected)) {
            this.ban(source, `piece ${index} hashes to ${actual.toString()}, expected ${String(expected)}`)
            return
          }
          source.bytes += bytes.byteLength
          const ms = (Date.now() - sentAt) / flight.queue
          this.pieceMs = this.pieceMs == null ? ms : this.pieceMs + PIECE_TIME_WEIGHT * (ms - this.pieceMs)

          // The holder's window takes the next request while this piece is written. The piece
          // stays counted in flight until it is stored, so no other holder is asked for it.
          if (this.writing.size < MAX_WRITING) {
            freeWindow()
            this.schedule()
          }
          await this.accept(index, bytes, source.supernode ? 'supernode' : 'peer')
          this.components.logger.trace({ peer: source.id, supernode: source.supernode, key: this.key.toString(), index }, 'piece received')
        } finally {
          releasePiece(bytes)
        }
      } catch (err) {
        this.abortedBytes += received
        if (this.failure == null && !this.finished) {
          if (err instanceof StorageError) this.fail(err)
          else this.dropClient(source, err as Error, client)
        }
      } finally {
        freeWindow()
        this.inflightCount[index] = Math.max(0, (this.inflightCount[index] ?? 1) - 1)
        if (this.inflightCount[index] === 0) this.requested.delete(index)
        const left = (this.flights.get(index) ?? []).filter(other => other !== flight)
        if (left.length > 0) this.flights.set(index, left)
        else this.flights.delete(index)
        this.schedule()
      }
    })()
  }

  private ban (source: Source, reason: string): void {
    source.banned = true
    source.client?.abort(new VerificationError(reason))
    source.client = undefined
    this.components.logger.warn({ peer: source.id, key: this.key.toString(), reason }, 'dropped a peer that sent bytes failing verification')
  }

  private requestOrigin (index: number): void {
    const layout = this.layout!
    this.originInflight.add(index)
    void (async () => {
      try {
        const start = pieceOffset(index, layout.pieceSize)
        const length = pieceLength(index, layout.size, layout.pieceSize)
        const request = new AbortController()
        const response = await this.components.origin.open({ url: this.init.url, headers: this.init.headers, range: { start, end: start + length }, signal: AbortSignal.any([this.controller.signal, request.signal]) })
        if (response.rangeIgnored === true) {
          // The body would carry the content from its start up to this piece, for every piece requested.
          request.abort(new Error('the origin ignores Range'))
          this.readOriginInOrder()
          return
        }
        const bytes = new Uint8Array(length)
        ownPiece(bytes)
        let filled = 0
        for await (const chunk of response.body) {
          if (filled + chunk.byteLength > length) throw new OriginUnreachableError(`origin sent more than ${length} bytes for piece ${index}`)
          bytes.set(chunk, filled)
          filled += chunk.byteLength
        }
        if (filled !== length) throw new OriginUnreachableError(`origin sent ${filled} of ${length} bytes for piece ${index}`)
        if (this.local[index] === true) return
        const actual = await cidOfBytes(bytes)
        const expected = this.cids[index]
        if (expected != null && !sameCid(expected, actual)) {
          throw new VerificationError(`origin bytes of piece ${index} of ${stripQuery(this.init.url)} hash to ${actual.toString()}, expected ${expected.toString()}: the content changed at the origin`)
        }
        this.cids[index] = actual
        try {
          await this.accept(index, bytes, 'origin')
        } finally {
          releasePiece(bytes)
        }
      } catch (err) {
        if (this.failure == null && !this.finished) this.fail(err as Error)
      } finally {
        this.originInflight.delete(index)
        this.schedule()
      }
    })()
  }

  /**
   * Reads the whole content from the origin once, in order, and stores each piece that no holder
   * delivered first. Per-piece requests stop, since an origin that ignores Range would send the
   * content from its start for each of them.
   */
  private readOriginInOrder (): void {
    if (this.originInOrder) return
    this.originInOrder = true
    this.originReading = true
    const layout = this.layout!
    const url = stripQuery(this.init.url)
    this.components.logger.info({ key: this.key.toString(), url }, 'origin ignores Range: reading the rest of the content in one pass')
    void (async () => {
      try {
        const response = await this.components.origin.open({ url: this.init.url, headers: this.init.headers, signal: this.controller.signal })
        if (response.size == null) throw new OriginUnreachableError(`origin sent no Content-Length for ${url}`)
        if (response.size !== layout.size) throw new OriginUnreachableError(`origin states a size of ${response.size} bytes for ${url}, expected ${layout.size}: the content changed at the origin`)
        for await (const piece of cutPieces(response.body, layout.pieceSize)) {
          ownPiece(piece.bytes)
          try {
            if (this.local[piece.index] !== true && !this.writing.has(piece.index)) {
              const expected = this.cids[piece.index]
              if (expected != null && !sameCid(expected, piece.cid)) {
                throw new VerificationError(`origin bytes of piece ${piece.index} of ${url} hash to ${piece.cid.toString()}, expected ${expected.toString()}: the content changed at the origin`)
              }
              this.cids[piece.index] = piece.cid
              await this.accept(piece.index, piece.bytes, 'origin')
            }
          } finally {
            releasePiece(piece.bytes)
          }
          if (this.finished || this.failure != null || !this.missingAfter(piece.index)) break
        }
      } catch (err) {
        if (this.failure == null && !this.finished) this.fail(err as Error)
      } finally {
        // The pass stored or saw being written every piece, so no per-piece request follows it.
        this.originReading = false
        this.schedule()
      }
    })()
  }

  /** Tells whether a piece after `index` is neither stored nor being written. */
  private missingAfter (index: number): boolean {
    for (let next = index + 1; next < this.layout!.count; next++) {
      if (this.local[next] !== true && !this.writing.has(next)) return true
    }
    return false
  }

  /** Stores a verified piece, announces it and wakes readers. */
  private async accept (index: number, bytes: Uint8Array, from: PieceFrom): Promise<void> {
    const cid = this.cids[index]!
    const sink = this.init.sink
    if (this.local[index] === true || this.writing.has(index)) return

    // A copy the store already had was not written here: the content hash checks it against its CID.
    if (this.components.store.has(cid)) this.unchecked.add(index)
    this.writing.add(index)
    try {
      if (sink != null) {
        const offset = pieceOffset(index, this.layout!.pieceSize)
        await sink.write(index, bytes, offset)
        this.components.store.putRange(cid, { path: sink.path, offset, length: bytes.byteLength })
      } else {
        await this.components.store.put(cid, bytes, { hashed: true })
      }
    } catch (err) {
      // A full disk is this host's problem: the holder that sent the piece is not to blame.
      if (err instanceof StorageError) throw err
      throw new StorageError(`storing piece ${index} of ${stripQuery(this.init.url)} failed (${(err as Error).message}): free disk space in ${sink != null ? 'the output folder' : 'the data dir'}, then run again`, { cause: err })
    } finally {
      this.writing.delete(index)
    }
    // Another source may have stored the piece during the write (loadLocal, back-to-source).
    if (this.hasPiece(index)) return
    this.markLocal(index, bytes, from)
    this.components.discovery.announce(this.key, [index])
    if (this.localCount === 1) this.components.discovery.provide(this.key)
    this.saveRecord()
    this.checkFinished()
  }

  private markLocal (index: number, bytes: Uint8Array | undefined, from: PieceFrom): void {
    const layout = this.layout!
    this.local[index] = true
    this.localCount++
    this.unpins.push(this.components.store.pin(this.cids[index]!))
    const length = pieceLength(index, layout.size, layout.pieceSize)
    if (from === 'supernode') this.stats.fromSupernode += length
    else if (from === 'peer') this.stats.fromPeers += length
    else if (from === 'origin') this.stats.fromOrigin += length
    else this.stats.fromLocal += length
    // End-game copies of this piece still in flight are withdrawn.
    for (const source of this.sources.values()) {
      if (!source.inflight.has(index)) continue
      if (source.client?.cancel(this.key, index) === true || source.draining?.cancel(this.key, index) === true) this.cancelled++
    }
    for (const wake of this.waiters.get(index) ?? []) wake()
    this.waiters.delete(index)
    for (const listener of this.pieceListeners) listener(index, bytes)
    this.advanceHash()
  }

  /** Adds the new contiguous prefix of stored pieces to the content hash, from where they are on disk. */
  private advanceHash (): void {
    const layout = this.layout
    if (layout == null || this.failure != null || this.finished) return
    try {
      while (this.hashed < layout.count && this.local[this.hashed] === true) {
        if (this.hash != null) {
          const index = this.hashed
          const cid = this.cids[index]
          const range = cid != null ? this.components.store.locate(cid) : undefined
          if (cid == null || range == null) throw new VerificationError(`stored piece ${index} of ${this.key.toString()} is missing from the store`)
          this.hash.add(range, this.unchecked.has(index) ? { index, sha256: cid.multihash.digest } : undefined)
        }
        this.hashed++
      }
    } catch (err) {
      this.fail(err as Error)
    }
  }

  private checkFinished (): void {
    const layout = this.layout
    if (layout == null || this.finished || this.failure != null) return
    if (this.localCount < layout.count || this.hashed < layout.count || this.digesting) return
    this.digesting = true

    // A content of one piece is that piece. Its bytes matched its CID when stored here, and
    // otherwise a read through the store checks them (and deletes a file that fails).
    const only = layout.count === 1 ? this.cids[0] : undefined
    if (layout.count === 0) {
      this.finish(EMPTY_CONTENT_CID)
      return
    }
    if (only != null && !this.unchecked.has(0)) {
      this.finish(cidOfSha256(only.multihash.digest))
      return
    }
    if (only != null) {
      this.components.store.get(only).then(bytes => {
        if (bytes == null) throw new VerificationError(`stored piece 0 of ${this.key.toString()} is missing or does not match its CID`)
        this.finish(cidOfSha256(only.multihash.digest))
      }).catch((err: Error) => { this.fail(err) })
      return
    }
    const hash = this.hash
    if (hash == null) {
      this.fail(new VerificationError(`content hash of ${this.key.toString()} was never started`))
      return
    }
    hash.digest().then(digest => { this.finish(cidOfSha256(digest)) }, (err: Error) => {
      this.components.logger.warn({ key: this.key.toString(), err: err.message }, 'content hash failed')
      if (err instanceof VerificationError) {
        void this.dropCorruptPieces()
        this.fail(err)
      } else {
        this.fail(new Error(`content hash of ${this.key.toString()} failed: ${err.message}`, { cause: err }))
      }
    })
  }

  /** Reads each piece that the content hash checked through the store, which deletes a file that fails verification. */
  private async dropCorruptPieces (): Promise<void> {
    for (const index of this.unchecked) {
      const cid = this.cids[index]
      if (cid == null) continue
      await this.components.store.get(cid, { recheck: true }).catch((err: Error) => {
        this.components.logger.debug({ cid: cid.toString(), err: err.message }, 'stored piece not read back after a failed content hash')
      })
    }
  }

  /** Ends the download once the content hash is known: checks it, records it and announces the content. */
  private finish (content: CID): void {
    const layout = this.layout
    if (layout == null || this.finished || this.failure != null) return
    if (this.expectedContent != null && !sameCid(this.expectedContent, content)) {
      this.fail(new VerificationError(`content of ${stripQuery(this.init.url)} has digest ${cidToDigest(content)}, expected ${cidToDigest(this.expectedContent)}: check --digest, or the origin changed the file`))
      return
    }
    this.content = content
    this.finished = true
    this.saveRecord()
    this.components.discovery.provide(this.key)
    this.cleanup()
    this.components.logger.info({ key: this.key.toString(), bytes: layout.size, ...this.stats, duplicateBytes: this.duplicateBytes, cancelled: this.cancelled, cancelledBytes: this.cancelledBytes, abortedBytes: this.abortedBytes, directLinks: this.directLinks, ms: Date.now() - this.started }, 'download complete')
    this.resolveDone()
  }

  private saveRecord (): void {
    const layout = this.layout
    // After a failed verification the record is deleted, and pieces still arriving must not write it again.
    if (layout == null || this.failure instanceof VerificationError) return
    const file = this.components.records.get(this.key)?.file
    const record = {
      key: this.key,
      size: layout.size,
      pieceSize: layout.pieceSize,
      pieces: [...this.cids],
      url: stripQuery(this.init.url),
      updatedAt: Date.now(),
      ...(this.content != null ? { content: this.content } : {}),
      ...(file != null ? { file } : {})
    }
    this.components.records.set(record).catch((err: Error) => {
      this.components.logger.warn({ key: this.key.toString(), err: err.message }, 'content record not saved')
    })
  }

  private fail (err: Error): void {
    if (this.finished || this.failure != null) return
    this.failure = err
    // Piece CIDs that do not add up to the expected content must not key it on the next run.
    if (err instanceof VerificationError) {
      this.components.records.delete(this.key).catch((cause: Error) => {
        this.components.logger.warn({ key: this.key.toString(), err: cause.message }, 'content record not deleted')
      })
    }
    this.controller.abort(err)
    this.layoutReady.reject(err)
    this.cleanup()
    for (const list of this.waiters.values()) for (const wake of list) wake()
    this.waiters.clear()
    this.rejectDone(err)
  }

  private cleanup (): void {
    if (!this.controller.signal.aborted) this.controller.abort(new Error('download ended'))
    for (const timer of this.timers) clearInterval(timer)
    this.timers = []
    clearTimeout(this.endgameTimer)
    this.unwatch?.()
    this.unwatch = undefined
    this.unslot?.()
    this.unslot = undefined
    for (const source of this.sources.values()) {
      // A direct link serves other downloads too, and stays open: only this download's requests are withdrawn.
      if (source.client != null && this.components.links?.owns(source.client) === true) {
        for (const index of source.inflight) source.client.cancel(this.key, index)
      } else {
        void source.client?.close()
      }
      source.client = undefined
      void source.draining?.close()
      source.draining = undefined
    }
    this.hash?.close()
  }

  /**
   * Releases the pins that keep this content's pieces from eviction, or, while readers hold the
   * download, once the last of them ends.
   */
  release (): void {
    this.releaseRequested = true
    if (this.readers > 0) return
    for (const unpin of this.unpins.splice(0)) unpin()
  }

  /**
   * Keeps the content's pins while a reader streams it, also after the download ends: a reader
   * slower than the download would otherwise find later pieces evicted. Returns the function
   * that ends the hold.
   */
  hold (): () => void {
    this.readers++
    let ended = false
    return () => {
      if (ended) return
      ended = true
      this.readers--
      if (this.releaseRequested) this.release()
    }
  }
}

/** Returns the peer id in a multiaddr (`.../p2p/<id>`), or undefined when it has none. */
function peerIdIn (address: string): string | undefined {
  try {
    return multiaddr(address).getComponents().find(component => component.name === 'p2p')?.value
  } catch {
    return undefined
  }
}

/** Returns the size of the regular file at `path`, or undefined when there is none. */
async function regularFileSize (path: string): Promise<number | undefined> {
  const info = await stat(path).catch(() => undefined)
  return info != null && info.isFile() ? info.size : undefined
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
  })
}

async function raceSignal<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
  })
}
