/**
 * Dialling the supernode when a swarm starts. Every peer dials the supernode
 * at about the same time, often from one address (processes of one host,
 * hosts behind NAT), and a failed dial must not send a peer to the origin.
 * The supernode and the peers run in this process, as real libp2p nodes over
 * loopback, so every dial comes from 127.0.0.1 as in `npm run demo`.
 */
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { silentLogger } from '../src/log.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { startSupernode, type SupernodeHandle } from '../src/supernode/start.ts'
import { Engine } from '../src/swarm/engine.ts'
import { freePort } from '../e2e/lib/free-port.ts'
import { TestOrigin } from './helpers/origin-server.ts'
import { testSupernodeConfig } from './helpers/supernode-config.ts'

const MiB = 1024 * 1024

/** Peers that start together: more than the 5 connections per second from one address that libp2p accepts by default. */
const PEERS = 8

describe('supernode dial', () => {
  const origin = new TestOrigin()
  let dir = ''
  let base = ''
  const supernodes: SupernodeHandle[] = []
  const engines: Engine[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-dial-'))
    base = await origin.start()
  })

  after(async () => {
    await Promise.all(engines.map(async engine => { await engine.stop() }))
    for (const supernode of supernodes) await supernode.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('eight peers dialling at once all seed', async () => {
    const body = randomBytes(4 * MiB)
    origin.files.set('/burst.bin', { body })
    const supernode = await startSupernode(testSupernodeConfig(join(dir, 'burst-supernode')), silentLogger())
    supernodes.push(supernode)
    const address = supernode.multiaddrs[0]
    assert.ok(address != null, 'the supernode has no listen address')

    const peers = await Promise.all(Array.from({ length: PEERS }, async (_, index) => await Engine.create({
      privateKey: await ephemeralIdentity(),
      dataDir: join(dir, `burst-peer-${index}`),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      supernodes: [address],
      backSource: true,
      pieceSize: MiB,
      logger: silentLogger()
    })))
    engines.push(...peers)
    const downloads = await Promise.all(peers.map(async engine => await engine.open({ url: `${base}/burst.bin` })))
    await Promise.all(downloads.map(async download => { await download.done }))

    for (const [index, download] of downloads.entries()) assert.equal(download.stats.fromOrigin, 0, `peer ${index} fetched from the origin`)
    assert.equal(origin.served.get('/burst.bin'), body.byteLength, 'the origin served the file once')
  })

  it('names a port that is not libp2p', async () => {
    // An HTTP server listens where the supernode should be, as when a wrong port is configured.
    const http = createServer((_, res) => { res.end('not libp2p\n') })
    await new Promise<void>(resolve => http.listen(0, '127.0.0.1', resolve))
    try {
      const port = (http.address() as AddressInfo).port
      const engine = await Engine.create({
        privateKey: await ephemeralIdentity(),
        dataDir: join(dir, 'wrong-port-peer'),
        listen: ['/ip4/127.0.0.1/tcp/0'],
        supernodes: [`/ip4/127.0.0.1/tcp/${port}/p2p/12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ`],
        backSource: false,
        pieceSize: MiB,
        logger: silentLogger(),
        tuning: { seedDialDelaysMs: [] }
      })
      engines.push(engine)
      const download = await engine.open({ url: `${base}/absent.bin` })
      await assert.rejects(download.done, /the libp2p handshake failed \(.*\): check that the address is the libp2p port of a dfnode supernode/)
    } finally {
      await new Promise(resolve => http.close(resolve))
    }
  })

  it('dials a restarted supernode again', async () => {
    const body = randomBytes(2 * MiB)
    origin.files.set('/restart.bin', { body })
    const listen = `/ip4/127.0.0.1/tcp/${await freePort()}`
    const dataDir = join(dir, 'restart-supernode')
    const first = await startSupernode(testSupernodeConfig(dataDir, { listen: [listen] }), silentLogger())
    const address = first.multiaddrs[0]
    assert.ok(address != null, 'the supernode has no listen address')
    await first.stop()

    // The first dial finds nothing listening. The supernode is back, with the same key and port, before the second.
    const engine = await Engine.create({
      privateKey: await ephemeralIdentity(),
      dataDir: join(dir, 'restart-peer'),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      supernodes: [address],
      backSource: true,
      pieceSize: MiB,
      logger: silentLogger(),
      tuning: { seedDialDelaysMs: [3000] }
    })
    engines.push(engine)
    const download = await engine.open({ url: `${base}/restart.bin` })
    const again = await startSupernode(testSupernodeConfig(dataDir, { listen: [listen] }), silentLogger())
    supernodes.push(again)
    assert.equal(again.multiaddrs[0], address)
    await download.done

    assert.equal(download.stats.fromOrigin, 0, 'the peer fetched from the origin instead of dialling again')
    assert.equal(download.stats.fromSupernode, body.byteLength)
    assert.equal(origin.served.get('/restart.bin'), body.byteLength)
  })
})
