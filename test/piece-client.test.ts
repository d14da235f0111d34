/**
 * The piece client against real libp2p nodes on loopback whose piece
 * handlers misbehave on purpose. A real dfnode never stays alive while
 * ignoring requests or sends pieces out of order, so only a hand-written
 * handler can show how the client reacts.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { createNode, type DfnodeLibp2p } from '../src/p2p/node.ts'
import type { CID } from 'multiformats/cid'
import { cidOfBytes } from '../src/content/ids.ts'
import { FramedStream } from '../src/swarm/frames.ts'
import { PieceClient } from '../src/swarm/piece-client.ts'
import { PIECE_PROTOCOL, decodePieceRequest } from '../src/swarm/wire.ts'
import { ProtocolError, TimeoutError } from '../src/errors.ts'

describe('piece client', () => {
  let server: DfnodeLibp2p
  let client: DfnodeLibp2p
  let behaviour: 'silent' | 'out-of-order' | 'ends-early' | 'good' = 'silent'
  const piece = new Uint8Array(600 * 1024).fill(9)
  let key: CID

  before(async () => {
    key = await cidOfBytes(piece)
    server = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    client = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    await server.handle(PIECE_PROTOCOL, (stream) => {
      void (async () => {
        const framed = new FramedStream(stream)
        while (true) {
          const frame = await framed.read()
          if (frame == null) return
          const request = decodePieceRequest(frame)
          if (behaviour === 'silent' || request.t !== 'get') continue
          const index = behaviour === 'out-of-order' ? request.i + 1 : request.i
          await framed.write({ t: 'piece', i: index, n: piece.byteLength })
          // An empty data frame ends a piece early, which only a cancelled request allows.
          if (behaviour === 'ends-early') await framed.writeParts(piece.byteLength, async () => piece, { stop: () => true })
          else await framed.writeData(piece)
        }
      })().catch(() => {})
    })
    await client.peerStore.merge(server.peerId, { multiaddrs: server.getMultiaddrs() })
  })

  after(async () => {
    await client.stop()
    await server.stop()
  })

  const open = async (stallMs: number): Promise<PieceClient> => {
    const stream = await client.dialProtocol(server.peerId, PIECE_PROTOCOL)
    return new PieceClient(new FramedStream(stream), { stallMs })
  }

  it('aborts a stalled request', async () => {
    behaviour = 'silent'
    const pieces = await open(300)
    await assert.rejects(pieces.get(key, 0), (err: Error) => err instanceof TimeoutError && /peer sent nothing for 300 ms/.test(err.message))
    assert.equal(pieces.closed, true)
  })

  it('rejects pieces out of order', async () => {
    behaviour = 'out-of-order'
    const pieces = await open(5000)
    await assert.rejects(pieces.get(key, 3), (err: Error) => err instanceof ProtocolError && /out of order/.test(err.message))
  })

  it('rejects a piece ended early that was not cancelled', async () => {
    behaviour = 'ends-early'
    const pieces = await open(5000)
    await assert.rejects(pieces.get(key, 0), (err: Error) => err instanceof ProtocolError && /ended piece 0 early/.test(err.message))
  })

  it('pipelines requests in order', async () => {
    behaviour = 'good'
    const pieces = await open(5000)
    const results = await Promise.all([pieces.get(key, 0), pieces.get(key, 1), pieces.get(key, 2)])
    for (const result of results) {
      assert.ok(typeof result === 'object', `expected a piece, got ${String(result)}`)
      assert.deepEqual(result.bytes, piece)
      assert.ok(result.cid.equals(key), 'the CID hashed on arrival differs from the piece CID')
    }
    await pieces.close()
  })
})
