import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, describe, it } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { pino } from 'pino'
import { OriginNotAllowedError, OriginResponseError, OriginStatusError, OriginUnreachableError, TimeoutError, UsageError } from '../src/errors.ts'
import type { Logger } from '../src/log.ts'
import { OriginClient, readAll, type OriginClientInit } from '../src/origin/client.ts'

const MiB = 1024 * 1024
const TEST_TIMEOUT = { timeout: 30_000 }

// Content served by the test origins: byte i is PATTERN[i % PATTERN_LENGTH]. The prime
// length keeps a shifted or repeated chunk from matching by accident.
const PATTERN_LENGTH = 65521
const WRITE_CHUNK = 64 * 1024
const PATTERN = randomBytes(PATTERN_LENGTH)
const PATTERN_TWICE = Buffer.concat([PATTERN, PATTERN, PATTERN])

/** Returns `length` (at most WRITE_CHUNK) content bytes from `offset`, without copying. */
function bytesAt (offset: number, length: number): Buffer {
  const from = offset % PATTERN_LENGTH
  return PATTERN_TWICE.subarray(from, from + length)
}

/** Returns content bytes [start, end) as one buffer, for comparisons. */
function expected (start: number, end: number): Buffer {
  const parts: Buffer[] = []
  for (let offset = start; offset < end; offset += WRITE_CHUNK) parts.push(bytesAt(offset, Math.min(WRITE_CHUNK, end - offset)))
  return Buffer.concat(parts)
}

interface RecordedRequest {
  url: string
  headers: IncomingHttpHeaders
}

interface TestOrigin {
  /** Base URL, e.g. http://127.0.0.1:12345 */
  base: string
  /** host:port */
  host: string
  requests: RecordedRequest[]
  /** Body bytes written by the handlers. */
  served: number
  /** Responses whose connection closed before the handler finished writing. */
  cutShort: number
  /** Handler runs, settled when a handler has returned. */
  handlers: Array<Promise<void>>
  close: () => Promise<void>
}

type Handler = (req: IncomingMessage, res: ServerResponse, origin: TestOrigin) => void | Promise<void>

const servers: TestOrigin[] = []
after(async () => {
  await Promise.all(servers.map(async origin => { await origin.close() }))
})

/** Starts a node:http origin on 127.0.0.1, port 0, that records requests and served body bytes. */
async function startOrigin (handler: Handler): Promise<TestOrigin> {
  const server: Server = createServer()
  const origin: TestOrigin = {
    base: '',
    host: '',
    requests: [],
    served: 0,
    cutShort: 0,
    handlers: [],
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => { resolve() }))
    }
  }
  server.on('request', (req, res) => {
    origin.requests.push({ url: req.url ?? '', headers: req.headers })
    origin.handlers.push(Promise.resolve(handler(req, res, origin)).catch(err => {
      res.destroy(err instanceof Error ? err : new Error(String(err)))
    }))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  origin.host = `127.0.0.1:${port}`
  origin.base = `http://${origin.host}`
  servers.push(origin)
  return origin
}

/** Waits until every handler started so far has returned. */
async function settled (origin: TestOrigin): Promise<void> {
  await Promise.all(origin.handlers)
}

/** Writes content bytes [from, to) with back-pressure; stops when the connection closes. */
async function writeContent (res: ServerResponse, origin: TestOrigin, from: number, to: number): Promise<boolean> {
  for (let offset = from; offset < to;) {
    if (res.destroyed) {
      origin.cutShort++
      return false
    }
    const length = Math.min(WRITE_CHUNK, to - offset)
    origin.served += length
    const flushed = res.write(bytesAt(offset, length))
    offset += length
    if (!flushed) {
      await new Promise<void>(resolve => {
        const done = (): void => {
          res.off('drain', done)
          res.off('close', done)
          resolve()
        }
        res.on('drain', done)
        res.on('close', done)
      })
    }
  }
  return true
}

interface ServeOptions {
  size: number
  /** Serve Range requests with 206. Without it, every response sends the whole content with 200. */
  ranges?: boolean
  /** Close the connection after this many body bytes of this response. */
  breakAfter?: number
  headers?: Record<string, string>
}

/** Serves the test content, honouring a single `bytes=a-b` or `bytes=a-` range when asked. */
async function serveContent (req: IncomingMessage, res: ServerResponse, origin: TestOrigin, options: ServeOptions): Promise<void> {
  const { size } = options
  let start = 0
  let end = size
  let status = 200

  const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
  if (options.ranges === true && range?.[1] !== undefined) {
    start = Number(range[1])
    end = range[2] === '' || range[2] === undefined ? size : Math.min(Number(range[2]) + 1, size)
    if (start >= size) {
      res.writeHead(416, { 'content-range': `bytes */${size}` })
      res.end()
      return
    }
    status = 206
  }

  const headers: Record<string, string> = {
    'content-type': 'application/octet-stream',
    'content-length': String(end - start),
    ...options.headers
  }
  if (status === 206) headers['content-range'] = `bytes ${start}-${end - 1}/${size}`
  res.writeHead(status, headers)

  const stopAt = options.breakAfter === undefined ? end : Math.min(end, start + options.breakAfter)
  const complete = await writeContent(res, origin, start, stopAt)
  if (!complete) return
  if (stopAt < end) {
    // A graceful close after the data: the client receives every byte written, then EOF.
    res.socket?.end()
    return
  }
  res.end()
}

/** Returns the body as one Buffer. */
async function collect (body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  for await (const chunk of body) chunks.push(chunk)
  return Buffer.concat(chunks)
}

/** Creates a pino logger that writes debug lines into an array. */
function captureLogger (): { logger: Logger, lines: Array<Record<string, unknown>>, text: () => string } {
  const raw: string[] = []
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'debug' }, {
    write (line: string) {
      raw.push(line)
      lines.push(JSON.parse(line) as Record<string, unknown>)
    }
  })
  return { logger, lines, text: () => raw.join('') }
}

/** Creates a client with short timeouts and back-off, closed after the test file. */
function client (init: OriginClientInit = {}): OriginClient {
  const created = new OriginClient({ backoffMs: 1, headersTimeoutMs: 5000, bodyTimeoutMs: 5000, ...init })
  after(async () => { await created.close() })
  return created
}

/**
 * Returns the V8 garbage collector function. Node exposes it only behind a flag, and
 * the memory test needs it to tell retained buffers from garbage not yet collected.
 */
function exposeGc (): () => void {
  setFlagsFromString('--expose-gc')
  return runInNewContext('gc') as () => void
}

/** Returns a port nothing listens on: one that a server just released. */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>(resolve => server.close(() => { resolve() }))
  return port
}

describe('origin client: redirects', () => {
  it('follows an absolute redirect to another origin', TEST_TIMEOUT, async () => {
    const storage = await startOrigin(async (req, res, origin) => { await serveContent(req, res, origin, { size: 10_000 }) })
    const registry = await startOrigin((_req, res) => {
      res.writeHead(307, { location: `${storage.base}/blobs/data?Signature=abc` })
      res.end()
    })

    const response = await client().open({ url: `${registry.base}/v2/blob`, headers: { authorization: 'Bearer t0k3n', 'x-trace': 'kept' } })
    const body = await collect(response.body)

    assert.equal(response.url, `${storage.base}/blobs/data?Signature=abc`)
    assert.equal(response.size, 10_000)
    assert.deepEqual(body, expected(0, 10_000))
    assert.equal(registry.requests.length, 1)
    assert.equal(storage.requests.length, 1)
    assert.equal(storage.served, 10_000)
    assert.equal(registry.requests[0]?.headers.authorization, 'Bearer t0k3n')
    assert.equal(storage.requests[0]?.headers.authorization, undefined, 'credentials must not follow a redirect to another origin')
    assert.equal(storage.requests[0]?.headers['x-trace'], 'kept')
  })

  it('follows relative redirects for every redirect status', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      const status = /^\/start\/(\d{3})$/.exec(req.url ?? '')?.[1]
      if (status !== undefined) {
        res.writeHead(Number(status), { location: '../content/file' })
        res.end()
        return
      }
      if (req.url === '/content/file') {
        await serveContent(req, res, self, { size: 5000 })
        return
      }
      res.writeHead(404)
      res.end()
    })
    const origins = client()

    for (const status of [301, 302, 303, 307, 308]) {
      const response = await origins.open({ url: `${origin.base}/start/${status}` })
      assert.equal(response.url, `${origin.base}/content/file`, `status ${status}`)
      assert.deepEqual(await collect(response.body), expected(0, 5000), `status ${status}`)
    }
    assert.equal(origin.requests.length, 10)
    assert.equal(origin.served, 5 * 5000)
  })

  it('keeps the range across a redirect', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      if (req.url === '/moved') {
        res.writeHead(302, { location: '/data' })
        res.end()
        return
      }
      await serveContent(req, res, self, { size: 4000, ranges: true })
    })

    const response = await client().open({ url: `${origin.base}/moved`, range: { start: 1000, end: 3000 } })

    assert.deepEqual(await collect(response.body), expected(1000, 3000))
    assert.equal(origin.requests[0]?.headers.range, 'bytes=1000-2999')
    assert.equal(origin.requests[1]?.headers.range, 'bytes=1000-2999')
    assert.equal(origin.served, 2000)
  })

  it('rejects too many redirects', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((req, res) => {
      const hop = Number(/^\/hop\/(\d+)/.exec(req.url ?? '')?.[1] ?? '0')
      res.writeHead(302, { location: `/hop/${hop + 1}?token=secret` })
      res.end()
    })

    await assert.rejects(client({ maxRedirects: 3 }).open({ url: `${origin.base}/hop/0?token=secret` }), (err: Error) => {
      assert.ok(err instanceof OriginUnreachableError, err.stack)
      assert.match(err.message, /too many redirects/)
      assert.ok(err.message.includes(`${origin.base}/hop/0`), err.message)
      assert.doesNotMatch(err.message, /secret/)
      return true
    })
    assert.equal(origin.requests.length, 4, 'the first request and 3 redirects')
  })

  it('rejects a redirect without Location', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(302)
      res.end()
    })

    await assert.rejects(client().open({ url: `${origin.base}/x` }), OriginResponseError)
    assert.equal(origin.requests.length, 1)
  })
})

describe('origin client: encoding', () => {
  it('asks for identity encoding', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 100 }) })

    const response = await client().open({ url: `${origin.base}/f`, headers: { 'Accept-Encoding': 'gzip, br' } })
    await collect(response.body)

    assert.equal(origin.requests[0]?.headers['accept-encoding'], 'identity')
    assert.equal(response.contentType, 'application/octet-stream')
  })

  it('rejects an encoded body without retrying', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: 100, headers: { 'content-encoding': 'gzip' } })
    })

    await assert.rejects(client().open({ url: `${origin.base}/f` }), (err: Error) => {
      assert.ok(err instanceof OriginResponseError, err.stack)
      assert.match(err.message, /Content-Encoding "gzip"/)
      return true
    })
    assert.equal(origin.requests.length, 1)
  })
})

describe('origin client: ranges', () => {
  it('reads a range answered with 206', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 100_000, ranges: true }) })

    const response = await client().open({ url: `${origin.base}/f`, range: { start: 100, end: 200 } })

    assert.equal(response.start, 100)
    assert.equal(response.size, 100_000)
    assert.equal(response.rangeIgnored, undefined)
    assert.deepEqual(await collect(response.body), expected(100, 200))
    assert.equal(origin.requests[0]?.headers.range, 'bytes=100-199')
    assert.equal(origin.served, 100)
  })

  it('reads an open-ended range', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 100_000, ranges: true }) })

    const response = await client().open({ url: `${origin.base}/f`, range: { start: 99_000 } })

    assert.deepEqual(await collect(response.body), expected(99_000, 100_000))
    assert.equal(origin.requests[0]?.headers.range, 'bytes=99000-')
    assert.equal(origin.served, 1000)
  })

  it('skips to the range when the origin ignores Range', TEST_TIMEOUT, async () => {
    const size = 64 * MiB
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size })
    })

    const response = await client().open({ url: `${origin.base}/f`, range: { start: 70_000, end: 200_000 } })
    const body = await collect(response.body)
    await settled(origin)

    assert.equal(response.start, 70_000)
    assert.equal(response.size, size)
    assert.equal(response.rangeIgnored, true)
    assert.deepEqual(body, expected(70_000, 200_000))
    assert.equal(origin.requests.length, 1)
    assert.equal(origin.cutShort, 1, 'the client must abort the rest of the body')
    assert.ok(origin.served < size / 2, `served ${origin.served} of ${size} bytes`)
  })

  it('skips to an open-ended range when the origin ignores Range', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 300_000 }) })

    const response = await client().open({ url: `${origin.base}/f`, range: { start: 123_457 } })

    assert.deepEqual(await collect(response.body), expected(123_457, 300_000))
    assert.equal(origin.served, 300_000)
  })

  it('rejects a 206 whose Content-Range does not match', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((req, res) => {
      const headers: Record<string, string> = req.url === '/missing' ? {} : { 'content-range': 'bytes 0-99/1000' }
      res.writeHead(206, { ...headers, 'content-length': '100' })
      res.end(bytesAt(0, 100))
    })
    const origins = client()

    await assert.rejects(origins.open({ url: `${origin.base}/wrong`, range: { start: 100, end: 200 } }), (err: Error) => {
      assert.ok(err instanceof OriginResponseError, err.stack)
      assert.match(err.message, /bytes 0-99\/1000/)
      assert.match(err.message, /bytes=100-199/)
      return true
    })
    await assert.rejects(origins.open({ url: `${origin.base}/missing`, range: { start: 100, end: 200 } }), OriginResponseError)
    assert.equal(origin.requests.length, 2, 'a mismatching range is not retried')
  })

  it('rejects a 206 that stops short of the range end', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 500, ranges: true }) })

    await assert.rejects(client().open({ url: `${origin.base}/f`, range: { start: 0, end: 1000 } }), (err: Error) => {
      assert.ok(err instanceof OriginResponseError, err.stack)
      assert.match(err.message, /bytes 0-499\/500/)
      return true
    })
  })

  it('reports 416 as a status error', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 500, ranges: true }) })

    await assert.rejects(client().open({ url: `${origin.base}/f`, range: { start: 600 } }), (err: Error) => {
      assert.ok(err instanceof OriginStatusError, err.stack)
      assert.equal(err.status, 416)
      return true
    })
    assert.equal(origin.requests.length, 1)
  })

  it('rejects invalid ranges before any request', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => { res.end() })
    const origins = client()

    await assert.rejects(origins.open({ url: `${origin.base}/f`, range: { start: -1 } }), UsageError)
    await assert.rejects(origins.open({ url: `${origin.base}/f`, range: { start: 10, end: 10 } }), UsageError)
    await assert.rejects(origins.open({ url: `${origin.base}/f`, range: { start: 1.5 } }), UsageError)
    assert.equal(origin.requests.length, 0)
  })
})

describe('origin client: error statuses', () => {
  it('does not retry 404 and keeps 4 KiB of its body', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('not here '.repeat(2000))
    })
    const origins = client({ retries: 3 })

    await assert.rejects(origins.open({ url: `${origin.base}/missing?X-Amz-Signature=s3cr3t` }), (err: Error) => {
      assert.ok(err instanceof OriginStatusError, err.stack)
      assert.equal(err.status, 404)
      assert.equal(err.body.length, 4096)
      assert.ok(err.body.startsWith('not here not here'))
      assert.ok(err.message.includes(`${origin.base}/missing`), err.message)
      assert.doesNotMatch(err.message, /s3cr3t/)
      return true
    })
    assert.equal(origin.requests.length, 1)

    // Nothing is cached: the same request goes to the origin again.
    await assert.rejects(origins.open({ url: `${origin.base}/missing` }), OriginStatusError)
    assert.equal(origin.requests.length, 2)
  })

  it('retries 500 with back-off, then reports it', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(500)
      res.end('database down')
    })
    const log = captureLogger()

    await assert.rejects(client({ retries: 2, logger: log.logger }).open({ url: `${origin.base}/f` }), (err: Error) => {
      assert.ok(err instanceof OriginStatusError, err.stack)
      assert.equal(err.status, 500)
      assert.equal(err.body, 'database down')
      assert.match(err.message, /after 2 retries/)
      return true
    })
    assert.equal(origin.requests.length, 3)

    const retries = log.lines.filter(line => line.msg === 'origin request failed, retrying')
    assert.deepEqual(retries.map(line => line.level), [40, 40], 'one warn line per retry')
    assert.deepEqual(retries.map(line => line.delayMs), [1, 2], 'the delay doubles each retry')
  })

  it('succeeds when a 503 clears up', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      if (self.requests.length === 1) {
        res.writeHead(503)
        res.end()
        return
      }
      await serveContent(req, res, self, { size: 2000 })
    })

    const response = await client({ retries: 2 }).open({ url: `${origin.base}/f` })

    assert.deepEqual(await collect(response.body), expected(0, 2000))
    assert.equal(origin.requests.length, 2)
  })
})

describe('origin client: connection failures', () => {
  it('retries a connection reset before the headers', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      if (self.requests.length === 1) {
        req.socket.destroy()
        return
      }
      await serveContent(req, res, self, { size: 3000 })
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f` })

    assert.deepEqual(await collect(response.body), expected(0, 3000))
    assert.equal(origin.requests.length, 2)
  })

  it('names the URL and cause when the connection is refused', TEST_TIMEOUT, async () => {
    const port = await closedPort()
    const log = captureLogger()

    await assert.rejects(client({ retries: 2, logger: log.logger }).open({ url: `http://127.0.0.1:${port}/blob?Signature=s3cr3t` }), (err: Error) => {
      assert.ok(err instanceof OriginUnreachableError, err.stack)
      assert.ok(err.message.includes(`http://127.0.0.1:${port}/blob`), err.message)
      assert.match(err.message, /ECONNREFUSED/)
      assert.match(err.message, /after 2 retries/)
      assert.doesNotMatch(err.message, /s3cr3t/)
      return true
    })
    assert.equal(log.lines.filter(line => line.msg === 'origin request failed, retrying').length, 2)
  })

  it('resumes a broken body with a range request', TEST_TIMEOUT, async () => {
    const size = MiB
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size, ranges: true, breakAfter: self.requests.length === 1 ? 300_000 : undefined })
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f` })
    const body = await collect(response.body)

    assert.equal(body.length, size)
    assert.ok(body.equals(expected(0, size)))
    assert.equal(origin.requests.length, 2)
    assert.equal(origin.requests[0]?.headers.range, undefined)
    assert.equal(origin.requests[1]?.headers.range, 'bytes=300000-')
    assert.equal(origin.served, size, 'every byte served once')
  })

  it('rejects resume into another version', TEST_TIMEOUT, async () => {
    // The content changes while the first body is on its way: the resumed response has another ETag.
    const size = MiB
    const origin = await startOrigin(async (req, res, self) => {
      const first = self.requests.length === 1
      await serveContent(req, res, self, { size, ranges: true, breakAfter: first ? 300_000 : undefined, headers: { etag: first ? '"v1"' : '"v2"' } })
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f` })
    await assert.rejects(collect(response.body), (err: Error) => {
      assert.ok(err instanceof OriginResponseError, String(err))
      assert.match(err.message, /changed between attempts \("v1", then "v2"\)/)
      return true
    })
    assert.equal(origin.requests.length, 2)
    assert.equal(origin.requests[1]?.headers.range, 'bytes=300000-')
    assert.equal(origin.requests[1]?.headers['if-range'], '"v1"')
  })

  it('resumes a broken range within the range', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: MiB, ranges: true, breakAfter: self.requests.length === 1 ? 100_000 : undefined })
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f`, range: { start: 1000, end: 500_000 } })
    const body = await collect(response.body)

    assert.ok(body.equals(expected(1000, 500_000)))
    assert.equal(origin.requests[1]?.headers.range, 'bytes=101000-499999')
    assert.equal(origin.served, 499_000)
  })

  it('resumes by skipping when the resumed answer is 200', TEST_TIMEOUT, async () => {
    const size = 400_000
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size, breakAfter: self.requests.length === 1 ? 150_000 : undefined })
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f` })
    const body = await collect(response.body)

    assert.equal(body.length, size)
    assert.ok(body.equals(expected(0, size)))
    assert.equal(origin.requests[1]?.headers.range, 'bytes=150000-')
    assert.equal(origin.served, 150_000 + size)
  })

  it('resumes a chunked 206 that ends early', TEST_TIMEOUT, async () => {
    const size = 10_000
    const origin = await startOrigin(async (req, res, self) => {
      if (self.requests.length > 1) {
        await serveContent(req, res, self, { size, ranges: true })
        return
      }
      // No Content-Length, so the body is chunked and ends cleanly short of its Content-Range.
      res.writeHead(206, { 'content-range': `bytes 0-${size - 1}/${size}` })
      await writeContent(res, self, 0, 4000)
      res.end()
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f`, range: { start: 0 } })
    const body = await collect(response.body)

    assert.ok(body.equals(expected(0, size)))
    assert.equal(origin.requests[1]?.headers.range, 'bytes=4000-')
    assert.equal(origin.served, size)
  })

  it('accepts a break after the last byte', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      // Chunked, so the reset before the final chunk reaches the client as a broken body.
      res.writeHead(206, { 'content-range': 'bytes 1000-1999/10000' })
      await writeContent(res, self, 1000, 2000)
      await new Promise(resolve => setImmediate(resolve))
      req.socket.destroy()
    })

    const response = await client({ retries: 2 }).open({ url: `${origin.base}/f`, range: { start: 1000, end: 2000 } })

    assert.deepEqual(await collect(response.body), expected(1000, 2000))
    assert.equal(origin.requests.length, 1, 'no request for an empty rest')
  })

  it('rejects a chunked 206 longer than its Content-Range', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (_req, res, self) => {
      res.writeHead(206, { 'content-range': 'bytes 0-999/10000' })
      await writeContent(res, self, 0, 2000)
      res.end()
    })

    const response = await client({ retries: 2 }).open({ url: `${origin.base}/f`, range: { start: 0, end: 1000 } })

    await assert.rejects(collect(response.body), (err: Error) => {
      assert.ok(err instanceof OriginResponseError, err.stack)
      assert.match(err.message, /more body bytes/)
      return true
    })
    assert.equal(origin.requests.length, 1)
  })

  it('gives up on a body that keeps breaking', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: 500_000, ranges: true, breakAfter: 1000 })
    })

    const response = await client({ retries: 2 }).open({ url: `${origin.base}/f?sig=1` })
    let received = 0
    await assert.rejects(async () => {
      for await (const chunk of response.body) received += chunk.byteLength
    }, (err: Error) => {
      assert.ok(err instanceof OriginUnreachableError, err.stack)
      assert.ok(err.message.includes(`${origin.base}/f`), err.message)
      assert.match(err.message, /after 2 retries/)
      return true
    })
    assert.equal(received, 3000, 'the bytes before each break are yielded once')
    assert.equal(origin.requests.length, 3)
    assert.equal(origin.served, 3000)
  })

  it('restarts the retry count after progress', TEST_TIMEOUT, async () => {
    const size = 6 * MiB
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size, ranges: true, breakAfter: 1.5 * MiB })
    })

    const response = await client({ retries: 1 }).open({ url: `${origin.base}/f` })
    const body = await collect(response.body)

    assert.ok(body.equals(expected(0, size)))
    assert.equal(origin.requests.length, 4)
    assert.equal(origin.served, size)
  })
})

describe('origin client: streaming', () => {
  it('keeps memory bounded on a large body', TEST_TIMEOUT, async () => {
    const size = 256 * MiB
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size }) })
    const collectGarbage = exposeGc()
    collectGarbage()
    const baseline = process.memoryUsage().arrayBuffers

    const response = await client().open({ url: `${origin.base}/large` })
    let received = 0
    let peak = 0
    let mismatches = 0
    for await (const chunk of response.body) {
      if (!Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).equals(bytesAt(received, chunk.byteLength))) mismatches++
      const before = received
      received += chunk.byteLength
      // Sample what stays allocated after a collection, every 16 MiB of body.
      if (Math.floor(before / (16 * MiB)) !== Math.floor(received / (16 * MiB))) {
        collectGarbage()
        peak = Math.max(peak, process.memoryUsage().arrayBuffers - baseline)
      }
    }

    assert.equal(received, size)
    assert.equal(mismatches, 0)
    // The server runs in this process too, so its socket buffers count; 48 MiB is still far below the 256 MiB body.
    assert.ok(peak < 48 * MiB, `${peak} bytes of buffers stayed allocated while streaming ${size} bytes`)
  })
})

describe('origin client: timeouts', () => {
  it('times out waiting for headers', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(() => { /* never answers */ })

    await assert.rejects(client({ headersTimeoutMs: 300 }).open({ url: `${origin.base}/hung?token=x` }), (err: Error) => {
      assert.ok(err instanceof TimeoutError, err.stack)
      assert.ok(err.message.includes(`${origin.base}/hung`), err.message)
      assert.match(err.message, /headers/)
      return true
    })
    assert.equal(origin.requests.length, 1, 'a timeout is not retried')
  })

  it('times out when the body stalls', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (_req, res, self) => {
      res.writeHead(200, { 'content-length': '100000' })
      await writeContent(res, self, 0, 5000)
      // Then nothing more: the connection stays open without sending.
    })

    const response = await client({ bodyTimeoutMs: 300 }).open({ url: `${origin.base}/stall` })
    let received = 0
    await assert.rejects(async () => {
      for await (const chunk of response.body) received += chunk.byteLength
    }, (err: Error) => {
      assert.ok(err instanceof TimeoutError, err.stack)
      assert.ok(err.message.includes(`${origin.base}/stall`), err.message)
      assert.match(err.message, /at byte 5000/)
      return true
    })
    assert.equal(received, 5000)
    assert.equal(origin.requests.length, 1)
  })
})

describe('origin client: allowed origins', () => {
  it('rejects a host that is not allowed before any request', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => { res.end() })
    const origins = client({ allowedOrigins: ['registry.example', 'localhost:5000'] })

    await assert.rejects(origins.open({ url: `${origin.base}/f` }), (err: Error) => {
      assert.ok(err instanceof OriginNotAllowedError, err.stack)
      assert.ok(err.message.includes(origin.host), err.message)
      assert.ok(err.message.includes('registry.example, localhost:5000'), err.message)
      return true
    })
    assert.equal(origin.requests.length, 0)
  })

  it('follows a redirect to a host not on the list', TEST_TIMEOUT, async () => {
    const storage = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 1000 }) })
    const registry = await startOrigin((_req, res) => {
      res.writeHead(302, { location: `${storage.base}/data` })
      res.end()
    })

    const response = await client({ allowedOrigins: [registry.host] }).open({ url: `${registry.base}/blob` })

    assert.deepEqual(await collect(response.body), expected(0, 1000))
    assert.equal(storage.requests.length, 1)
  })

  it('matches hosts, ports and wildcards', () => {
    const cases: Array<[string[] | undefined, string, boolean]> = [
      [undefined, 'http://anything.example/x', true],
      [['*'], 'https://anything.example/x', true],
      [[], 'http://127.0.0.1/x', false],
      [['registry.example'], 'https://Registry.Example:8443/x', true],
      [['registry.example:443'], 'https://registry.example/x', true],
      [['registry.example:443'], 'http://registry.example/x', false],
      [['registry.example:5000'], 'http://registry.example:5001/x', false],
      [['*.cdn.example'], 'https://eu.cdn.example/x', true],
      [['*.cdn.example'], 'https://cdn.example/x', false],
      [['*.cdn.example'], 'https://evilcdn.example/x', false],
      [['::1'], 'http://[::1]:8080/x', true],
      [['[::1]:8080'], 'http://[::1]:8080/x', true],
      [['[::1]:8080'], 'http://[::1]:8081/x', false]
    ]
    for (const [allowedOrigins, url, allowed] of cases) {
      const origins = new OriginClient(allowedOrigins === undefined ? {} : { allowedOrigins })
      if (allowed) {
        assert.doesNotThrow(() => { origins.checkAllowed(url) }, `${String(allowedOrigins)} ${url}`)
      } else {
        assert.throws(() => { origins.checkAllowed(url) }, OriginNotAllowedError, `${String(allowedOrigins)} ${url}`)
      }
    }
  })

  it('rejects invalid entries and URLs', () => {
    assert.throws(() => new OriginClient({ allowedOrigins: ['host/path'] }), /invalid allowed origin "host\/path"/)
    assert.throws(() => new OriginClient({ allowedOrigins: ['host:99999'] }), /invalid allowed origin/)
    assert.throws(() => { new OriginClient().checkAllowed('ftp://host/x') }, UsageError)
    assert.throws(() => { new OriginClient().checkAllowed('http://user:pw@host/x') }, UsageError)
  })
})

describe('origin client: abort', () => {
  it('aborts a body being read', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: 64 * MiB })
    })
    const controller = new AbortController()

    const response = await client().open({ url: `${origin.base}/f`, signal: controller.signal })
    let received = 0
    await assert.rejects(async () => {
      for await (const chunk of response.body) {
        received += chunk.byteLength
        if (received >= 100_000) controller.abort()
      }
    }, { name: 'AbortError' })
    await settled(origin)

    assert.ok(received >= 100_000)
    assert.equal(origin.cutShort, 1, 'the origin must see the connection close')
    assert.ok(origin.served < 32 * MiB, `served ${origin.served} bytes`)
  })

  it('aborts while waiting for headers', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(() => { /* never answers */ })
    const controller = new AbortController()

    const opened = client({ headersTimeoutMs: 60_000 }).open({ url: `${origin.base}/f`, signal: controller.signal })
    while (origin.requests.length === 0) await new Promise(resolve => setImmediate(resolve))
    controller.abort()

    await assert.rejects(opened, { name: 'AbortError' })
  })

  it('aborts the back-off between retries', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => {
      res.writeHead(500)
      res.end()
    })
    const controller = new AbortController()

    const opened = client({ retries: 3, backoffMs: 60_000 }).open({ url: `${origin.base}/f`, signal: controller.signal })
    while (origin.requests.length === 0) await new Promise(resolve => setImmediate(resolve))
    controller.abort()

    await assert.rejects(opened, { name: 'AbortError' })
    assert.equal(origin.requests.length, 1)
  })

  it('closes the connection when the reader stops early', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: 64 * MiB })
    })

    const response = await client().open({ url: `${origin.base}/f` })
    for await (const chunk of response.body) {
      assert.ok(chunk.byteLength > 0)
      break
    }
    await settled(origin)

    assert.equal(origin.cutShort, 1)
  })

  it('closes the connection of a body never iterated', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: 64 * MiB })
    })

    const response = await client().open({ url: `${origin.base}/f` })
    await response.body[Symbol.asyncIterator]().return?.()
    await settled(origin)

    assert.equal(origin.cutShort, 1)
  })
})

describe('origin client: logs', () => {
  it('logs requests without header values or query strings', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      if (self.requests.length === 1) {
        res.writeHead(502)
        res.end()
        return
      }
      await serveContent(req, res, self, { size: 100 })
    })
    const log = captureLogger()

    const response = await client({ logger: log.logger }).open({
      url: `${origin.base}/blob?X-Amz-Signature=querysecret`,
      headers: { Authorization: 'Bearer headersecret', Cookie: 'session=cookiesecret' }
    })
    await collect(response.body)

    const text = log.text()
    assert.doesNotMatch(text, /headersecret|cookiesecret|querysecret/)
    const responses = log.lines.filter(line => line.msg === 'origin response')
    assert.deepEqual(responses.map(line => [line.method, line.url, line.status]), [
      ['GET', `${origin.base}/blob`, 502],
      ['GET', `${origin.base}/blob`, 200]
    ])
    assert.equal(log.lines.filter(line => line.msg === 'origin request failed, retrying').length, 1)
  })
})

describe('origin client: inputs', () => {
  it('rejects header values with line breaks', TEST_TIMEOUT, async () => {
    const origin = await startOrigin((_req, res) => { res.end() })

    await assert.rejects(client().open({ url: `${origin.base}/f`, headers: { 'x-a': 'one\r\nx-b: two' } }), (err: Error) => {
      assert.ok(err instanceof UsageError, err.stack)
      assert.match(err.message, /"x-a"/)
      assert.doesNotMatch(err.message, /one|two/)
      return true
    })
    assert.equal(origin.requests.length, 0)
  })

  it('rejects invalid settings', () => {
    assert.throws(() => new OriginClient({ retries: -1 }), /retries: -1/)
    assert.throws(() => new OriginClient({ bodyTimeoutMs: 0 }), /bodyTimeoutMs: 0/)
  })
})

describe('readAll', () => {
  it('reads a body within the limit', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => { await serveContent(req, res, self, { size: 2000 }) })

    const response = await client().open({ url: `${origin.base}/f` })

    assert.deepEqual(await readAll(response.body, 2000), expected(0, 2000))
  })

  it('throws on a body over the limit and closes it', TEST_TIMEOUT, async () => {
    const origin = await startOrigin(async (req, res, self) => {
      await serveContent(req, res, self, { size: 64 * MiB })
    })

    const response = await client().open({ url: `${origin.base}/f` })

    await assert.rejects(readAll(response.body, 1000), (err: Error) => {
      assert.ok(err instanceof OriginResponseError, err.stack)
      assert.match(err.message, /limit of 1000 bytes/)
      return true
    })
    await settled(origin)
    assert.equal(origin.cutShort, 1)
  })
})
