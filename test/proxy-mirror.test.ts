/**
 * Registry-mirror mode against a real docker-registry: pass-through, blob
 * serving, Range, HEAD, dedupe, ?ns=, bad input, disconnects and fallbacks.
 * Backend: OriginBlobSource (blobs straight from the registry, one download per proxy).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readdir, readFile, mkdtemp, rm } from 'node:fs/promises'
import { get as httpGet } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { VerificationError } from '../src/errors.ts'
import type { BlobHandle, BlobSource } from '../src/proxy/blob-source.ts'
import { buildImage, pushBlob, pushImage, writeBlob, type TestImage } from '../e2e/registry/image.ts'
import { TestProxy } from '../e2e/registry/proxy.ts'
import { freePort, TestRegistry } from '../e2e/registry/registry.ts'

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

async function getBytes (url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: Buffer }> {
  const response = await request(url, { method, headers })
  const body = Buffer.from(await response.body.arrayBuffer())
  return { status: response.statusCode, headers: response.headers, body }
}

/** Sends raw bytes and returns the raw response, for requests an HTTP client would not send. */
async function rawRequest (port: number, text: string): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => { socket.write(text) })
    const chunks: Buffer[] = []
    socket.on('data', chunk => chunks.push(chunk))
    socket.on('end', () => { resolve(Buffer.concat(chunks).toString('latin1')) })
    socket.on('error', reject)
    socket.setTimeout(10_000, () => { socket.destroy(new Error('raw request timed out')) })
  })
}

describe('proxy mirror mode', () => {
  let registry: TestRegistry
  let proxy: TestProxy
  let image: TestImage
  let work: string
  const repo = 'library/app'

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-mirror-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [3 * 1024 * 1024, 1024 * 1024, 700 * 1024, 300 * 1024])
    await pushImage(registry.url, repo, 'v1', image)
    proxy = await TestProxy.start({ registry: registry.url })
  })

  after(async () => {
    await proxy?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('passes manifests and /v2/ through', async () => {
    const base = await getBytes(`${proxy.url}/v2/`)
    assert.equal(base.status, 200)

    const manifest = await getBytes(`${proxy.url}/v2/${repo}/manifests/v1`, { accept: 'application/vnd.oci.image.manifest.v1+json' })
    assert.equal(manifest.status, 200)
    assert.deepEqual(manifest.body, image.manifestBytes)
    assert.equal(manifest.headers['docker-content-digest'], image.manifest.digest)
    const line = proxy.requests().find(entry => entry.url === `/v2/${repo}/manifests/v1`)
    assert.equal(line?.route, 'direct')
  })

  it('serves a blob once from the origin, then locally', async () => {
    const layer = image.layers[0]!
    const expected = await readFile(layer.path)

    const first = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
    assert.equal(first.status, 200)
    assert.equal(first.headers['content-length'], String(layer.size))
    assert.equal(first.headers['content-type'], 'application/octet-stream')
    assert.equal(first.headers['docker-content-digest'], layer.digest)
    assert.equal(sha256(first.body), layer.digest)
    assert.equal(first.body.length, expected.length)

    const second = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
    assert.equal(second.status, 200)
    assert.equal(sha256(second.body), layer.digest)

    assert.equal(await registry.blobGets(layer.digest), 1)
    const routes = proxy.requests().filter(entry => entry.url === `/v2/${repo}/blobs/${layer.digest}`).map(entry => entry.route)
    assert.deepEqual(routes, ['p2p', 'local'])
    const stored = await readdir(join(proxy.dataDir, 'blobs', 'sha256'))
    assert.ok(stored.includes(layer.digest.slice(7)))
  })

  it('shares one download among concurrent clients', async () => {
    const layer = image.layers[1]!
    const bodies = await Promise.all(Array.from({ length: 6 }, async () => await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)))
    for (const body of bodies) {
      assert.equal(body.status, 200)
      assert.equal(sha256(body.body), layer.digest)
    }
    assert.equal(await registry.blobGets(layer.digest), 1)
  })

  it('answers a single Range with 206', async () => {
    const layer = image.layers[2]!
    const expected = await readFile(layer.path)
    const url = `${proxy.url}/v2/${repo}/blobs/${layer.digest}`

    const middle = await getBytes(url, { range: 'bytes=100-199' })
    assert.equal(middle.status, 206)
    assert.equal(middle.headers['content-range'], `bytes 100-199/${layer.size}`)
    assert.equal(middle.headers['content-length'], '100')
    assert.deepEqual(middle.body, expected.subarray(100, 200))

    const suffix = await getBytes(url, { range: 'bytes=-10' })
    assert.equal(suffix.status, 206)
    assert.deepEqual(suffix.body, expected.subarray(expected.length - 10))

    const open = await getBytes(url, { range: `bytes=${layer.size - 5}-` })
    assert.equal(open.status, 206)
    assert.deepEqual(open.body, expected.subarray(expected.length - 5))
  })

  it('answers an unsatisfiable Range with 416', async () => {
    const layer = image.layers[2]!
    const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, { range: `bytes=${layer.size}-` })
    assert.equal(response.status, 416)
    assert.equal(response.headers['content-range'], `bytes */${layer.size}`)
  })

  it('leaves multi-range requests to the registry', async () => {
    const layer = image.layers[2]!
    const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, { range: 'bytes=0-9,20-29' })
    assert.equal(response.status, 206)
    assert.match(String(response.headers['content-type']), /^multipart\/byteranges/)
  })

  it('answers HEAD of a blob without a body', async () => {
    const layer = image.layers[3]!
    const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, {}, 'HEAD')
    assert.equal(response.status, 200)
    assert.equal(response.headers['content-length'], String(layer.size))
    assert.equal(response.headers['docker-content-digest'], layer.digest)
    assert.equal(response.body.length, 0)
  })

  it('serves a zero-byte blob', async () => {
    const empty = await writeBlob(join(work, 'image', 'blobs', 'sha256'), Buffer.alloc(0))
    await pushBlob(registry.url, repo, empty)
    const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${empty.digest}`)
    assert.equal(response.status, 200)
    assert.equal(response.headers['content-length'], '0')
    assert.equal(response.body.length, 0)

    const ranged = await getBytes(`${proxy.url}/v2/${repo}/blobs/${empty.digest}`, { range: 'bytes=0-' })
    assert.equal(ranged.status, 416)
  })

  it('returns 404 for a missing blob and caches nothing', async () => {
    const missing = `sha256:${'0'.repeat(63)}1`
    for (let i = 0; i < 2; i++) {
      const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${missing}`)
      assert.equal(response.status, 404)
      assert.match(response.body.toString(), /BLOB_UNKNOWN/)
    }
    assert.ok(!(await readdir(join(proxy.dataDir, 'blobs', 'sha256'))).includes(missing.slice(7)))
    assert.deepEqual(await readdir(join(proxy.dataDir, 'blobs', 'tmp')), [])
  })

  it('chooses the registry with ?ns= and removes it upstream', async () => {
    const layer = image.layers[3]!
    const named = await getBytes(`${proxy.url}/v2/${repo}/manifests/v1?ns=${registry.host}`, { accept: 'application/vnd.oci.image.manifest.v1+json' })
    assert.equal(named.status, 200)
    const blob = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}?ns=${registry.host}`)
    assert.equal(blob.status, 200)
    assert.equal(sha256(blob.body), layer.digest)
    const log = await registry.accessLog()
    assert.ok(log.length > 0)
    assert.ok(log.every(entry => !entry.path.includes('ns=')))

    const unknown = await getBytes(`${proxy.url}/v2/${repo}/manifests/v1?ns=other.example.com`)
    assert.equal(unknown.status, 403)
    const error = (JSON.parse(unknown.body.toString()) as { errors: Array<{ code: string, message: string }> }).errors[0]
    assert.equal(error?.code, 'DENIED')
    assert.match(error?.message ?? '', /registry "other\.example\.com" named by \?ns= is not configured/)
  })

  it('rejects malformed digests and dot segments with 400', async () => {
    const hex = 'a'.repeat(64)
    const cases = [
      `/v2/${repo}/blobs/sha256:${hex.toUpperCase()}`,
      `/v2/${repo}/blobs/sha256:${hex.slice(1)}`,
      `/v2/${repo}/blobs/sha256:${hex}0`,
      `/v2/${repo}/manifests/sha256:xyz`,
      `/v2/${repo}/../../blobs/sha256:${hex}`,
      `/v2/${repo}/%2e%2e/blobs/sha256:${hex}`
    ]
    for (const path of cases) {
      const answer = await rawRequest(proxy.server.address.port, `GET ${path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n`)
      assert.match(answer, /^HTTP\/1\.1 400 /, path)
      assert.match(answer, /(DIGEST_INVALID|NAME_INVALID)/, path)
    }
  })

  it('rejects oversized headers with 431 and keeps serving', async () => {
    const answer = await rawRequest(proxy.server.address.port, `GET /v2/ HTTP/1.1\r\nHost: proxy\r\nX-Big: ${'x'.repeat(40 * 1024)}\r\n\r\n`)
    assert.match(answer, /^HTTP\/1\.1 431 /)
    assert.match(answer, /raise maxHeaderSize in the --proxy-config file/)
    const after = await getBytes(`${proxy.url}/v2/`)
    assert.equal(after.status, 200)
  })

  it('survives a client that disconnects mid-blob', async () => {
    const big = await buildImage(join(work, 'big'), [8 * 1024 * 1024])
    const layer = big.layers[0]!
    await pushBlob(registry.url, repo, layer)

    await new Promise<void>((resolve, reject) => {
      const req = httpGet(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, res => {
        let received = 0
        res.on('data', (chunk: Buffer) => {
          received += chunk.length
          if (received > 256 * 1024) {
            req.destroy()
            resolve()
          }
        })
        res.on('error', () => {})
      })
      req.on('error', err => { if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err) })
    })

    const full = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
    assert.equal(full.status, 200)
    assert.equal(sha256(full.body), layer.digest)
    assert.ok(proxy.requests().some(entry => entry.url === `/v2/${repo}/blobs/${layer.digest}` && entry.aborted === true))
  })

  it('passes uploads through to the registry', async () => {
    const blob = await writeBlob(join(work, 'image', 'blobs', 'sha256'), Buffer.from('uploaded through the proxy'))
    await pushBlob(proxy.url, 'library/uploaded', blob)
    const direct = await getBytes(`${registry.url}/v2/library/uploaded/blobs/${blob.digest}`)
    assert.equal(direct.status, 200)
    assert.equal(direct.body.toString(), 'uploaded through the proxy')
  })

  it('logs one line per request without query strings', async () => {
    await getBytes(`${proxy.url}/v2/${repo}/manifests/v1?ns=${registry.host}&secret=value`)
    const lines = proxy.requests()
    assert.ok(lines.length > 10)
    for (const line of lines) {
      assert.equal(typeof line.method, 'string')
      assert.equal(typeof line.status, 'number')
      assert.equal(typeof line.bytes, 'number')
      assert.equal(typeof line.ms, 'number')
      assert.ok(['p2p', 'local', 'direct', 'proxy'].includes(String(line.route)), String(line.route))
      assert.ok(!String(line.url).includes('?'), String(line.url))
    }
    assert.ok(!proxy.rawLog.join('').includes('secret=value'))
  })
})

describe('proxy upstream failures', () => {
  let registry: TestRegistry
  let work: string
  let image: TestImage
  const repo = 'library/fallback'

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-fallback-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [2 * 1024 * 1024])
    await pushImage(registry.url, repo, 'v1', image)
  })

  after(async () => {
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('answers 502 when the registry is unreachable', async () => {
    const proxy = await TestProxy.start({ registry: `http://127.0.0.1:${await freePort()}` })
    try {
      const response = await getBytes(`${proxy.url}/v2/${repo}/manifests/v1`)
      assert.equal(response.status, 502)
      assert.match(response.body.toString(), /did not answer/)
    } finally {
      await proxy.stop()
    }
  })

  it('passes upstream error statuses and bodies back', async () => {
    const proxy = await TestProxy.start({ registry: registry.url })
    try {
      const response = await getBytes(`${proxy.url}/v2/${repo}/manifests/missing-tag`)
      assert.equal(response.status, 404)
      assert.match(response.body.toString(), /MANIFEST_UNKNOWN/)
    } finally {
      await proxy.stop()
    }
  })

  // The failing blob sources below are test doubles: no real swarm can be made
  // to fail at an exact moment, and these cases are about the proxy's reaction.
  it('falls back to the registry when the blob source cannot open', async () => {
    const failing: BlobSource = { open: async () => { throw new Error('no peer has it') } }
    const proxy = await TestProxy.start({ registry: registry.url, blobSource: () => failing })
    try {
      const layer = image.layers[0]!
      const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
      assert.equal(response.status, 200)
      assert.equal(sha256(response.body), layer.digest)
      assert.equal(proxy.requests().at(-1)?.route, 'direct')
    } finally {
      await proxy.stop()
    }
  })

  it('resumes from the registry with Range after a mid-stream failure', async () => {
    const layer = image.layers[0]!
    const bytes = await readFile(layer.path)
    const cut = 1024 * 1024 + 17
    const breaking: BlobSource = {
      open: async (): Promise<BlobHandle> => ({
        size: bytes.length,
        read: async function * (start: number) {
          yield bytes.subarray(start, cut)
          throw new Error('peer went away')
        },
        close () {}
      })
    }
    const proxy = await TestProxy.start({ registry: registry.url, blobSource: () => breaking })
    try {
      const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
      assert.equal(response.status, 200)
      assert.equal(response.body.length, bytes.length)
      assert.equal(sha256(response.body), layer.digest)
      const log = await registry.accessLog()
      assert.ok(log.some(entry => entry.method === 'GET' && entry.status === 206 && entry.bytes === bytes.length - cut))
    } finally {
      await proxy.stop()
    }
  })

  it('client reset is no source failure', async () => {
    const layer = image.layers[0]!
    // A source of 64 MiB in 1 MiB parts, so that a write is pending when the client resets.
    const part = Buffer.alloc(1024 * 1024, 7)
    const large: BlobSource = {
      open: async (): Promise<BlobHandle> => ({
        size: 64 * part.length,
        read: async function * (start: number, end: number) {
          for (let at = start; at < end; at += part.length) yield part.subarray(0, Math.min(part.length, end - at))
        },
        close () {}
      })
    }
    const proxy = await TestProxy.start({ registry: registry.url, blobSource: () => large })
    try {
      const before = (await registry.accessLog()).filter(entry => entry.status === 206).length
      const { port } = new URL(proxy.url)
      const socket = connect(Number(port), '127.0.0.1')
      await once(socket, 'connect')
      socket.write(`GET /v2/${repo}/blobs/${layer.digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)
      await once(socket, 'data')
      // The client stops reading, the socket buffers fill, then it resets the connection.
      socket.pause()
      await sleep(200)
      socket.resetAndDestroy()
      // The access-log line is written when the response closes.
      for (let i = 0; i < 100 && proxy.requests().length === 0; i++) await sleep(50)
      assert.equal(proxy.requests().length, 1, 'the reset request was logged')
      await sleep(200)

      assert.equal(proxy.lines.filter(line => /resuming from the upstream/.test(line.msg)).length, 0, 'the proxy took the reset for a failed source')
      assert.equal((await registry.accessLog()).filter(entry => entry.status === 206).length, before, 'the registry got a Range request')
      const response = await getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
      assert.equal(response.status, 200, 'the proxy still serves')
      assert.equal(response.body.length, 64 * part.length)
    } finally {
      await proxy.stop()
    }
  })

  it('closes the response when bytes fail verification', async () => {
    const layer = image.layers[0]!
    const bytes = await readFile(layer.path)
    const corrupt: BlobSource = {
      open: async (): Promise<BlobHandle> => ({
        size: bytes.length,
        read: async function * (start: number) {
          yield bytes.subarray(start, 1000)
          throw new VerificationError('piece 1 does not match its CID')
        },
        close () {}
      })
    }
    const proxy = await TestProxy.start({ registry: registry.url, blobSource: () => corrupt })
    try {
      await assert.rejects(getBytes(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`))
      const after = await getBytes(`${proxy.url}/v2/`)
      assert.equal(after.status, 200)
    } finally {
      await proxy.stop()
    }
  })
})
