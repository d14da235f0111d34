/**
 * Cancels on the piece protocol, between a real piece server (store, records,
 * upload limit) and a real piece client on two libp2p nodes over loopback.
 * The upload limit slows the server down so that a cancel reliably arrives
 * while a piece is queued or being sent.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { CID } from 'multiformats/cid'
import { cidOfBytes } from '../src/content/ids.ts'
import { silentLogger } from '../src/log.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { createNode, type DfnodeLibp2p } from '../src/p2p/node.ts'
import { ContentRecords } from '../src/store/content-records.ts'
import { PieceStore } from '../src/store/piece-store.ts'
import { FramedStream } from '../src/swarm/frames.ts'
import { PieceClient, type PieceResult } from '../src/swarm/piece-client.ts'
import { PieceServer } from '../src/swarm/piece-server.ts'
import { RateLimiter } from '../src/swarm/rate-limiter.ts'
import { PIECE_PROTOCOL } from '../src/swarm/wire.ts'

const MiB = 1024 * 1024
const PIECE_BYTES = 2 * MiB

/** Returns the bytes of a received piece, or the result itself when no piece came. */
function bytesOf (result: PieceResult | undefined): Uint8Array | string | undefined {
  return typeof result === 'object' ? result.bytes : result
}

describe('piece cancels', () => {
  let dir = ''
  let serverNode: DfnodeLibp2p
  let clientNode: DfnodeLibp2p
  let store: PieceStore
  let records: ContentRecords
  let server: PieceServer
  let key: CID
  const pieces = [randomBytes(PIECE_BYTES), randomBytes(PIECE_BYTES), randomBytes(PIECE_BYTES)]
  /** Uploads the server reported as finished: piece index and whether every byte went out. */
  const finished: Array<{ index: number, ok: boolean }> = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-cancel-'))
    const logger = silentLogger()
    store = new PieceStore({ dir, logger })
    records = new ContentRecords({ dir, logger })
    await store.start()
    await records.start()
    const cids = await Promise.all(pieces.map(async bytes => await cidOfBytes(bytes)))
    for (const [index, bytes] of pieces.entries()) await store.put(cids[index]!, bytes)
    key = await cidOfBytes(Buffer.concat(pieces))
    await records.set({ key, size: PIECE_BYTES * pieces.length, pieceSize: PIECE_BYTES, pieces: cids, updatedAt: Date.now() })

    serverNode = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    clientNode = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    // 1 MiB/s: a 2 MiB piece takes about a second to send.
    server = new PieceServer({ node: serverNode, store, records, logger, limiter: new RateLimiter(MiB) })
    server.setPolicy({
      decide: () => 'serve',
      finished: (_key, index, _peer, ok) => { finished.push({ index, ok }) }
    })
    await server.start()
    await clientNode.peerStore.merge(serverNode.peerId, { multiaddrs: serverNode.getMultiaddrs() })
  })

  after(async () => {
    await clientNode.stop()
    await server.stop()
    await serverNode.stop()
    await records.stop()
    await store.stop()
    await rm(dir, { recursive: true, force: true })
  })

  const open = async (): Promise<PieceClient> => {
    const stream = await clientNode.dialProtocol(serverNode.peerId, PIECE_PROTOCOL)
    return new PieceClient(new FramedStream(stream), { stallMs: 10_000 })
  }

  it('skips a cancelled queued request', async () => {
    finished.length = 0
    const uploadedBefore = server.stats.uploaded
    const client = await open()
    const results = [client.get(key, 0), client.get(key, 1), client.get(key, 2)]
    assert.equal(client.cancel(key, 1), true)
    const [first, second, third] = await Promise.all(results)
    assert.deepEqual(bytesOf(first), new Uint8Array(pieces[0]!))
    assert.equal(second, 'cancelled')
    assert.deepEqual(bytesOf(third), new Uint8Array(pieces[2]!))
    for (let wait = 0; wait < 200 && finished.length < 2; wait++) await sleep(10)
    assert.equal(server.stats.uploaded - uploadedBefore, 2 * PIECE_BYTES)
    // The policy never heard of the cancelled request: it was not decided on.
    assert.deepEqual(finished, [{ index: 0, ok: true }, { index: 2, ok: true }])
    assert.equal(client.cancel(key, 2), false)
    await client.close()
  })

  it('ends a piece mid-send', async () => {
    finished.length = 0
    const uploadedBefore = server.stats.uploaded
    const client = await open()
    const { promise: firstBytes, resolve } = Promise.withResolvers<void>()
    let received = 0
    const result = client.get(key, 0, count => { received += count; resolve() })
    await firstBytes
    assert.equal(client.cancel(key, 0), true)
    assert.equal(await result, 'cancelled')
    assert.ok(received < PIECE_BYTES, `received ${received} bytes of a cancelled piece`)
    // The server ends its upload just after its last frame. Wait for that, at most 2 s.
    for (let wait = 0; wait < 200 && finished.length === 0; wait++) await sleep(10)
    const sent = server.stats.uploaded - uploadedBefore
    assert.ok(sent > 0, `server sent ${sent} bytes of a cancelled piece`)
    assert.ok(sent < PIECE_BYTES, `server sent ${sent} bytes of a cancelled piece`)
    assert.deepEqual(finished, [{ index: 0, ok: false }])

    // The next piece on the same stream arrives whole.
    assert.deepEqual(bytesOf(await client.get(key, 1)), new Uint8Array(pieces[1]!))
    await client.close()
  })
})
