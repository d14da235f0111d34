/**
 * Content records: the size, piece size, content and piece CIDs and origin URL of
 * each content, one DAG-CBOR file per key at `<dir>/contents/<key>.cbor`, beside
 * the pieces. Records are loaded into memory at start and written atomically.
 */
import { readdir, readFile, rename, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { CID } from 'multiformats/cid'
import { validateManifest, type Manifest } from '../content/manifest.ts'
import { pieceCount } from '../content/pieces.ts'
import { makeDirectory } from '../directories.ts'
import { UsageError } from '../errors.ts'
import { silentLogger, type Logger } from '../log.ts'
import { isNotFound, isStaleTemp, isTempName, syncDirectory, writeFileAtomic } from './atomic-file.ts'
import { decodeRecord, encodeRecord, findRecordProblem, MAX_RECORD_BYTES, stripUrl } from './record-codec.ts'

export interface ContentRecord {
  /** Content CID or URL key. */
  key: CID
  /** Content length in bytes. */
  size: number
  /** Length of every piece but the last, in bytes. */
  pieceSize: number
  /** Whole-content CID once known. */
  content?: CID
  /** Piece CIDs known so far (a partial list while the supernode is still downloading). */
  pieces: Array<CID | undefined>
  /** Origin URL, without query string. */
  url?: string
  /** Absolute path of a file outside the store that held the whole content when it was written (a `dfnode fetch` output). */
  file?: string
  /** Time of the last change, in milliseconds since the epoch. */
  updatedAt: number
}

export interface ContentRecordsInit {
  /** Directory of the store, e.g. <data dir>/store; records go to its `contents` subdirectory, created if missing. */
  dir: string
  logger?: Logger
}

/** Subdirectory of the store that contains the record files. */
export const CONTENTS_DIR = 'contents'

const RECORD_EXTENSION = '.cbor'

/** Suffix given to a record file that failed to decode, so it is kept for inspection but no longer loaded. */
export const CORRUPT_SUFFIX = '.corrupt'

/** Write state of one key: the write in progress and the one queued behind it. */
interface KeyWrites {
  running?: Promise<void>
  queued?: Promise<void>
}

export class ContentRecords {
  private readonly contentsDir: string
  private readonly log: Logger
  private readonly records = new Map<string, ContentRecord>()
  /** Keys whose in-memory state (a record or its deletion) is not on disk yet. */
  private readonly dirty = new Set<string>()
  private readonly writes = new Map<string, KeyWrites>()

  constructor (init: ContentRecordsInit) {
    this.contentsDir = join(init.dir, CONTENTS_DIR)
    this.log = (init.logger ?? silentLogger()).child({ component: 'content-records' })
  }

  /** Loads every record; a file that fails to decode is logged and renamed to `<name>.corrupt`. */
  async start (): Promise<void> {
    await makeDirectory(this.contentsDir)

    let corrupt = 0
    for (const name of await readdir(this.contentsDir)) {
      const outcome = await this.load(name)
      if (outcome === 'corrupt') corrupt++
    }

    this.log.info({ dir: this.contentsDir, records: this.records.size, corrupt }, 'content records loaded')
  }

  /** Writes every pending change. */
  async stop (): Promise<void> {
    await this.flush()
  }

  /** Returns the record of a key; it is frozen, so pass a changed copy to set. */
  get (key: CID): ContentRecord | undefined {
    return this.records.get(key.toString())
  }

  /**
   * Stores a record and writes it atomically. Writes of one key are coalesced: a set
   * during a write is written once that write ends, together with any later set.
   * Removes the query string, fragment and credentials from `url`. Throws UsageError
   * for an invalid record; rejects when the write fails, and flush() retries it.
   */
  async set (record: ContentRecord): Promise<void> {
    const stored = normalizeRecord(record)
    const key = stored.key.toString()

    this.records.set(key, stored)
    this.dirty.add(key)
    await this.scheduleWrite(key)
  }

  /** Writes every pending change, retrying writes that failed; rejects with the first error that remains. */
  async flush (): Promise<void> {
    const pending = [...this.writes.values()].flatMap(state => [state.running, state.queued])
    await Promise.allSettled(pending)

    const results = await Promise.allSettled([...this.dirty].map(async key => { await this.scheduleWrite(key) }))
    const failed = results.filter(result => result.status === 'rejected')
    if (failed.length > 0) {
      this.log.warn({ failed: failed.length, err: failed[0]?.reason }, 'failed to write content records')
      throw failed[0]?.reason
    }
  }

  /** Deletes a record from memory and disk. */
  async delete (key: CID): Promise<void> {
    const name = key.toString()
    if (!this.records.delete(name)) return

    this.dirty.add(name)
    await this.scheduleWrite(name)
  }

  list (): ContentRecord[] {
    return [...this.records.values()]
  }

  /** Returns the complete records under other keys (URL keys) whose content CID is `content`. */
  completeWithContent (content: CID): ContentRecord[] {
    return this.list().filter(record => !record.key.equals(content) && record.content?.equals(content) === true && this.manifestOf(record.key) != null)
  }

  /** Returns a manifest when the record is complete (content CID and every piece CID known). */
  manifestOf (key: CID): Manifest | undefined {
    const record = this.get(key)
    if (record?.content === undefined) return undefined
    if (record.pieces.length !== pieceCount(record.size, record.pieceSize)) return undefined

    const pieces: CID[] = []
    for (const piece of record.pieces) {
      if (piece === undefined) return undefined
      pieces.push(piece)
    }

    const manifest = { key: record.key, content: record.content, size: record.size, pieceSize: record.pieceSize, pieces }
    try {
      validateManifest(manifest)
    } catch (err) {
      this.log.warn({ key: record.key.toString(), err }, 'complete content record does not form a valid manifest')
      return undefined
    }
    return manifest
  }

  private pathOf (key: string): string {
    return join(this.contentsDir, `${key}${RECORD_EXTENSION}`)
  }

  /** Loads one file of the contents directory and returns the outcome. */
  private async load (name: string): Promise<'loaded' | 'corrupt' | 'skipped'> {
    const path = join(this.contentsDir, name)

    // 1. Temp files of writes that never finished, and files already moved aside.
    if (isTempName(name)) {
      const stats = await stat(path).catch(() => undefined)
      if (stats !== undefined && isStaleTemp(name, stats.mtimeMs)) await unlink(path).catch(() => {})
      return 'skipped'
    }
    if (name.endsWith(CORRUPT_SUFFIX)) return 'skipped'
    if (!name.endsWith(RECORD_EXTENSION)) {
      this.log.warn({ path }, 'ignoring a file in the contents directory that is not a record')
      return 'skipped'
    }

    // 2. Read it; a file that cannot be read stays where it is.
    let bytes: Uint8Array
    try {
      const stats = await stat(path)
      if (stats.size > MAX_RECORD_BYTES) {
        return await this.moveAside(path, new Error(`record file is ${stats.size} bytes, over the limit of ${MAX_RECORD_BYTES}`))
      }
      bytes = await readFile(path)
    } catch (err) {
      if (!isNotFound(err)) this.log.error({ path, err }, 'failed to read a content record; it is skipped until the next start')
      return 'skipped'
    }

    // 3. Decode it, and check that it is filed under its own key.
    let record: ContentRecord
    try {
      record = decodeRecord(bytes)
      const expected = `${record.key.toString()}${RECORD_EXTENSION}`
      if (name !== expected) throw new Error(`record of key ${record.key.toString()} is filed as ${name}, expected ${expected}`)
    } catch (err) {
      return await this.moveAside(path, err)
    }

    this.records.set(record.key.toString(), freezeRecord(record))
    return 'loaded'
  }

  private async moveAside (path: string, err: unknown): Promise<'corrupt'> {
    const target = `${path}${CORRUPT_SUFFIX}`
    this.log.warn({ path, target, err }, 'content record failed to decode; moving it aside')
    try {
      await rename(path, target)
    } catch (renameErr) {
      this.log.error({ path, err: renameErr }, 'failed to move a corrupt content record aside; it is skipped until the next start')
    }
    return 'corrupt'
  }

  /** Returns a promise of a write of the key's latest state, queued behind the write in progress. */
  private scheduleWrite (key: string): Promise<void> {
    let state = this.writes.get(key)
    if (state === undefined) {
      state = {}
      this.writes.set(key, state)
    }
    if (state.queued !== undefined) return state.queued

    const writes = state
    const write: Promise<void> = (writes.running ?? Promise.resolve())
      .catch(() => {})
      .then(async () => {
        // From here on a set is no longer covered by this write, so it queues the next one.
        writes.queued = undefined
        writes.running = write
        await this.writeNow(key)
      })
      .finally(() => {
        if (writes.running === write) writes.running = undefined
        if (writes.running === undefined && writes.queued === undefined) this.writes.delete(key)
      })
    writes.queued = write
    return write
  }

  /** Writes the key's current record, or deletes its file when the record is gone. */
  private async writeNow (key: string): Promise<void> {
    const record = this.records.get(key)
    const path = this.pathOf(key)
    this.dirty.delete(key)

    try {
      if (record !== undefined) {
        await writeFileAtomic(path, encodeRecord(record), { durable: record.content != null })
        return
      }
      try {
        await unlink(path)
      } catch (err) {
        if (!isNotFound(err)) throw err
      }
      await syncDirectory(this.contentsDir)
    } catch (err) {
      this.dirty.add(key)
      throw err
    }
  }
}

/** Checks a record, strips its URL and returns a frozen copy; throws UsageError when it is invalid. */
function normalizeRecord (record: ContentRecord): ContentRecord {
  const key = CID.asCID(record.key)
  const keyName = key?.toString() ?? String(record.key)

  const copy: ContentRecord = {
    key: key ?? record.key,
    size: record.size,
    pieceSize: record.pieceSize,
    pieces: Array.isArray(record.pieces) ? [...record.pieces] : record.pieces,
    updatedAt: record.updatedAt
  }
  if (record.content !== undefined) copy.content = CID.asCID(record.content) ?? record.content
  if (record.url !== undefined) {
    copy.url = typeof record.url === 'string' && URL.canParse(record.url) ? stripUrl(record.url) : record.url
  }
  if (record.file !== undefined) copy.file = record.file

  const problem = findRecordProblem(copy)
  if (problem !== undefined) throw new UsageError(`invalid content record for ${keyName}: ${problem}`)
  return freezeRecord(copy)
}

function freezeRecord (record: ContentRecord): ContentRecord {
  Object.freeze(record.pieces)
  return Object.freeze(record)
}
