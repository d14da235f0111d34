/**
 * A BlobSource that downloads each blob straight from its origin, once per
 * digest however many clients ask at the same time, into a local directory.
 * Clients read while the download runs. The last byte of a blob is held back
 * until the whole blob matches its digest, and only verified blobs are kept.
 */
import { createHash } from 'node:crypto'
import { open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Dispatcher } from 'undici'
import { makeDirectory } from '../directories.ts'
import { OriginStatusError, OriginUnreachableError, StorageError, VerificationError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { writeAll } from '../store/atomic-file.ts'
import type { BlobHandle, BlobRequest, BlobSource } from './blob-source.ts'
import { discardBody, type Upstream } from './upstream.ts'

export interface OriginBlobSourceInit {
  /** Directory for blobs: verified ones in `sha256/<hex>`, downloads under way in `tmp/`. */
  directory: string
  upstream: Upstream
  logger: Logger
  /** Requests per download, each later one resuming with Range where the last broke off; default 3. */
  attempts?: number
}

/** Bytes read from disk per chunk handed to a reader. */
const READ_CHUNK = 256 * 1024
/** Bytes of an origin error body kept for the client. */
const MAX_ERROR_BODY = 64 * 1024

export class OriginBlobSource implements BlobSource {
  private readonly init: OriginBlobSourceInit
  private readonly downloads = new Map<string, Promise<Download>>()
  private readonly pumps = new Set<Promise<void>>()
  private readonly controller = new AbortController()

  constructor (init: OriginBlobSourceInit) {
    this.init = init
  }

  /** Creates the directories and removes downloads left over from an earlier run. */
  async start (): Promise<void> {
    await makeDirectory(join(this.init.directory, 'sha256'))
    await makeDirectory(join(this.init.directory, 'tmp'))
    for (const name of await readdir(join(this.init.directory, 'tmp'))) {
      await rm(join(this.init.directory, 'tmp', name), { force: true })
    }
  }

  /** Aborts every download and waits for them to clean up. */
  async stop (): Promise<void> {
    this.controller.abort()
    await Promise.allSettled([...this.pumps])
  }

  async open (request: BlobRequest): Promise<BlobHandle> {
    const hex = request.digest.slice('sha256:'.length)
    const finalPath = join(this.init.directory, 'sha256', hex)

    // 1. Join a download under way.
    const pending = this.downloads.get(request.digest)
    if (pending != null) return await (await pending).openHandle()

    // 2. Serve a verified blob from disk.
    const local = await openLocal(finalPath)
    if (local != null) return local

    // 3. Start a download that later requests for the digest share, unless
    //    another request started one while this one looked on disk.
    const raced = this.downloads.get(request.digest)
    if (raced != null) return await (await raced).openHandle()
    const started = this.startDownload(request, finalPath)
    this.downloads.set(request.digest, started)
    started.catch(() => { this.downloads.delete(request.digest) })
    return await (await started).openHandle()
  }

  private async startDownload (request: BlobRequest, finalPath: string): Promise<Download> {
    const url = new URL(request.url)
    const headers = { ...request.headers, 'accept-encoding': 'identity' }
    const { response } = await this.init.upstream.requestFollowing(url, { method: 'GET', headers, signal: this.controller.signal })
    if (response.statusCode !== 200) throw await originError(response, url, request.digest)
    const size = Number(response.headers['content-length'])
    if (!Number.isSafeInteger(size) || size < 0) {
      discardBody(response.body)
      throw new OriginUnreachableError(`origin ${url.host} sent blob ${request.digest} without a valid Content-Length (${String(response.headers['content-length'])}): it cannot be served in order`)
    }

    const tempPath = join(this.init.directory, 'tmp', `${request.digest.slice('sha256:'.length)}.${process.pid}.${Date.now()}.part`)
    const file = await open(tempPath, 'wx')
    const download = new Download(request.digest, size, tempPath, finalPath)
    const pump = this.pump(download, file, request, url, headers, response, finalPath)
      .finally(() => {
        this.pumps.delete(pump)
        this.downloads.delete(request.digest)
      })
    this.pumps.add(pump)
    return download
  }

  private async pump (download: Download, file: FileHandle, request: BlobRequest, url: URL, headers: Record<string, string>, first: Dispatcher.ResponseData, finalPath: string): Promise<void> {
    const attempts = this.init.attempts ?? 3
    const hash = createHash('sha256')
    const startedAt = performance.now()
    let body = first.body
    try {
      // 1. Write the body to the temporary file, resuming with Range after a break.
      for (let attempt = 1; ; attempt++) {
        try {
          for await (const chunk of body) {
            const bytes = chunk as Buffer
            if (download.written + bytes.length > download.size) throw new OriginUnreachableError(`origin ${url.host} sent more than the announced ${download.size} bytes of ${download.digest}`)
            hash.update(bytes)
            await writeAll(file, bytes, download.written, download.tempPath)
            download.advance(bytes.length)
          }
          if (download.written === download.size) break
          throw new OriginUnreachableError(`origin ${url.host} ended ${download.digest} at byte ${download.written} of ${download.size}`)
        } catch (err) {
          if (this.controller.signal.aborted || attempt >= attempts || err instanceof VerificationError || err instanceof StorageError) throw err
          this.init.logger.warn({ err, digest: download.digest, offset: download.written, attempt }, 'origin download broke off, resuming with Range')
          body = await this.resume(download, url, headers)
        }
      }

      // 2. Verify the whole blob, then publish it under its digest.
      const actual = `sha256:${hash.digest('hex')}`
      if (actual !== download.digest) throw new VerificationError(`blob from ${url.host}${url.pathname} hashes to ${actual}, not ${download.digest}: it was discarded`)
      await file.sync()
      await file.close()
      await rename(download.tempPath, finalPath)
      download.finish()
      this.init.logger.debug({ digest: download.digest, bytes: download.size, ms: Math.round(performance.now() - startedAt) }, 'origin download verified')
    } catch (err) {
      download.fail(err as Error)
      discardBody(body)
      await file.close().catch(() => {})
      await rm(download.tempPath, { force: true })
      if (!this.controller.signal.aborted) this.init.logger.warn({ err, digest: download.digest }, 'origin download failed')
    }
  }

  private async resume (download: Download, url: URL, headers: Record<string, string>): Promise<Dispatcher.ResponseData['body']> {
    const { response } = await this.init.upstream.requestFollowing(url, {
      method: 'GET',
      headers: { ...headers, range: `bytes=${download.written}-${download.size - 1}` },
      signal: this.controller.signal
    })
    const contentRange = response.headers['content-range']
    if (response.statusCode !== 206 || typeof contentRange !== 'string' || !contentRange.startsWith(`bytes ${download.written}-`)) {
      discardBody(response.body)
      throw new OriginUnreachableError(`origin ${url.host} responded to a resume of ${download.digest} at byte ${download.written} with status ${response.statusCode} and Content-Range ${String(contentRange)}, not 206 from that byte`)
    }
    return response.body
  }
}

/** Progress of one download, shared by every handle reading it. */
class Download {
  readonly digest: string
  readonly size: number
  readonly tempPath: string
  readonly finalPath: string
  written = 0
  verified = false
  error: Error | undefined
  private waiters: Array<() => void> = []

  constructor (digest: string, size: number, tempPath: string, finalPath: string) {
    this.digest = digest
    this.size = size
    this.tempPath = tempPath
    this.finalPath = finalPath
  }

  advance (bytes: number): void {
    this.written += bytes
    this.wake()
  }

  finish (): void {
    this.verified = true
    this.wake()
  }

  fail (err: Error): void {
    this.error = err
    this.wake()
  }

  /** Bytes below `end` that a reader may take now; the last byte waits for verification. */
  readyUntil (end: number): number {
    if (this.error != null) throw this.error
    if (this.verified) return end
    const limit = end < this.size ? this.written : Math.min(this.written, this.size - 1)
    return Math.min(limit, end)
  }

  /** Resolves at the next change of progress, or rejects when `signal` aborts. */
  async changed (signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(signal?.reason) }
      this.waiters.push(() => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      })
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  async openHandle (): Promise<BlobHandle> {
    // An empty blob has no last byte to hold back, so its handle waits for the verification itself.
    while (this.size === 0 && !this.verified) {
      if (this.error != null) throw this.error
      await this.changed()
    }

    // The temporary file is renamed once verified and removed once failed.
    let file: FileHandle
    try {
      file = await open(this.verified ? this.finalPath : this.tempPath, 'r')
    } catch (err) {
      if (this.error != null) throw this.error
      if (!this.verified || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      file = await open(this.finalPath, 'r')
    }
    return fileHandle(file, this.size, this.verified, this)
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter()
  }
}

async function openLocal (path: string): Promise<BlobHandle | undefined> {
  let file: FileHandle
  try {
    file = await open(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  const { size } = await file.stat()
  return fileHandle(file, size, true, undefined)
}

function fileHandle (file: FileHandle, size: number, local: boolean, download: Download | undefined): BlobHandle {
  let closed = false
  return {
    size,
    local,
    read: async function * (start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
      let position = start
      while (position < end) {
        const ready = download == null ? end : download.readyUntil(end)
        if (ready <= position) {
          await download?.changed(signal)
          continue
        }
        signal?.throwIfAborted()
        const length = Math.min(READ_CHUNK, ready - position)
        const buffer = Buffer.allocUnsafe(length)
        const { bytesRead } = await file.read(buffer, 0, length, position)
        if (bytesRead === 0) throw new OriginUnreachableError(`blob file ended at byte ${position} of ${size}`)
        position += bytesRead
        yield buffer.subarray(0, bytesRead)
      }
    },
    close (): void {
      if (closed) return
      closed = true
      file.close().catch(() => {})
    }
  }
}

async function originError (response: Dispatcher.ResponseData, url: URL, digest: string): Promise<OriginStatusError> {
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of response.body) {
    const bytes = chunk as Buffer
    if (length < MAX_ERROR_BODY) chunks.push(bytes.subarray(0, MAX_ERROR_BODY - length))
    length += bytes.length
    if (length >= MAX_ERROR_BODY) break
  }
  const body = Buffer.concat(chunks).toString('utf8')
  return new OriginStatusError(`origin ${url.host} responded to GET ${url.pathname} for ${digest} with status ${response.statusCode}`, response.statusCode, body)
}

/** Tells whether a verified copy of `digest` is in `directory`. */
export async function hasLocalBlob (directory: string, digest: string): Promise<boolean> {
  try {
    return (await stat(join(directory, 'sha256', digest.slice('sha256:'.length)))).isFile()
  } catch {
    return false
  }
}
