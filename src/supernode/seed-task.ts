/**
 * One origin fetch of one content on a supernode: cuts pieces as bytes arrive,
 * stores and announces each verified piece, and lets any number of seed
 * streams follow its progress.
 */
import type { CID } from 'multiformats/cid'
import { cutPieces } from '../content/cutter.ts'
import { ownPiece, releasePiece } from '../swarm/piece-buffers.ts'
import { EMPTY_CONTENT_CID, cidOfSha256, cidToDigest } from '../content/ids.ts'
import { choosePieceSize, pieceCount } from '../content/pieces.ts'
import { DfnodeError, OriginUnreachableError, StorageError, VerificationError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { OriginClient } from '../origin/client.ts'
import type { ContentRecords } from '../store/content-records.ts'
import type { PieceStore } from '../store/piece-store.ts'
import type { ContentHasher, HashSession } from '../swarm/content-hasher.ts'
import type { Discovery } from '../swarm/discovery.ts'

export interface SeedTaskInit {
  key: CID
  url: string
  headers: Record<string, string>
  /** Expected content CID when the request named a digest. */
  expected?: CID
  /** Piece size in bytes. Undefined chooses it by content size (see choosePieceSize). */
  pieceSize?: number
}

export interface SeedTaskComponents {
  origin: OriginClient
  store: PieceStore
  records: ContentRecords
  discovery: Discovery
  /** Hasher that computes the SHA-256 of the whole content on its own thread. */
  hasher: ContentHasher
  logger: Logger
}

export type SeedState = 'running' | 'done' | 'failed'

export class SeedTask {
  readonly key: CID
  state: SeedState = 'running'
  size?: number
  pieceSize?: number
  contentType?: string
  /** Piece CIDs verified so far, in order. */
  readonly cids: CID[] = []
  content?: CID
  error?: DfnodeError
  private readonly init: SeedTaskInit
  private readonly components: SeedTaskComponents
  private readonly listeners = new Set<() => void>()
  private readonly controller = new AbortController()

  constructor (init: SeedTaskInit, components: SeedTaskComponents) {
    this.key = init.key
    this.init = init
    this.components = components
  }

  /** Registers a listener called after every change; returns the function that removes it. */
  subscribe (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  abort (): void {
    this.controller.abort(new Error('supernode stopping'))
  }

  /** Fetches the content from the origin. Failures are caught and recorded in `state` and `error`. */
  async run (): Promise<void> {
    const { origin, store, records, discovery, hasher, logger } = this.components
    const started = Date.now()
    const unpins: Array<() => void> = []
    let hash: HashSession | undefined
    /** Pieces whose copy in the store predates this task. The hash thread checks them against their CIDs. */
    const heldBefore: CID[] = []
    try {
      // Open the origin; its Content-Length fixes the piece layout.
      const response = await origin.open({ url: this.init.url, headers: this.init.headers, signal: this.controller.signal })
      if (response.size == null) {
        throw new OriginUnreachableError(`origin sent no Content-Length for ${stripQuery(this.init.url)}; dfnode needs the size to cut pieces`)
      }
      this.size = response.size
      this.pieceSize = choosePieceSize(response.size, this.init.pieceSize)
      if (response.contentType != null) this.contentType = response.contentType
      const count = pieceCount(this.size, this.pieceSize)
      // A content of one piece is hashed as that piece, and a content of none needs no hash.
      if (count > 1) hash = hasher.open()
      await records.set({ key: this.key, size: this.size, pieceSize: this.pieceSize, pieces: [], url: stripQuery(this.init.url), updatedAt: Date.now() })
      this.notify()
      discovery.provide(this.key)
      discovery.relay(this.key)

      // Cut, store and announce each piece as soon as it is verified.
      const pieces = cutPieces(response.body, this.pieceSize)
      let next = await pieces.next()
      while (next.done !== true) {
        const piece = next.value
        // The cutter has moved on to a new buffer, so the piece's memory can go once it is stored.
        ownPiece(piece.bytes)
        // The pin keeps the piece from eviction until the hash thread has read it.
        unpins.push(store.pin(piece.cid))
        // The store keeps a copy it already had instead of these bytes. A read checks that copy,
        // unless this process verified it before, and deletes it when it is corrupt or missing.
        if (store.has(piece.cid)) await store.get(piece.cid)
        const storedBefore = store.has(piece.cid)
        await store.put(piece.cid, piece.bytes, { hashed: true })
        releasePiece(piece.bytes)
        if (hash != null) {
          const range = store.locate(piece.cid)
          if (range == null) throw new StorageError(`piece ${piece.index} of ${stripQuery(this.init.url)} is missing from the store right after it was stored; check that no other process removes files from the data dir, and request the content again`)
          if (storedBefore) heldBefore.push(piece.cid)
          hash.add(range, storedBefore ? { index: piece.index, sha256: piece.cid.multihash.digest } : undefined)
        }
        this.cids.push(piece.cid)
        await records.set({ key: this.key, size: this.size, pieceSize: this.pieceSize, pieces: [...this.cids], url: stripQuery(this.init.url), updatedAt: Date.now() })
        discovery.announce(this.key, [piece.index])
        this.notify()
        next = await pieces.next()
      }

      // Check the whole content against its size and digest before declaring it complete.
      const result = next.value
      if (result.size !== this.size) {
        throw new OriginUnreachableError(`origin sent ${result.size} bytes for ${stripQuery(this.init.url)}, expected ${this.size}`)
      }
      const expected = this.init.expected
      const actual = hash != null ? cidOfSha256(await this.awaitDigest(hash, heldBefore)) : this.cids[0] ?? EMPTY_CONTENT_CID
      if (expected != null && expected.toString() !== actual.toString()) {
        // The bytes are what the origin serves for this URL. They stay under their own digest, so a
        // request with that digest is served without fetching them again. The requested key gets no record.
        await records.set({ key: actual, size: this.size, pieceSize: this.pieceSize, pieces: [...this.cids], content: actual, url: stripQuery(this.init.url), updatedAt: Date.now() })
        throw new VerificationError(`content of ${stripQuery(this.init.url)} has digest ${cidToDigest(actual)}, expected ${cidToDigest(expected)}: check the digest, or the origin changed the file`)
      }
      this.content = actual
      await records.set({ key: this.key, size: this.size, pieceSize: this.pieceSize, pieces: [...this.cids], content: actual, url: stripQuery(this.init.url), updatedAt: Date.now() })
      await records.flush()
      this.state = 'done'
      // Downloads find holders by the content key and gossip. Piece records serve lookups of one piece.
      discovery.provideInBackground(this.cids)
      logger.info({ key: this.key.toString(), url: stripQuery(this.init.url), bytes: this.size, pieces: this.cids.length, ms: Date.now() - started }, 'seeded from origin')
    } catch (err) {
      this.error = err instanceof DfnodeError ? err : new OriginUnreachableError(`fetching ${stripQuery(this.init.url)} failed: ${(err as Error).message}`, { cause: err })
      this.state = 'failed'
      // Closes the origin response, which a failed store or record write leaves unread.
      this.controller.abort(this.error)
      await records.delete(this.key).catch(() => {})
      logger.warn({ key: this.key.toString(), url: stripQuery(this.init.url), code: this.error.code, err: this.error.message }, 'seeding failed')
    } finally {
      hash?.close()
      for (const unpin of unpins) unpin()
      this.notify()
    }
  }

  /**
   * Resolves the content digest from the hash thread. A copy the store held before this task that
   * does not match its CID is deleted, and a store read error ends the task. Either way the next
   * seed of the content stores the origin's bytes again.
   */
  private async awaitDigest (hash: HashSession, heldBefore: CID[]): Promise<Uint8Array> {
    const url = stripQuery(this.init.url)
    try {
      return await hash.digest()
    } catch (err) {
      // The thread's message names a local path, so only the log gets it and peers get a summary.
      this.components.logger.warn({ key: this.key.toString(), url, err: (err as Error).message }, 'content hash of a seeded content failed')
      if (!(err instanceof VerificationError)) {
        throw new StorageError(`reading the stored pieces of ${url} back for the content hash failed; request the content again`, { cause: err })
      }
      for (const cid of heldBefore) await this.components.store.get(cid, { recheck: true }).catch(() => {})
      throw new VerificationError(`a copy of a piece of ${url} in the supernode's store did not match its CID and was deleted; request the content again`, { cause: err })
    }
  }

  private notify (): void {
    for (const listener of this.listeners) listener()
  }
}

/** Returns a URL without its query string, for logs and records. */
export function stripQuery (url: string): string {
  const at = url.indexOf('?')
  return at < 0 ? url : url.slice(0, at)
}
