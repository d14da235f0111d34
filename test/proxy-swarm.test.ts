/**
 * containerd, curl and skopeo on three hosts pull through `dfnode proxy`
 * processes that share blobs over the swarm: a supernode fetches each blob
 * from the registry once. Also Range, HEAD, a zero-byte blob, a missing blob
 * and clients that disconnect mid-blob.
 * Backend: SwarmBlobSource (the daemon's engine).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { get as httpGet } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { writeContainerdConfig } from '../src/cli/containerd-config.ts'
import { TestContainerd } from '../e2e/registry/containerd.ts'
import { buildImage, pushBlob, pushImage, writeBlob, type BlobFile, type TestImage } from '../e2e/registry/image.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'
import { recordNameOf, TestSwarm } from '../e2e/registry/swarm.ts'

const HOSTS = 3
const MiB = 1024 * 1024
const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

interface CurlResult {
  status: number
  /** Header names in lowercase. */
  headers: Record<string, string>
  body: Buffer
  /** Body bytes curl received (its size_download). */
  downloaded: number
}

/** Runs curl with `args` against `url`, the body into `bodyFile`, and parses the final response's status and headers. */
async function curl (url: string, args: string[], bodyFile: string): Promise<CurlResult> {
  const headerFile = `${bodyFile}.headers`
  await rm(bodyFile, { force: true })
  const downloaded = await new Promise<string>((resolve, reject) => {
    execFile('curl', ['-sS', '--max-time', '60', '-D', headerFile, '-o', bodyFile, '-w', '%{size_download}', ...args, url], (err, out, stderr) => {
      if (err != null) reject(new Error(`curl ${url} failed: ${stderr}`, { cause: err }))
      else resolve(out)
    })
  })
  const lines = (await readFile(headerFile, 'utf8')).trim().split(/\r?\n/)
  const status = Number(/^HTTP\/[0-9.]+ ([0-9]{3})/.exec(lines[0] ?? '')?.[1])
  const headers: Record<string, string> = {}
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    if (colon > 0) headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  // With -I curl writes the headers to the output file too, so the body size comes from curl itself.
  const body = args.includes('-I') ? Buffer.alloc(0) : await readFile(bodyFile).catch(() => Buffer.alloc(0))
  return { status, headers, body, downloaded: Number(downloaded) }
}

/** GETs `url` and destroys the request after `after` body bytes. */
async function getAndDisconnect (url: string, after: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let received = 0
    const req = httpGet(url, res => {
      res.on('data', (chunk: Buffer) => {
        received += chunk.length
        if (received >= after) {
          req.destroy()
          resolve()
        }
      })
      res.on('end', () => { reject(new Error(`response of ${url} ended after ${received} bytes, before the disconnect at ${after}`)) })
      res.on('error', () => {})
    })
    req.on('error', err => { if (received < after) reject(err) })
  })
}

describe('proxies on the swarm', () => {
  let registry: TestRegistry
  let image: TestImage
  let work: string
  let swarm: TestSwarm | undefined
  const containerds: TestContainerd[] = []
  let ranged: BlobFile
  let empty: BlobFile
  let interrupted: BlobFile

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-swarm-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [24 * MiB, 20 * MiB, 12 * MiB, 8 * MiB])
    await pushImage(registry.url, 'library/big', 'v1', image)
    ranged = (await buildImage(join(work, 'ranged'), [6 * MiB])).layers[0]!
    await pushBlob(registry.url, 'library/big', ranged)
    empty = await writeBlob(join(work, 'image', 'blobs', 'sha256'), Buffer.alloc(0))
    await pushBlob(registry.url, 'library/big', empty)
    interrupted = (await buildImage(join(work, 'interrupted'), [16 * MiB])).layers[0]!
    await pushBlob(registry.url, 'library/big', interrupted)

    swarm = await TestSwarm.start({ dir: join(work, 'swarm'), hosts: HOSTS, allowOrigins: [registry.host], proxyArgs: ['--registry', registry.url] })
    for (let i = 0; i < HOSTS; i++) containerds.push(await TestContainerd.start())
  })

  after(async () => {
    for (const containerd of containerds) await containerd.stop()
    await swarm?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('pulls the image on every host with one registry read per layer', async () => {
    const reference = `${registry.host}/library/big:v1`
    const results = await Promise.all(containerds.map(async (containerd, i) => {
      const hostsDir = join(work, `hosts-${i}`)
      await writeContainerdConfig({ registry: registry.host, dir: hostsDir, proxy: swarm!.url(i), server: registry.url })
      return await containerd.ctr(['content', 'fetch', '--hosts-dir', hostsDir, reference])
    }))
    for (const result of results) assert.equal(result.code, 0, `${result.stderr}\n${await swarm!.problems()}`)

    for (const [i, containerd] of containerds.entries()) {
      const listing = await containerd.ctr(['content', 'ls', '-q'])
      for (const blob of [...image.layers, image.config]) assert.ok(listing.stdout.includes(blob.digest), `host ${i} lacks ${blob.digest}`)
      for (const layer of image.layers) {
        const lines = await swarm!.waitRequests(i, `/v2/library/big/blobs/${layer.digest}`, 1)
        assert.ok(lines.some(line => line.status === 200 && (line.route === 'p2p' || line.route === 'local')), `host ${i} ${layer.digest}`)
      }
    }
    for (const layer of [...image.layers, image.config]) {
      assert.equal(await registry.blobGets(layer.digest), 1, `registry GETs of ${layer.digest}`)
    }
  })

  it('answers Range requests from the swarm', async () => {
    const expected = await readFile(ranged.path)
    const url = `${swarm!.url(1)}/v2/library/big/blobs/${ranged.digest}`
    const body = join(work, 'range.body')

    // The first request of the blob on any host is ranged, across the boundary of the first two pieces.
    const across = await curl(url, ['-H', 'Range: bytes=4194000-4194999'], body)
    assert.equal(across.status, 206)
    assert.equal(across.headers['content-range'], `bytes 4194000-4194999/${ranged.size}`)
    assert.equal(across.headers['content-length'], '1000')
    assert.deepEqual(across.body, expected.subarray(4194000, 4195000))

    // Pieces are read from the store in 1 MiB parts: a range inside a piece across several of them.
    const parts = await curl(url, ['-H', 'Range: bytes=1048000-3146000'], body)
    assert.equal(parts.status, 206)
    assert.deepEqual(parts.body, expected.subarray(1048000, 3146001))

    const suffix = await curl(url, ['-H', 'Range: bytes=-10'], body)
    assert.equal(suffix.status, 206)
    assert.deepEqual(suffix.body, expected.subarray(expected.length - 10))

    const open = await curl(url, ['-H', `Range: bytes=${ranged.size - 5}-`], body)
    assert.equal(open.status, 206)
    assert.deepEqual(open.body, expected.subarray(expected.length - 5))

    const beyond = await curl(url, ['-H', `Range: bytes=${ranged.size}-`], body)
    assert.equal(beyond.status, 416)
    assert.equal(beyond.headers['content-range'], `bytes */${ranged.size}`)

    const lines = await swarm!.waitRequests(1, `/v2/library/big/blobs/${ranged.digest}`, 5)
    assert.deepEqual(lines.map(line => line.status), [206, 206, 206, 206, 416])
    assert.equal(lines[0]!.route, 'p2p')
    assert.equal(await registry.blobGets(ranged.digest), 1)

    // Each response closed the piece files it read once it ended. The download in the background
    // and its content hash may still have some open for a moment.
    let files = await swarm!.openPieceFiles(1)
    for (const deadline = Date.now() + 2000; files.length > 0 && Date.now() < deadline; files = await swarm!.openPieceFiles(1)) await sleep(100)
    assert.deepEqual(files, [])
  })

  it('answers HEAD of a blob with its size and no body', async () => {
    const body = join(work, 'head.body')
    // Host 1 has stored the blob since the Range test, and host 2 has not.
    for (const i of [1, 2]) {
      const head = await curl(`${swarm!.url(i)}/v2/library/big/blobs/${ranged.digest}`, ['-I'], body)
      assert.equal(head.status, 200, `host ${i}`)
      assert.equal(head.headers['content-length'], String(ranged.size), `host ${i}`)
      assert.equal(head.headers['docker-content-digest'], ranged.digest, `host ${i}`)
      assert.equal(head.downloaded, 0, `host ${i}`)
    }
    assert.ok(!(await swarm!.records(2)).includes(recordNameOf(ranged.digest)), 'HEAD started a download on host 2')
    assert.equal(await registry.blobGets(ranged.digest), 1)
  })

  it('serves a zero-byte blob', async () => {
    const body = join(work, 'empty.body')
    for (const i of [0, 2]) {
      const response = await curl(`${swarm!.url(i)}/v2/library/big/blobs/${empty.digest}`, [], body)
      assert.equal(response.status, 200, `host ${i}`)
      assert.equal(response.headers['content-length'], '0', `host ${i}`)
      assert.equal(response.body.length, 0, `host ${i}`)
      // NOTE: the route is 'local' when the swarm supplies an empty blob, since all of its zero bytes count as held.
      const lines = await swarm!.waitRequests(i, `/v2/library/big/blobs/${empty.digest}`, 1)
      assert.ok(['p2p', 'local'].includes(String(lines.at(-1)?.route)), `host ${i}`)
    }
    const emptyRange = await curl(`${swarm!.url(0)}/v2/library/big/blobs/${empty.digest}`, ['-H', 'Range: bytes=0-'], body)
    assert.equal(emptyRange.status, 416)
    assert.equal(await registry.blobGets(empty.digest), 1)
  })

  it('returns 404 for a missing blob and caches nothing', async () => {
    const missing = `sha256:${'0'.repeat(63)}1`
    const body = join(work, 'missing.body')
    for (let i = 0; i < 2; i++) {
      const response = await curl(`${swarm!.url(0)}/v2/library/big/blobs/${missing}`, [], body)
      assert.equal(response.status, 404)
      assert.match(response.body.toString(), /BLOB_UNKNOWN/)
    }
    const head = await curl(`${swarm!.url(0)}/v2/library/big/blobs/${missing}`, ['-I'], body)
    assert.equal(head.status, 404)

    assert.ok(!(await swarm!.records(0)).includes(recordNameOf(missing)), 'host record of the missing blob')
    assert.ok(!(await swarm!.records()).includes(recordNameOf(missing)), 'supernode record of the missing blob')
    const seeds = (await swarm!.supernodeLog()).filter(line => line.msg === 'seed request' && String(line.url).endsWith(missing))
    assert.deepEqual(seeds, [])
  })

  it('copies an image with skopeo through the mirror', async () => {
    const small = await buildImage(join(work, 'small'), [3 * MiB, MiB])
    await pushImage(registry.url, 'library/small', 'v1', small)
    const conf = join(work, 'registries.conf')
    await writeFile(conf, [
      '[[registry]]',
      `location = "${registry.host}"`,
      'insecure = true',
      '[[registry.mirror]]',
      `location = "${new URL(swarm!.url(2)).host}"`,
      'insecure = true',
      ''
    ].join('\n'))
    const out = join(work, 'skopeo-copy')
    const result = await new Promise<{ code: number, stderr: string }>(resolve => {
      const env: Record<string, string> = {}
      for (const [name, value] of Object.entries(process.env)) {
        if (value != null && !/^(https?|no)_proxy$/i.test(name)) env[name] = value
      }
      execFile('skopeo', ['--registries-conf', conf, 'copy', '--src-tls-verify=false', `docker://${registry.host}/library/small:v1`, `dir:${out}`], { env, timeout: 120_000 }, (err, _stdout, stderr) => {
        resolve({ code: err == null ? 0 : 1, stderr })
      })
    })
    assert.equal(result.code, 0, result.stderr)

    for (const blob of [...small.layers, small.config]) {
      const copied = await readFile(join(out, blob.digest.slice(7)))
      assert.equal(sha256(copied), blob.digest)
      assert.equal(await registry.blobGets(blob.digest), 1, `registry GETs of ${blob.digest}`)
    }
    for (const layer of small.layers) {
      const lines = await swarm!.waitRequests(2, `/v2/library/small/blobs/${layer.digest}`, 1)
      assert.ok(lines.some(line => line.status === 200 && line.route === 'p2p'), layer.digest)
    }
  })

  it('keeps serving whole blobs when clients disconnect mid-blob', async () => {
    const url = `${swarm!.url(1)}/v2/library/big/blobs/${interrupted.digest}`
    const path = `/v2/library/big/blobs/${interrupted.digest}`

    // Three clients leave at different points while two read to the end, all during the download.
    const [, , , first, second] = await Promise.all([
      getAndDisconnect(url, 64 * 1024),
      getAndDisconnect(url, MiB),
      getAndDisconnect(url, 5 * MiB),
      request(url).then(async response => ({ status: response.statusCode, body: Buffer.from(await response.body.arrayBuffer()) })),
      request(url).then(async response => ({ status: response.statusCode, body: Buffer.from(await response.body.arrayBuffer()) }))
    ])
    for (const response of [first, second]) {
      assert.equal(response.status, 200)
      assert.equal(response.body.length, interrupted.size)
      assert.equal(sha256(response.body), interrupted.digest)
    }

    // Afterwards the host serves the blob whole from its store, and a peer gets it whole from the swarm.
    const again = await request(url)
    assert.equal(sha256(Buffer.from(await again.body.arrayBuffer())), interrupted.digest)
    const peer = await request(`${swarm!.url(0)}${path}`)
    assert.equal(peer.statusCode, 200)
    assert.equal(sha256(Buffer.from(await peer.body.arrayBuffer())), interrupted.digest)

    const lines = await swarm!.waitRequests(1, path, 6)
    assert.equal(lines.filter(line => line.aborted === true).length, 3)
    assert.equal(lines.filter(line => line.status === 200 && line.aborted !== true).length, 3)
    // One download from the swarm; opening the held blob again logs a second line with every byte local.
    const downloads = await swarm!.downloads(1, interrupted.digest)
    assert.equal(downloads.filter(line => line.fromLocal === 0).length, 1)
    assert.ok(downloads.slice(1).every(line => line.fromLocal === interrupted.size))
    assert.equal(await registry.blobGets(interrupted.digest), 1)
    const health = await request(`${swarm!.url(1)}/healthz`)
    assert.equal(await health.body.text(), 'ok\n')
  })
})
