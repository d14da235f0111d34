/**
 * containerd on three hosts pulls through `dfnode proxy` processes that share
 * blobs over the swarm: a supernode fetches each layer from the registry once.
 * Backend: SwarmBlobSource (the daemon's engine).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeContainerdConfig } from '../src/cli/containerd-config.ts'
import { TestContainerd } from '../e2e/registry/containerd.ts'
import { buildImage, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { ProxyProcess } from '../e2e/registry/proxy-process.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'
import { startSupernodeProcess, type DfnodeProcess } from './helpers/dfnode-process.ts'

const HOSTS = 3
const MiB = 1024 * 1024

describe('containerd through proxies on the swarm', () => {
  let registry: TestRegistry
  let image: TestImage
  let work: string
  let supernode: DfnodeProcess | undefined
  const proxies: ProxyProcess[] = []
  const containerds: TestContainerd[] = []

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-swarm-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [24 * MiB, 20 * MiB, 12 * MiB, 8 * MiB])
    await pushImage(registry.url, 'library/big', 'v1', image)

    const started = await startSupernodeProcess(join(work, 'supernode'))
    supernode = started.process
    for (let i = 0; i < HOSTS; i++) {
      proxies.push(await ProxyProcess.start([
        '--registry', registry.url,
        '--supernode', started.address,
        '--listen', '/ip4/127.0.0.1/tcp/0',
        '--data-dir', join(work, `host-${i}`)
      ]))
      containerds.push(await TestContainerd.start())
    }
  })

  after(async () => {
    for (const containerd of containerds) await containerd.stop()
    for (const proxy of proxies) await proxy.stop()
    await supernode?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('pulls the image on every host with one registry read per layer', async () => {
    const reference = `${registry.host}/library/big:v1`
    const results = await Promise.all(containerds.map(async (containerd, i) => {
      const hostsDir = join(work, `hosts-${i}`)
      await writeContainerdConfig({ registry: registry.host, dir: hostsDir, proxy: proxies[i]!.url, server: registry.url })
      return await containerd.ctr(['content', 'fetch', '--hosts-dir', hostsDir, reference])
    }))
    for (const result of results) assert.equal(result.code, 0, result.stderr)

    for (const [i, containerd] of containerds.entries()) {
      const listing = await containerd.ctr(['content', 'ls', '-q'])
      for (const blob of [...image.layers, image.config]) assert.ok(listing.stdout.includes(blob.digest), `host ${i} lacks ${blob.digest}`)
      const log = await readFile(join(work, `host-${i}`, 'logs', 'dfnode.log'), 'utf8')
      for (const layer of image.layers) {
        assert.match(log, new RegExp(`"url":"/v2/library/big/blobs/${layer.digest}","mode":"mirror","route":"(p2p|local)","status":200`), `host ${i} ${layer.digest}`)
      }
    }
    for (const layer of [...image.layers, image.config]) {
      assert.equal(await registry.blobGets(layer.digest), 1, `registry GETs of ${layer.digest}`)
    }
  })
})
