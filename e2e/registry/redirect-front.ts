/**
 * A front for a TestRegistry that behaves like a registry on object storage.
 * Blob GETs and HEADs get 307 to a storage URL whose signed query (Expires,
 * Signature, a nonce) differs on every request. A storage server serves the
 * registry's blob files at those URLs after checking the signature.
 * Everything else is relayed to the registry. Tests can make the storage
 * lose an object the registry still lists, or send one slowly.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import type { TestRegistry } from './registry.ts'

export interface StorageRequest {
  method: string
  /** Path without the query string. */
  path: string
  status: number
  range?: string
}

export class RedirectFront {
  /** URL of the front, to use as the registry. */
  url = ''
  /** URL of the storage server. */
  storageUrl = ''
  /** Requests the storage server received, with the status it sent. */
  readonly storageRequests: StorageRequest[] = []
  /** Digests whose storage object gets 404 NoSuchKey while the registry still lists the blob. */
  readonly lost = new Set<string>()
  /** Digests whose storage object is sent at this many bytes per second. */
  readonly throttled = new Map<string, number>()
  private readonly registry: TestRegistry
  private readonly key = randomBytes(32)
  private readonly front: Server
  private readonly storage: Server

  constructor (registry: TestRegistry) {
    this.registry = registry
    this.front = createServer((req, res) => { void this.handleFront(req, res).catch(() => res.destroy()) })
    this.storage = createServer((req, res) => { void this.handleStorage(req, res).catch(() => res.destroy()) })
  }

  async start (): Promise<void> {
    for (const server of [this.front, this.storage]) await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.front.address() as AddressInfo).port}`
    this.storageUrl = `http://127.0.0.1:${(this.storage.address() as AddressInfo).port}`
  }

  async stop (): Promise<void> {
    for (const server of [this.front, this.storage]) {
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }

  /** Counts the storage GETs of `digest` that got 200 or 206. */
  storageGets (digest: string): number {
    const path = storagePathOf(digest)
    return this.storageRequests.filter(entry => entry.method === 'GET' && entry.path === path && (entry.status === 200 || entry.status === 206)).length
  }

  /** Returns a freshly signed storage URL for `digest`. */
  signedUrl (digest: string, expiresInSeconds = 300): string {
    const path = storagePathOf(digest)
    const expires = String(Math.floor(Date.now() / 1000) + expiresInSeconds)
    const nonce = randomBytes(8).toString('hex')
    return `${this.storageUrl}${path}?Expires=${expires}&nonce=${nonce}&Signature=${this.sign(path, expires, nonce)}`
  }

  private sign (path: string, expires: string, nonce: string): string {
    return createHmac('sha256', this.key).update(`${path}\n${expires}\n${nonce}`).digest('hex')
  }

  private async handleFront (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url)
    const blob = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname)
    const headers: Record<string, string> = {}
    for (const [name, value] of Object.entries(req.headers)) {
      if (typeof value === 'string' && name !== 'host' && name !== 'connection') headers[name] = value
    }

    // Blob reads: check with the registry (existence, auth), then redirect.
    if (blob?.[1] != null && (req.method === 'GET' || req.method === 'HEAD')) {
      const check = await request(`${this.registry.url}${url.pathname}`, { method: 'HEAD', headers })
      await check.body.dump()
      if (check.statusCode !== 200) {
        const answer = await request(`${this.registry.url}${url.pathname}`, { method: 'GET', headers })
        res.writeHead(answer.statusCode, answer.headers as Record<string, string>)
        await pipeline(answer.body, res)
        return
      }
      res.writeHead(307, { location: this.signedUrl(blob[1]), 'content-length': 0 }).end()
      return
    }

    const answer = await request(`${this.registry.url}${url.pathname}${url.search}`, {
      method: (req.method ?? 'GET') as 'GET',
      headers,
      body: req.method === 'GET' || req.method === 'HEAD' ? null : req
    })
    const out: Record<string, string | string[]> = {}
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value != null && name !== 'connection' && name !== 'transfer-encoding' && name !== 'keep-alive') out[name] = value
    }
    res.writeHead(answer.statusCode, out)
    await pipeline(answer.body, res)
  }

  private async handleStorage (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.storageUrl)
    const record: StorageRequest = { method: req.method ?? 'GET', path: url.pathname, status: 0 }
    if (req.headers.range != null) record.range = req.headers.range
    this.storageRequests.push(record)
    const send = (status: number, body: string): void => {
      record.status = status
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) }).end(body)
    }

    // 1. Check the signature and expiry.
    const expires = url.searchParams.get('Expires') ?? ''
    const nonce = url.searchParams.get('nonce') ?? ''
    const signature = url.searchParams.get('Signature') ?? ''
    if (signature !== this.sign(url.pathname, expires, nonce) || Number(expires) * 1000 < Date.now()) {
      send(403, '<Error><Code>SignatureDoesNotMatch</Code></Error>')
      return
    }

    // 2. Serve the file with an optional single range.
    const digest = digestOfStoragePath(url.pathname)
    const file = join(this.registry.storage, url.pathname)
    let size: number
    try {
      size = (await stat(file)).size
    } catch {
      send(404, '<Error><Code>NoSuchKey</Code></Error>')
      return
    }
    if (digest != null && this.lost.has(digest)) {
      send(404, '<Error><Code>NoSuchKey</Code></Error>')
      return
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    let start = 0
    let end = size - 1
    let status = 200
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' }
    if (range != null) {
      start = Number(range[1])
      end = range[2] === '' ? size - 1 : Math.min(Number(range[2]), size - 1)
      if (start >= size) {
        send(416, '<Error><Code>InvalidRange</Code></Error>')
        return
      }
      status = 206
      headers['content-range'] = `bytes ${start}-${end}/${size}`
    }
    headers['content-length'] = size === 0 ? 0 : end - start + 1
    record.status = status
    res.writeHead(status, headers)
    if (req.method === 'HEAD' || size === 0) {
      res.end()
      return
    }
    const rate = digest != null ? this.throttled.get(digest) : undefined
    if (rate != null) {
      await pipeline(createReadStream(file, { start, end, highWaterMark: 64 * 1024 }), throttle(rate), res)
      return
    }
    await pipeline(createReadStream(file, { start, end }), res)
  }
}

/** Returns the storage path of a blob, as the registry's filesystem driver lays it out. */
export function storagePathOf (digest: string): string {
  const hex = digest.slice('sha256:'.length)
  return `/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`
}

function digestOfStoragePath (path: string): string | undefined {
  const match = /^\/docker\/registry\/v2\/blobs\/sha256\/[0-9a-f]{2}\/([0-9a-f]{64})\/data$/.exec(path)
  return match?.[1] != null ? `sha256:${match[1]}` : undefined
}

/** Passes chunks on, waiting after each as long as `bytesPerSecond` allows. */
function throttle (bytesPerSecond: number): Transform {
  return new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      sleep(Math.ceil(chunk.length / bytesPerSecond * 1000)).then(() => { callback(null, chunk) }, callback)
    }
  })
}
