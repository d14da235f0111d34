/**
 * Benchmark origin: serves one file over HTTP/1.1 with single-range support
 * and counts the body bytes it sends. GET /__stats returns the counters as
 * JSON. Started inside the origin host's namespace:
 *
 *   node origin-server.ts --file PATH --host 198.18.0.1 --port 8080 [--path /file]
 *
 * It prints `listening http://HOST:PORT` once ready and stops on SIGTERM.
 */
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'

/** Counters returned by GET /__stats. */
export interface OriginStats {
  /** Body bytes written to responses of the file path. */
  bodyBytes: number
  /** Requests for the file path, HEAD included. */
  requests: number
  /** Requests that carried a Range header. */
  rangeRequests: number
}

export interface ByteRange {
  start: number
  /** Inclusive. */
  end: number
}

/**
 * Parses a single `bytes=` range against a file of `size` bytes. Returns
 * undefined for an absent or multi-range header (served whole, as RFC 9110
 * allows) and 'unsatisfiable' for a range outside the file.
 */
export function parseRange (header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header == null) return undefined
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (match == null) return undefined
  const [, first = '', last = ''] = match
  if (first === '' && last === '') return undefined

  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1)
  if (start >= size || end < start) return 'unsatisfiable'
  return { start, end }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      file: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      path: { type: 'string', default: '/file' }
    }
  })
  if (values.file == null || values.host == null || values.port == null) {
    throw new Error('missing option: origin-server.ts needs --file PATH --host ADDRESS --port PORT')
  }
  const file = values.file
  const filePath = values.path
  const { size, mtime } = await stat(file)
  const etag = `"${size.toString(16)}-${Math.floor(mtime.getTime()).toString(16)}"`
  const stats: OriginStats = { bodyBytes: 0, requests: 0, rangeRequests: 0 }

  const server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      process.stderr.write(`origin: ${req.method ?? ''} ${req.url ?? ''} failed: ${(err as Error).message}\n`)
      res.destroy()
    })
  })

  async function handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://origin')
    if (url.pathname === '/__stats') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(stats))
      return
    }
    if (url.pathname !== filePath) {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end(`not found: ${url.pathname}\n`)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' })
      res.end()
      return
    }

    stats.requests++
    if (req.headers.range != null) stats.rangeRequests++
    const range = parseRange(req.headers.range, size)
    const headers = { 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', etag, 'last-modified': mtime.toUTCString() }
    if (range === 'unsatisfiable') {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` })
      res.end()
      return
    }
    const start = range?.start ?? 0
    const end = range?.end ?? size - 1
    const length = size === 0 ? 0 : end - start + 1
    res.writeHead(range == null ? 200 : 206, {
      ...headers,
      'content-length': String(length),
      ...(range != null ? { 'content-range': `bytes ${start}-${end}/${size}` } : {})
    })
    if (req.method === 'HEAD' || length === 0) {
      res.end()
      return
    }

    const body = createReadStream(file, { start, end, highWaterMark: 256 * 1024 })
    body.on('data', (chunk) => { stats.bodyBytes += chunk.length })
    await pipeline(body, res)
  }

  server.listen(Number(values.port), values.host, () => {
    process.stdout.write(`listening http://${values.host ?? ''}:${values.port ?? ''}\n`)
  })
  process.on('SIGTERM', () => {
    server.close()
    server.closeAllConnections()
  })
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`origin: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
