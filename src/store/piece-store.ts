/**
 * Content-addressed piece store on disk: one file per piece at
 * `<dir>/pieces/<last 2 characters of the CID>/<CID>`, written atomically,
 * indexed in memory at start, and kept under a size quota by evicting
 * least-recently-used pieces that no reader or writer holds.
 */
import { lstat, open, readdir, stat, unlink, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { CID } from 'multiformats/cid'
import { EMPTY_CONTENT_CID, cidOfBytes, isContentCid } from '../content/ids.ts'
import { MAX_PIECE_SIZE } from '../content/pieces.ts'
import { makeDirectory } from '../directories.ts'
import { UsageError, VerificationError } from '../errors.ts'
import { silentLogger, type Logger } from '../log.ts'
import { isNotFound, isStaleTemp, isTempName, writeFileAtomic } from './atomic-file.ts'
import { FileRanges, type FileRange } from './file-ranges.ts'
import { fileReader, memoryReader, type PieceReader } from './piece-reader.ts'
import { DEFAULT_QUOTA_BYTES, QuotaIndex } from './quota.ts'

export type { FileRange } from './file-ranges.ts'
export type { PieceReader } from './piece-reader.ts'

export interface PieceStoreInit {
  /** Directory of the store, e.g. <data dir>/store. Created if missing. */
  dir: string
  /** Size quota in bytes for piece data; least-recently-used pieces are evicted above it. Default 20 GiB. 0 = no quota. */
  quotaBytes?: number
  logger?: Logger
}

export interface PieceStoreOperationOptions {
  /** Aborts the operation before its next step. */
  signal?: AbortSignal
}

export interface GetOptions extends PieceStoreOperationOptions {
  /** Hashes the file even when this process wrote or verified it, for a copy found corrupt by another reader. */
  recheck?: boolean
}

export interface PutOptions extends PieceStoreOperationOptions {
  /** The caller computed `cid` from these very bytes, so the store skips hashing them again. */
  hashed?: boolean
}

/** Subdirectory of the store that contains the piece files. */
export const PIECES_DIR = 'pieces'

/** Number of trailing CID characters that name a piece's shard directory. */
const SHARD_LENGTH = 2

/** Identity of a file on disk, to tell a replaced file from the one that was read. */
interface FileIdentity {
  dev: number
  ino: number
}

export class PieceStore {
  private readonly piecesDir: string
  private readonly quotaBytes: number
  private readonly log: Logger
  private readonly index = new QuotaIndex()
  /**
   * Tail of the queue of file operations per piece. Writes, deletions and index
   * additions of one piece run one after another, so an eviction or the removal
   * of a corrupt file never deletes a file that a later put has just renamed into place.
   */
  private readonly queues = new Map<string, Promise<void>>()
  /** CID string of the empty piece, the one piece whose file may have 0 bytes. */
  /**
   * Files this process wrote or verified, as inode and modification time: reading them again skips
   * the hash, because a hot piece is read once per upload. A file replaced or written since has a
   * new inode or time and is verified again.
   */
  private readonly verified = new Map<string, string>()
  /** Shard directories known to exist. */
  private readonly shards = new Set<string>()
  /** Set while only pinned pieces remain above the quota, so the warning is logged once. */
  private overQuotaWarned = false
  /** Pieces held in ranges of files outside the store, outside the quota. */
  private readonly ranges: FileRanges

  constructor (init: PieceStoreInit) {
    const quotaBytes = init.quotaBytes ?? DEFAULT_QUOTA_BYTES
    if (!Number.isSafeInteger(quotaBytes) || quotaBytes < 0) {
      throw new UsageError(`invalid piece store quota ${String(init.quotaBytes)}: expected a whole number of bytes, 0 for no quota`)
    }

    this.piecesDir = join(init.dir, PIECES_DIR)
    this.quotaBytes = quotaBytes
    this.log = (init.logger ?? silentLogger()).child({ component: 'store' })
    this.ranges = new FileRanges(this.log)
  }

  /** Bytes stored in pieces. */
  get usedBytes (): number {
    return this.index.usedBytes
  }

  /** Scans the directory: removes leftover temp files, indexes every piece file (name = CID, size). */
  async start (): Promise<void> {
    await makeDirectory(this.piecesDir)

    const removedTemps = await this.scan()
    this.log.info({ dir: this.piecesDir, pieces: this.index.count, bytes: this.index.usedBytes, removedTemps }, 'piece store started')

    await this.evictOverQuota()
  }

  /** Waits for the file operations in progress. */
  async stop (): Promise<void> {
    await Promise.all(this.queues.values())
  }

  /**
   * Tells whether the in-memory index lists the piece.
   * NOTE: a piece that another process sharing the directory stored is indexed only by
   * a get of it or by the next start, and each process applies the quota to its own index.
   */
  has (cid: CID): boolean {
    const key = keyOf(cid)
    return this.index.has(key) || this.ranges.has(key)
  }

  /** Size in bytes of a stored piece, or undefined. */
  sizeOf (cid: CID): number | undefined {
    const key = keyOf(cid)
    return this.index.sizeOf(key) ?? this.ranges.sizeOf(key)
  }

  /**
   * Returns where a stored piece's bytes are on disk: its own file, or a range of another file.
   * The bytes there are not verified by this call.
   */
  locate (cid: CID): FileRange | undefined {
    const key = keyOf(cid)
    const size = this.index.sizeOf(key)
    if (size != null) return { path: this.pathOf(key), offset: 0, length: size }
    return this.ranges.locate(key)
  }

  /**
   * Holds a piece that this process has just written to a range of its own file (a download's
   * output) instead of storing a copy. Reads trust the file until `sealRanges`.
   */
  putRange (cid: CID, range: FileRange): void {
    this.ranges.addWriting(keyOf(cid), range)
  }

  /** Holds a piece found in a range of an existing file. Each read verifies it until one matches. */
  adoptRange (cid: CID, range: FileRange): void {
    this.ranges.adopt(keyOf(cid), range)
  }

  /** Records that the file written at `from` is complete and now named `to` (FileRanges.seal). */
  async sealRanges (from: string, to: string): Promise<void> {
    await this.ranges.seal(from, to)
  }

  /** Forgets the pieces held in a file, e.g. a download's output that was removed. */
  dropRanges (path: string): void {
    this.ranges.drop(path)
  }

  /**
   * Stores a piece whose bytes the caller has verified against cid (the store re-checks the hash and
   * throws VerificationError on a mismatch, so nothing corrupt is stored). Atomic: writes a temp file
   * in the same dir, fsyncs, renames. Concurrent puts of the same CID, also from two processes
   * sharing the dir, both succeed and leave one correct file.
   */
  async put (cid: CID, bytes: Uint8Array, options: PutOptions = {}): Promise<void> {
    const key = keyOf(cid)
    if (bytes.byteLength > MAX_PIECE_SIZE) {
      throw new UsageError(`piece ${key} is ${bytes.byteLength} bytes, over the limit of ${MAX_PIECE_SIZE}; cut the content into smaller pieces`)
    }

    // The pin keeps the new piece out of the eviction that this put may trigger.
    const release = this.index.pin(key)
    try {
      // 1. Verify the bytes, so nothing corrupt reaches the disk.
      options.signal?.throwIfAborted()
      const actual = options.hashed === true ? cid : await cidOfBytes(bytes)
      if (!actual.equals(cid)) {
        throw new VerificationError(`bytes of piece ${key} hash to ${actual.toString()}, so the piece was not stored; fetch it again from another source`)
      }

      // 2. Write the file unless an earlier put stored it.
      await this.enqueue(key, async () => {
        if (this.index.has(key)) {
          this.index.touch(key)
          return
        }
        options.signal?.throwIfAborted()

        const path = this.pathOf(key)
        await this.ensureShard(dirname(path))
        await writeFileAtomic(path, bytes, { durable: false })
        this.index.add(key, bytes.byteLength)
        await this.rememberVerified(key, path)
        this.log.debug({ cid: key, bytes: bytes.byteLength }, 'stored piece')
      })

      // 3. Evict least-recently-used pieces above the quota.
      await this.evictOverQuota()
    } finally {
      release()
    }
  }

  /**
   * Reads a whole piece, or undefined if absent. Marks it recently used.
   * Re-hashes the bytes, and deletes a file that fails verification and returns
   * undefined, so disk corruption never reaches a caller.
   */
  async get (cid: CID, options: GetOptions = {}): Promise<Uint8Array | undefined> {
    const key = keyOf(cid)
    const release = this.index.pin(key)
    try {
      // 1. Read the file.
      options.signal?.throwIfAborted()
      const path = this.pathOf(key)
      let file: PieceFile
      try {
        file = await readPieceFile(path)
      } catch (err) {
        if (!isNotFound(err)) throw err
        if (this.index.has(key)) await this.forgetIfMissing(key)
        return await this.ranges.read(key, cid)
      }

      // 2. Verify it against its name, unless this process already did; delete it when it does not match.
      const known = options.recheck !== true && this.verified.get(key) === fileStamp(file.identity.ino, file.mtimeBefore, file.size)
      let actual: CID | undefined
      if (file.bytes !== undefined) actual = known ? cid : await cidOfBytes(file.bytes)
      if (file.bytes === undefined || actual === undefined || !actual.equals(cid)) {
        this.log.warn({ cid: key, path, size: file.size, actual: actual?.toString() }, 'piece file failed verification; deleting it')
        await this.deleteIfUnchanged(key, file.identity)
        return undefined
      }

      // 3. Mark it used, and index a file that another process sharing the directory wrote.
      this.verified.set(key, fileStamp(file.identity.ino, file.mtimeAfter, file.size))
      if (this.index.has(key)) {
        this.index.touch(key)
      } else {
        await this.indexIfUnchanged(key, file.identity, file.size)
      }
      return file.bytes
    } finally {
      release()
    }
  }

  /**
   * Opens a piece for sending in parts, or resolves undefined if it is absent. A file this
   * process wrote or verified before (same inode, modification time and size) is read from disk
   * part by part, so an upload keeps one part in memory instead of the whole piece. Any other
   * file is read and verified whole first, as `get` does. The piece stays pinned until `close`.
   */
  async openForUpload (cid: CID, options: PieceStoreOperationOptions = {}): Promise<PieceReader | undefined> {
    const key = keyOf(cid)
    options.signal?.throwIfAborted()
    const release = this.index.pin(key)
    let handle: FileHandle | undefined
    try {
      try {
        handle = await open(this.pathOf(key), 'r')
      } catch (err) {
        if (!isNotFound(err)) throw err
        if (this.index.has(key)) await this.forgetIfMissing(key)
        const reader = await this.ranges.openForUpload(key, cid, release)
        if (reader === undefined) release()
        return reader
      }
      const stats = await handle.stat()
      if (this.verified.get(key) !== fileStamp(stats.ino, stats.mtimeMs, stats.size)) {
        await handle.close()
        handle = undefined
        const bytes = await this.get(cid, options)
        if (bytes === undefined) {
          release()
          return undefined
        }
        return memoryReader(bytes, release)
      }

      // Record the use, as a whole read does, so eviction after a restart counts it.
      const now = new Date()
      const touched = await handle.utimes(now, now).then(() => true, () => false)
      this.verified.set(key, fileStamp(stats.ino, touched ? now.getTime() : stats.mtimeMs, stats.size))
      if (this.index.has(key)) this.index.touch(key)
      return fileReader(handle, stats.size, release)
    } catch (err) {
      await handle?.close().catch(() => {})
      release()
      throw err
    }
  }

  /** Creates a shard directory once per process; a put per piece would otherwise pay a mkdir each. */
  private async ensureShard (dir: string): Promise<void> {
    if (this.shards.has(dir)) return
    await makeDirectory(dir)
    this.shards.add(dir)
  }

  private async rememberVerified (key: string, path: string): Promise<void> {
    try {
      const stats = await stat(path)
      this.verified.set(key, fileStamp(stats.ino, stats.mtimeMs, stats.size))
    } catch {
      this.verified.delete(key)
    }
  }

  /** Holds a piece against eviction until the returned function is called (readers and writers use it). */
  pin (cid: CID): () => void {
    return this.index.pin(keyOf(cid))
  }

  private pathOf (key: string): string {
    return join(this.piecesDir, key.slice(-SHARD_LENGTH), key)
  }

  /** Runs `operation` after every earlier queued file operation on the same piece. */
  private async enqueue<T> (key: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(key) ?? Promise.resolve()
    const result = previous.then(operation)
    const tail = result.then(() => {}, () => {})
    this.queues.set(key, tail)

    try {
      return await result
    } finally {
      if (this.queues.get(key) === tail) this.queues.delete(key)
    }
  }

  /** Indexes every piece file, oldest modification first, and removes stale temp files; returns how many temp files it removed. */
  private async scan (): Promise<number> {
    const found: Array<{ key: string, size: number, mtimeMs: number }> = []
    let removedTemps = 0

    for (const shard of await readdir(this.piecesDir, { withFileTypes: true })) {
      if (!shard.isDirectory()) {
        this.log.warn({ path: join(this.piecesDir, shard.name) }, 'ignoring a file outside the shard directories of the piece store')
        continue
      }

      const shardDir = join(this.piecesDir, shard.name)
      for (const name of await readdir(shardDir)) {
        const path = join(shardDir, name)
        const stats = await lstat(path).catch((err: unknown) => {
          if (isNotFound(err)) return undefined
          throw err
        })
        if (stats === undefined) continue

        // 1. Temp files of writes that never finished.
        if (isTempName(name)) {
          if (isStaleTemp(name, stats.mtimeMs)) {
            await unlink(path).catch((err: unknown) => { if (!isNotFound(err)) throw err })
            removedTemps++
          }
          continue
        }

        // 2. Anything not named like a piece of this shard.
        if (!stats.isFile() || !isPieceName(name, shard.name)) {
          this.log.warn({ path }, 'ignoring a file in the piece store that is not named by a piece CID')
          continue
        }

        // 3. Files whose size no piece can have.
        if (!this.isPlausibleSize(name, stats.size)) {
          this.log.warn({ cid: name, path, size: stats.size }, 'deleting a piece file of impossible size')
          await unlink(path).catch((err: unknown) => { if (!isNotFound(err)) throw err })
          continue
        }

        found.push({ key: name, size: stats.size, mtimeMs: stats.mtimeMs })
      }
    }

    // Reads update a file's modification time, so this order approximates the use order before the restart.
    found.sort((a, b) => a.mtimeMs - b.mtimeMs)
    for (const piece of found) this.index.add(piece.key, piece.size)

    return removedTemps
  }

  private isPlausibleSize (key: string, size: number): boolean {
    if (size === 0) return key === EMPTY_CONTENT_CID.toString()
    return size <= MAX_PIECE_SIZE
  }

  /** Drops a piece from the index when its file is gone. */
  private async forgetIfMissing (key: string): Promise<void> {
    await this.enqueue(key, async () => {
      try {
        await stat(this.pathOf(key))
      } catch (err) {
        if (!isNotFound(err)) throw err
        if (this.index.remove(key)) this.log.warn({ cid: key }, 'piece file disappeared from the store')
      }
    })
  }

  /** Indexes a verified piece file unless it was replaced or deleted since it was read. */
  private async indexIfUnchanged (key: string, identity: FileIdentity, size: number): Promise<void> {
    await this.enqueue(key, async () => {
      const current = await stat(this.pathOf(key)).catch(() => undefined)
      if (current === undefined || current.dev !== identity.dev || current.ino !== identity.ino) return
      this.index.add(key, size)
    })
  }

  /**
   * Deletes a piece file that failed verification, unless a put has replaced it
   * since it was read. Another process may still replace it between the check and
   * the unlink. In that case the next get finds the file missing, and the piece is fetched again.
   */
  private async deleteIfUnchanged (key: string, identity: FileIdentity): Promise<void> {
    await this.enqueue(key, async () => {
      const path = this.pathOf(key)
      const current = await stat(path).catch((err: unknown) => {
        if (isNotFound(err)) return undefined
        throw err
      })
      if (current !== undefined && (current.dev !== identity.dev || current.ino !== identity.ino)) return

      this.verified.delete(key)
      if (current !== undefined) await unlink(path).catch((err: unknown) => { if (!isNotFound(err)) throw err })
      this.index.remove(key)
    })
  }

  /** Deletes least-recently-used unpinned pieces until usedBytes is at most the quota. */
  private async evictOverQuota (): Promise<void> {
    if (this.quotaBytes === 0) return

    const before = this.index.usedBytes
    const evicted = this.index.takeEvictions(this.quotaBytes)
    await Promise.all(evicted.map(async key => {
      await this.enqueue(key, async () => {
        try {
          this.verified.delete(key)
          await unlink(this.pathOf(key))
        } catch (err) {
          if (!isNotFound(err)) this.log.warn({ cid: key, err }, 'failed to delete an evicted piece file; it stays on disk until the next start indexes it')
        }
      })
    }))

    if (evicted.length > 0) {
      this.log.info({ pieces: evicted.length, bytes: before - this.index.usedBytes, usedBytes: this.index.usedBytes, quotaBytes: this.quotaBytes }, 'evicted least-recently-used pieces')
    }

    const over = this.index.usedBytes > this.quotaBytes
    if (over && !this.overQuotaWarned) {
      this.log.warn({ usedBytes: this.index.usedBytes, quotaBytes: this.quotaBytes }, 'piece store is over its quota and every remaining piece is pinned; eviction resumes when pins are released')
    }
    this.overQuotaWarned = over
  }
}

interface PieceFile {
  /** The file's bytes, or undefined when the file is too large to be a piece. */
  bytes: Uint8Array | undefined
  size: number
  identity: FileIdentity
  /** Modification time when the file was opened, in ms. */
  mtimeBefore: number
  /** Modification time after the read set it to now, in ms. */
  mtimeAfter: number
}

/** Reads a piece file and sets its modification time to now, which records the use for the next start. */
async function readPieceFile (path: string): Promise<PieceFile> {
  const handle = await open(path, 'r')
  try {
    const stats = await handle.stat()
    const identity = { dev: stats.dev, ino: stats.ino }
    if (stats.size > MAX_PIECE_SIZE) return { bytes: undefined, size: stats.size, identity, mtimeBefore: stats.mtimeMs, mtimeAfter: stats.mtimeMs }

    // A plain Uint8Array view of the Buffer, so callers see the type they were promised.
    const buffer = await handle.readFile()
    const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength)
    const now = new Date()
    // The modification time only orders eviction after a restart, so a failure to set it is harmless.
    const touched = await handle.utimes(now, now).then(() => true, () => false)
    return { bytes, size: bytes.byteLength, identity, mtimeBefore: stats.mtimeMs, mtimeAfter: touched ? now.getTime() : stats.mtimeMs }
  } finally {
    await handle.close()
  }
}

/**
 * Identifies a file version by inode, size and modification time in whole milliseconds, the
 * precision utimes keeps. NOTE: a same-size rewrite within the same millisecond keeps the stamp.
 */
function fileStamp (ino: number, mtimeMs: number, size: number): string {
  return `${ino}:${Math.floor(mtimeMs)}:${size}`
}

/** Returns the CID string that names a piece, throwing UsageError for a CID that cannot name one. */
function keyOf (cid: CID): string {
  const parsed = CID.asCID(cid)
  if (parsed == null || !isContentCid(parsed)) {
    throw new UsageError(`CID ${String(cid)} cannot name a piece: expected a CIDv1 with codec raw and a sha2-256 multihash`)
  }
  return parsed.toString()
}

/** Tells whether a file name is the canonical CID string of a piece and lies in the right shard. */
function isPieceName (name: string, shard: string): boolean {
  if (name.slice(-SHARD_LENGTH) !== shard) return false
  try {
    const cid = CID.parse(name)
    return isContentCid(cid) && cid.toString() === name
  } catch {
    return false
  }
}
