/**
 * A registry that redirects blob reads to object storage with signed URLs
 * that differ on every request. The proxy keys blobs by digest, so clients
 * share downloads whatever the signature. It checks a client's storage URL
 * with the storage server before serving the blob that URL names.
 * Backend: OriginBlobSource.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request, ProxyAgent } from 'undici'
import { buildImage, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { TestProxy } from '../e2e/registry/proxy.ts'
import { RedirectFront } from '../e2e/registry/redirect-front.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

describe('proxy with a redirecting registry', () => {
  let registry: TestRegistry
  let front: RedirectFront
  let proxy: TestProxy
  let image: TestImage
  let work: string
  const repo = 'library/redirected'

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-redirect-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [2 * 1024 * 1024, 1024 * 1024, 512 * 1024])
    await pushImage(registry.url, repo, 'v1', image)
    front = new RedirectFront(registry)
    await front.start()
    // In forward mode, the client fetches the storage URLs itself, and the storage host is no
    // configured registry: a rule names it, as an operator who trusts it would.
    const storage = front.storageUrl.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    proxy = await TestProxy.start({ registry: front.url, rules: [{ match: `^${storage}/`, route: 'swarm' }] })
  })

  after(async () => {
    await proxy?.stop()
    await front?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('redirects each direct request to a differently signed URL', async () => {
    const layer = image.layers[0]!
    const locations = new Set<string>()
    for (let i = 0; i < 3; i++) {
      const response = await request(`${front.url}/v2/${repo}/blobs/${layer.digest}`)
      await response.body.dump()
      assert.equal(response.statusCode, 307)
      locations.add(String(response.headers.location))
    }
    assert.equal(locations.size, 3)
  })

  it('serves redirected blobs in mirror mode with one storage read', async () => {
    const layer = image.layers[0]!
    const path = `/docker/registry/v2/blobs/sha256/${layer.digest.slice(7, 9)}/${layer.digest.slice(7)}/data`
    const before = front.storageRequests.filter(entry => entry.path === path && entry.method === 'GET').length

    const bodies = await Promise.all(Array.from({ length: 4 }, async () => {
      const response = await request(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`)
      return { status: response.statusCode, body: Buffer.from(await response.body.arrayBuffer()) }
    }))
    for (const { status, body } of bodies) {
      assert.equal(status, 200)
      assert.equal(sha256(body), layer.digest)
    }
    const reads = front.storageRequests.filter(entry => entry.path === path && entry.method === 'GET').length - before
    assert.equal(reads, 1)
  })

  it('serves a signed storage URL through the forward proxy after checking it', async () => {
    const layer = image.layers[1]!
    const dispatcher = new ProxyAgent({ uri: proxy.url, proxyTunnel: false })
    try {
      const first = await request(front.signedUrl(layer.digest), { dispatcher })
      const firstBody = Buffer.from(await first.body.arrayBuffer())
      assert.equal(first.statusCode, 200)
      assert.equal(sha256(firstBody), layer.digest)
      assert.equal(proxy.requests().at(-1)?.route, 'p2p')

      // A second, differently signed URL of the same blob is served locally.
      const second = await request(front.signedUrl(layer.digest), { dispatcher })
      assert.equal(sha256(Buffer.from(await second.body.arrayBuffer())), layer.digest)
      assert.equal(proxy.requests().at(-1)?.route, 'local')
      const checks = front.storageRequests.filter(entry => entry.path.includes(layer.digest.slice(7)) && entry.range === 'bytes=0-0')
      assert.equal(checks.length, 2)
    } finally {
      await dispatcher.close()
    }
  })

  it('refuses a cached blob to a forged or expired storage URL', async () => {
    const layer = image.layers[1]!
    const dispatcher = new ProxyAgent({ uri: proxy.url, proxyTunnel: false })
    try {
      const forged = front.signedUrl(layer.digest).replace(/Signature=[0-9a-f]+/, `Signature=${'0'.repeat(64)}`)
      const response = await request(forged, { dispatcher })
      assert.equal(response.statusCode, 403)
      assert.match(await response.body.text(), /SignatureDoesNotMatch/)

      const expired = await request(front.signedUrl(layer.digest, -10), { dispatcher })
      assert.equal(expired.statusCode, 403)
      await expired.body.dump()
      assert.equal(proxy.requests().at(-1)?.route, 'direct')
    } finally {
      await dispatcher.close()
    }
  })

  it('passes the front\'s errors for missing blobs through', async () => {
    const response = await request(`${proxy.url}/v2/${repo}/blobs/sha256:${'ab'.repeat(32)}`)
    assert.equal(response.statusCode, 404)
    assert.match(await response.body.text(), /BLOB_UNKNOWN/)
  })
})
