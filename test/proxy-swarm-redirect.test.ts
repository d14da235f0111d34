/**
 * A registry that redirects blob reads to object storage with signed URLs that
 * differ on every request, pulled by three hosts whose `dfnode proxy` processes
 * share blobs over the swarm. The supernode reads each blob from the storage
 * once; later hosts get pieces from peers. Also: an object the storage lost,
 * and a proxy killed while a download is in progress.
 * Backend: SwarmBlobSource (the daemon's engine).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { get as httpGet } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { writeContainerdConfig } from '../src/cli/containerd-config.ts'
import { TestContainerd } from '../e2e/registry/containerd.ts'
import { buildImage, pushBlob, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { RedirectFront } from '../e2e/registry/redirect-front.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'
import { recordNameOf, TestSwarm } from '../e2e/registry/swarm.ts'

const HOSTS = 3
const MiB = 1024 * 1024
const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

describe('proxies on the swarm with a redirecting registry', () => {
  let registry: TestRegistry
  let front: RedirectFront
  let image: TestImage
  let work: string
  let swarm: TestSwarm | undefined
  const containerds: TestContainerd[] = []
  const repo = 'library/redirected'

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-swarm-redirect-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [5 * MiB, 3 * MiB, MiB + 512 * 1024])
    await pushImage(registry.url, repo, 'v1', image)
    front = new RedirectFront(registry)
    await front.start()

    // The supernode may fetch from the front and from the storage it redirects to, and from nothing else.
    swarm = await TestSwarm.start({
      dir: join(work, 'swarm'),
      hosts: HOSTS,
      allowOrigins: [new URL(front.url).host, new URL(front.storageUrl).host],
      proxyArgs: ['--registry', front.url],
      supernodeArgs: ['--piece-size', '1MiB']
    })
    for (let i = 0; i < HOSTS; i++) containerds.push(await TestContainerd.start())
  })

  after(async () => {
    for (const containerd of containerds) await containerd.stop()
    await swarm?.stop()
    await front?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  async function pull (i: number): Promise<void> {
    const hostsDir = join(work, `hosts-${i}`)
    const frontHost = new URL(front.url).host
    await writeContainerdConfig({ registry: frontHost, dir: hostsDir, proxy: swarm!.url(i), server: front.url })
    const result = await containerds[i]!.ctr(['content', 'fetch', '--hosts-dir', hostsDir, `${frontHost}/${repo}:v1`])
    assert.equal(result.code, 0, `host ${i}: ${result.stderr}\n${await swarm!.problems()}`)
  }

  it('reads each blob from the storage once for three hosts', async () => {
    // One host first, so the others find its pieces; then two at once.
    await pull(0)
    await Promise.all([pull(1), pull(2)])

    const blobs = [...image.layers, image.config]
    for (const blob of blobs) {
      assert.equal(front.storageGets(blob.digest), 1, `storage GETs of ${blob.digest}`)
      assert.equal(await registry.blobGets(blob.digest), 0, `registry GETs of ${blob.digest}`)
    }
    for (let i = 0; i < HOSTS; i++) {
      const listing = await containerds[i]!.ctr(['content', 'ls', '-q'])
      for (const blob of blobs) assert.ok(listing.stdout.includes(blob.digest), `host ${i} lacks ${blob.digest}`)
      for (const layer of image.layers) {
        const lines = await swarm!.waitRequests(i, `/v2/${repo}/blobs/${layer.digest}`, 1)
        assert.ok(lines.some(line => line.status === 200 && (line.route === 'p2p' || line.route === 'local')), `host ${i} served ${layer.digest} from the swarm`)
        const downloads = await swarm!.downloads(i, layer.digest)
        assert.equal(downloads.length, 1, `host ${i} downloads of ${layer.digest}`)
        assert.equal(downloads[0]!.fromOrigin, 0, `host ${i} origin bytes of ${layer.digest}`)
      }
    }

    // The later hosts got bytes from peers, not only from the supernode.
    for (const i of [1, 2]) {
      let fromPeers = 0
      for (const layer of image.layers) fromPeers += (await swarm!.downloads(i, layer.digest))[0]!.fromPeers
      assert.ok(fromPeers > 0, `host ${i} received no layer bytes from peers`)
    }
  })

  it('forwards the storage 404 for a lost object and caches nothing', async () => {
    const lost = (await buildImage(join(work, 'lost'), [2 * MiB])).layers[0]!
    await pushBlob(registry.url, repo, lost)
    front.lost.add(lost.digest)
    const url = `${swarm!.url(1)}/v2/${repo}/blobs/${lost.digest}`

    // The registry still lists the blob, so the proxy gets the front's redirect back and passes it on.
    const redirected = await request(url)
    await redirected.body.dump()
    assert.equal(redirected.statusCode, 307)
    const location = String(redirected.headers.location)
    assert.ok(location.startsWith(front.storageUrl), location)
    const missing = await request(location)
    assert.equal(missing.statusCode, 404)
    assert.match(await missing.body.text(), /NoSuchKey/)

    assert.ok(!(await swarm!.records(1)).includes(recordNameOf(lost.digest)), 'host record of the lost blob')
    assert.ok(!(await swarm!.records()).includes(recordNameOf(lost.digest)), 'supernode record of the lost blob')
    const failed = (await swarm!.supernodeLog()).filter(line => line.msg === 'seeding failed' && String(line.url).endsWith(lost.digest))
    assert.equal(failed.length, 1)

    // Once the object is back, the next request succeeds: the failure was not kept.
    front.lost.delete(lost.digest)
    const found = await request(url)
    assert.equal(found.statusCode, 200)
    assert.equal(sha256(Buffer.from(await found.body.arrayBuffer())), lost.digest)
    assert.equal(front.storageGets(lost.digest), 1)
  })

  it('serves verified bytes after a proxy crash mid-download', async () => {
    const blob = (await buildImage(join(work, 'crash'), [12 * MiB])).layers[0]!
    await pushBlob(registry.url, repo, blob)
    front.throttled.set(blob.digest, 4 * MiB)

    // Kill host 2 as soon as its first body bytes arrive, while the storage is still sending.
    await new Promise<void>((resolve, reject) => {
      let killing = false
      const req = httpGet(`${swarm!.url(2)}/v2/${repo}/blobs/${blob.digest}`, res => {
        res.once('data', () => {
          killing = true
          swarm!.kill(2).then(resolve, reject)
        })
        res.on('error', () => {})
      })
      req.on('error', err => { if (!killing) reject(err) })
    })
    assert.equal((await swarm!.downloads(2, blob.digest)).length, 0, 'the download ended before the crash')

    await swarm!.restart(2)
    const response = await request(`${swarm!.url(2)}/v2/${repo}/blobs/${blob.digest}`)
    const body = Buffer.from(await response.body.arrayBuffer())
    assert.equal(response.statusCode, 200)
    assert.equal(body.length, blob.size)
    assert.equal(sha256(body), blob.digest)

    // Pieces stored before the crash count as local; the storage was read once.
    const downloads = await swarm!.downloads(2, blob.digest)
    assert.equal(downloads.length, 1)
    assert.ok(downloads[0]!.fromLocal > 0, `fromLocal ${downloads[0]!.fromLocal}`)
    assert.equal(front.storageGets(blob.digest), 1)
  })
})
