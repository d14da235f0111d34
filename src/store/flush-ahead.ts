/**
 * Disk writes of a file started while the file is still being filled. Linux keeps written bytes
 * in the page cache and, on a machine with gigabytes of RAM, writes most of them out only at the
 * fsync that makes the finished file durable, which then waits for them. Starting an fdatasync
 * after every few tens of MiB written spreads the disk writes over the download.
 */
import type { FileHandle } from 'node:fs/promises'

/** Bytes written between two early fdatasync calls. */
export const FLUSH_EVERY_BYTES = 64 * 1024 * 1024

export class FlushAhead {
  private readonly file: FileHandle
  private readonly every: number
  private unflushed = 0
  private running: Promise<void> | undefined
  private failure: Error | undefined

  constructor (file: FileHandle, every = FLUSH_EVERY_BYTES) {
    this.file = file
    this.every = every
  }

  /** Counts bytes just written, and starts an fdatasync when enough are waiting and none runs. */
  wrote (bytes: number): void {
    this.unflushed += bytes
    if (this.unflushed < this.every || this.running != null) return
    this.unflushed = 0
    // Linux reports a failed write-out to one sync call of the file only, so `sync` raises it.
    this.running = this.file.datasync()
      .catch((err: Error) => { this.failure ??= err })
      .finally(() => { this.running = undefined })
  }

  /** Waits for the early fdatasync under way, then fsyncs the file. Raises the first failure of either. */
  async sync (): Promise<void> {
    await this.running
    await this.file.sync()
    if (this.failure != null) throw this.failure
  }
}
