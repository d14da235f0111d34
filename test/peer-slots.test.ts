/**
 * Requests in flight to one peer over all downloads of a process. A daemon
 * that downloads several contents from the same supernode at once keeps at
 * most 4 piece requests going to it. The supernode and the downloading engine
 * run in this process, on real libp2p nodes over loopback, so the test can
 * read how many uploads the supernode's piece server runs at each moment.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { silentLogger } from '../src/log.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { startSupernode, type SupernodeHandle } from '../src/supernode/start.ts'
import { Engine } from '../src/swarm/engine.ts'
import { TestOrigin } from './helpers/origin-server.ts'
import { testSupernodeConfig } from './helpers/supernode-config.ts'

const MiB = 1024 * 1024
const FILES = 6

describe('peer slots', () => {
  const origin = new TestOrigin()
  let dir = ''
  let base = ''
  let supernode: SupernodeHandle | undefined
  let engine: Engine | undefined

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-slots-'))
    base = await origin.start()
  })

  after(async () => {
    await engine?.stop()
    await supernode?.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('caps requests to one peer', async () => {
    const bodies = Array.from({ length: FILES }, () => randomBytes(4 * MiB))
    bodies.forEach((body, index) => { origin.files.set(`/slots-${index}.bin`, { body }) })

    // 1 MiB pieces sent at 8 MiB/s: every upload lasts long enough to overlap with the others.
    const config = testSupernodeConfig(join(dir, 'supernode'), { uploadRate: 8 * MiB })
    supernode = await startSupernode(config, silentLogger())
    const address = supernode.multiaddrs[0]
    assert.ok(address != null, 'the supernode has no listen address')
    engine = await Engine.create({ privateKey: await ephemeralIdentity(), dataDir: join(dir, 'peer'), listen: ['/ip4/127.0.0.1/tcp/0'], supernodes: [address], backSource: false, pieceSize: MiB, logger: silentLogger() })

    // The maximum of uploads the supernode runs at once, sampled while the downloads run.
    const server = supernode.engine.pieceServer
    let max = 0
    const sampler = setInterval(() => { max = Math.max(max, server.stats.active) }, 2)
    try {
      const downloads = await Promise.all(bodies.map(async (_, index) => await engine!.open({ url: `${base}/slots-${index}.bin` })))
      await Promise.all(downloads.map(async download => { await download.done }))
      for (const download of downloads) assert.equal(download.stats.fromSupernode, 4 * MiB)
    } finally {
      clearInterval(sampler)
    }
    assert.ok(max > 1, `the supernode never ran two uploads at once (max: ${max})`)
    assert.ok(max <= 4, `the supernode ran ${max} uploads at once to one peer`)
  })
})
