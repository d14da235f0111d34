/**
 * Pieces kept in ranges of files outside the store: the output file of a
 * `dfnode fetch`. Such a piece is written to disk once, into the output,
 * and served to other peers from there.
 */
import { open, type FileHandle } from 'node:fs/promises'
import type { CID } from 'multiformats/cid'
import { cidOfBytes } from '../content/ids.ts'
import type { Logger } from '../log.ts'
import { isNotFound } from './atomic-file.ts'
import { fileReader, memoryReader, type PieceReader } from './piece-reader.ts'

/** Location of a piece in a file. */
export interface FileRange {
  path: string
  offset: number
  length: number
}

/**
 * Trust in a range without hashing it. 'writing' applies while this process writes the file, and a
 * file stamp once the file is complete, trusted while the file keeps it. undefined marks a file
 * this process did not write: its pieces are verified on every read until one matches.
 */
type Trust = 'writing' | string | undefined

interface HeldRange extends FileRange {
  trust: Trust
}

export class FileRanges {
  private readonly ranges = new Map<string, HeldRange>()
  /** Files already reported as changed or gone, so a file of many pieces is reported once. */
  private readonly reported = new Set<string>()
  private readonly log: Logger

  constructor (log: Logger) {
    this.log = log
  }

  has (key: string): boolean {
    return this.ranges.has(key)
  }

  sizeOf (key: string): number | undefined {
    return this.ranges.get(key)?.length
  }

  /** Returns the file range that contains a piece, or undefined. */
  locate (key: string): FileRange | undefined {
    const range = this.ranges.get(key)
    return range == null ? undefined : { path: range.path, offset: range.offset, length: range.length }
  }

  /** Adds a range that this process is writing. It is trusted until `seal`. */
  addWriting (key: string, range: FileRange): void {
    this.ranges.set(key, { ...range, trust: 'writing' })
  }

  /** Adds a range of an existing file, verified when read. A range already known is kept. */
  adopt (key: string, range: FileRange): void {
    if (!this.ranges.has(key)) this.ranges.set(key, { ...range, trust: undefined })
  }

  /**
   * Moves the ranges of a complete file from `from` to `to`, which the file replaced by a rename,
   * and trusts them while `to` keeps its current stamp. Ranges held in the replaced file are dropped.
   */
  async seal (from: string, to: string): Promise<void> {
    const moved = [...this.ranges.values()].filter(range => range.path === from)
    this.drop(to)
    // Renamed first, so that a read between now and the stamp finds the file.
    for (const range of moved) range.path = to
    if (moved.length === 0) return
    let stamp: string
    try {
      const handle = await open(to, 'r')
      try {
        stamp = stampOf(await handle.stat())
      } finally {
        await handle.close()
      }
    } catch (err) {
      this.drop(to)
      if (!isNotFound(err)) throw err
      return
    }
    for (const range of moved) range.trust = stamp
  }

  /** Forgets every range of a file. */
  drop (path: string): void {
    for (const [key, range] of this.ranges) if (range.path === path) this.ranges.delete(key)
  }

  /** Reads a piece from its range, or undefined when there is none or its bytes no longer match. */
  async read (key: string, cid: CID): Promise<Uint8Array | undefined> {
    const range = this.ranges.get(key)
    if (range == null) return undefined
    const handle = await this.openRange(key, range)
    if (handle == null) return undefined
    try {
      return await this.readChecked(key, cid, range, handle)
    } finally {
      await handle.close()
    }
  }

  /**
   * Opens a piece for sending: a trusted range is read from the file part by part, any other is
   * read and verified whole first. Resolves undefined when the piece cannot be read, and then
   * does not call `release`.
   */
  async openForUpload (key: string, cid: CID, release: () => void): Promise<PieceReader | undefined> {
    const range = this.ranges.get(key)
    if (range == null) return undefined
    const handle = await this.openRange(key, range)
    if (handle == null) return undefined
    try {
      if (await this.trusts(range, handle)) return fileReader(handle, range.length, release, range.offset)
      const bytes = await this.readChecked(key, cid, range, handle)
      await handle.close()
      return bytes == null ? undefined : memoryReader(bytes, release)
    } catch (err) {
      await handle.close().catch(() => {})
      throw err
    }
  }

  private async openRange (key: string, range: HeldRange): Promise<FileHandle | undefined> {
    try {
      return await open(range.path, 'r')
    } catch (err) {
      if (!isNotFound(err)) throw err
      this.forget(key, range, 'file of a piece is gone')
      return undefined
    }
  }

  /** Reads a range and hashes it unless the file is trusted. A range that fails is forgotten. */
  private async readChecked (key: string, cid: CID, range: HeldRange, handle: FileHandle): Promise<Uint8Array | undefined> {
    const trusted = await this.trusts(range, handle)
    const buffer = Buffer.allocUnsafe(range.length)
    const { bytesRead } = await handle.read(buffer, 0, range.length, range.offset)
    const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, bytesRead)
    if (bytesRead !== range.length) {
      this.forget(key, range, 'file of a piece is shorter than the piece')
      return undefined
    }
    if (trusted) return bytes
    if (!(await cidOfBytes(bytes)).equals(cid)) {
      this.forget(key, range, 'file of a piece changed; the piece is no longer served from it')
      return undefined
    }
    // One verified read covers the file until it changes.
    range.trust = stampOf(await handle.stat())
    return bytes
  }

  private async trusts (range: HeldRange, handle: FileHandle): Promise<boolean> {
    if (range.trust === 'writing') return true
    if (range.trust === undefined) return false
    return stampOf(await handle.stat()) === range.trust
  }

  private forget (key: string, range: HeldRange, message: string): void {
    if (this.ranges.get(key) === range) this.ranges.delete(key)
    if (this.reported.has(range.path)) return
    this.reported.add(range.path)
    this.log.warn({ cid: key, path: range.path }, message)
  }
}

/** Identifies a file version by inode, size and modification time. */
function stampOf (stats: { ino: number, size: number, mtimeMs: number }): string {
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}`
}
