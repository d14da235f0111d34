/**
 * containerd pulls through the proxy as a registry mirror: three "hosts",
 * each a private containerd with its own proxy and data dir, configured by
 * `dfnode containerd-config`, pull a 64 MiB four-layer image with ctr.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeContainerdConfig } from '../src/cli/containerd-config.ts'
import { TestContainerd } from '../e2e/registry/containerd.ts'
import { buildImage, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { TestProxy } from '../e2e/registry/proxy.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'

/**
 * Blob source behind the proxies. With 'origin' (OriginBlobSource) each proxy
 * downloads each blob from the registry once; with 'swarm' the hosts share
 * one download per blob.
 */
const BACKEND = 'origin' as 'origin' | 'swarm'
const HOSTS = 3
const MiB = 1024 * 1024

describe('containerd through the proxy mirror', () => {
  let registry: TestRegistry
  let image: TestImage
  let work: string
  const proxies: TestProxy[] = []
  const containerds: TestContainerd[] = []

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-containerd-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [24 * MiB, 20 * MiB, 12 * MiB, 8 * MiB])
    await pushImage(registry.url, 'library/big', 'v1', image)
    for (let i = 0; i < HOSTS; i++) {
      // No default registry: requests without containerd's ?ns= would fail.
      proxies.push(await TestProxy.start({ registries: [{ host: registry.host, url: registry.url }] }))
      containerds.push(await TestContainerd.start())
    }
  })

  after(async () => {
    for (const containerd of containerds) await containerd.stop()
    for (const proxy of proxies) await proxy.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('pulls the image on every host', async () => {
    const reference = `${registry.host}/library/big:v1`
    const results = await Promise.all(containerds.map(async (containerd, i) => {
      const hostsDir = join(work, `hosts-${i}`)
      const { path: written } = await writeContainerdConfig({ registry: registry.host, dir: hostsDir, proxy: proxies[i]!.url, server: registry.url })
      assert.match(await readFile(written, 'utf8'), new RegExp(`\\[host\\."${proxies[i]!.url}"\\]`))
      return await containerd.ctr(['content', 'fetch', '--hosts-dir', hostsDir, reference])
    }))
    for (const result of results) assert.equal(result.code, 0, result.stderr)

    for (const [i, containerd] of containerds.entries()) {
      const listing = await containerd.ctr(['content', 'ls', '-q'])
      for (const blob of [...image.layers, image.config, image.manifest]) {
        assert.ok(listing.stdout.includes(blob.digest), `host ${i} lacks ${blob.digest}`)
      }
      // Every layer came through this host's proxy and its blob source.
      const lines = proxies[i]!.requests()
      for (const layer of image.layers) {
        const served = lines.filter(line => String(line.url).endsWith(`/blobs/${layer.digest}`) && line.status === 200)
        assert.ok(served.length >= 1, `host ${i} proxy did not serve ${layer.digest}`)
        assert.ok(served.every(line => line.route === 'p2p' || line.route === 'local'))
      }
      assert.ok(lines.some(line => String(line.url).includes('/manifests/') && line.route === 'direct'))
    }
  })

  it('reads each layer from the registry once per backend rule', async () => {
    const expected = BACKEND === 'swarm' ? 1 : HOSTS
    for (const layer of image.layers) {
      assert.equal(await registry.blobGets(layer.digest), expected, `registry GETs of ${layer.digest}`)
    }
  })
})
