/**
 * Provider records on the DHT: after a supernode has seeded a content, a
 * separate libp2p node finds the supernode as a provider of the content key
 * and of every piece CID.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { CID } from 'multiformats/cid'
import { cidOfBytes } from '../src/content/ids.ts'
import { taskKeyOf } from '../src/content/keys.ts'
import { choosePieceSize } from '../src/content/pieces.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { silentLogger } from '../src/log.ts'
import { createNode, toMultiaddr, type DfnodeLibp2p } from '../src/p2p/node.ts'
import { Discovery } from '../src/swarm/discovery.ts'
import { TestOrigin } from './helpers/origin-server.ts'
import { DfnodeProcess, startSupernodeProcess, type FetchSummary } from './helpers/dfnode-process.ts'

const MiB = 1024 * 1024

/** Time allowed for all provider records to appear, in ms. */
const RECORDS_DEADLINE_MS = 60_000

describe('DHT provider records', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let node: DfnodeLibp2p | undefined
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-dht-'))
    base = await origin.start()
  })

  after(async () => {
    await node?.stop()
    await Promise.all(processes.map(async child => await child.stop()))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('supernode provides the content key and every piece CID', async () => {
    const body = randomBytes(10 * MiB)
    origin.files.set('/records.bin', { body })
    const supernode = await startSupernodeProcess(join(dir, 'supernode'))
    processes.push(supernode.process)
    const peer = new DfnodeProcess(['fetch', `${base}/records.bin`, '-o', join(dir, 'records.out'), '--supernode', supernode.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, 'peer'), '--json'])
    processes.push(peer)
    const summary = await peer.json<FetchSummary>()
    assert.equal(summary.fromSupernode, body.byteLength)

    // The CIDs the supernode cut, computed here from the same bytes.
    const pieceSize = choosePieceSize(body.byteLength)
    const pieces: CID[] = []
    for (let offset = 0; offset < body.byteLength; offset += pieceSize) pieces.push(await cidOfBytes(body.subarray(offset, offset + pieceSize)))
    const { key } = await taskKeyOf(`${base}/records.bin`)
    assert.equal(summary.key, key.toString())

    // A node of its own queries the DHT, through the supernode, until every record is there.
    node = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await node.dial(toMultiaddr(supernode.address))
    const supernodeId = supernode.address.split('/p2p/')[1]
    const missing = new Set([key, ...pieces].map(cid => cid.toString()))
    const lookup = new Map([key, ...pieces].map(cid => [cid.toString(), cid]))
    const deadline = Date.now() + RECORDS_DEADLINE_MS
    while (missing.size > 0 && Date.now() < deadline) {
      for (const id of [...missing]) {
        try {
          for await (const provider of node.contentRouting.findProviders(lookup.get(id)!, { signal: AbortSignal.timeout(5000) })) {
            if (provider.id.toString() === supernodeId) {
              missing.delete(id)
              break
            }
          }
        } catch {
          // A lookup that timed out is repeated in the next round.
        }
      }
      if (missing.size > 0) await new Promise(resolve => setTimeout(resolve, 500))
    }
    assert.deepEqual([...missing], [], 'CIDs without a provider record of the supernode')
  })

  it('spaces background provides while busy', async () => {
    // A real node with its DHT. The wrapper around its provide only records when each call starts.
    const own = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    try {
      const started: number[] = []
      const provide = own.contentRouting.provide.bind(own.contentRouting)
      own.contentRouting.provide = async (cid, options) => {
        started.push(Date.now())
        await provide(cid, options)
      }
      const discovery = new Discovery(own, silentLogger())
      let busy = true
      discovery.setBusyCheck(() => busy)
      const cids = await Promise.all([1, 2, 3].map(async n => await cidOfBytes(new Uint8Array([n]))))
      const queued = Date.now()
      discovery.provideInBackground(cids)
      await new Promise(resolve => setTimeout(resolve, 1000))
      assert.equal(started.length, 0, 'no provide starts while busy within the spacing')

      busy = false
      const deadline = Date.now() + 10_000
      while (started.length < 3 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
      assert.equal(started.length, 3, 'once idle, the waiting provides run')
      assert.ok(started[0]! - queued >= 4000, `the first provide started ${started[0]! - queued} ms after it was queued`)
      assert.ok(started[2]! - started[0]! < 4000, 'once idle, the provides follow each other without the spacing')
      discovery.stop()
    } finally {
      await own.stop()
    }
  })
})
