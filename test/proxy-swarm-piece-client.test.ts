/**
 * PieceClient.close() while piece requests wait for the stream to drain. A
 * download closes its clients when it finishes, and on a congested connection
 * a request's write may still be pending then. Its rejection must reach
 * request()'s caller: before that was so, the unhandled rejection ended the
 * `dfnode proxy` process (exit code 1, "Error: piece client closed") during
 * concurrent pulls under load. Two real libp2p nodes on loopback make every
 * write wait: the remote pauses the stream, so the send window fills.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { Stream } from '@libp2p/interface'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { digestToCid } from '../src/content/ids.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { createNode, type DfnodeLibp2p } from '../src/p2p/node.ts'
import { FramedStream } from '../src/swarm/frames.ts'
import { PieceClient } from '../src/swarm/piece-client.ts'
import { PIECE_PROTOCOL } from '../src/swarm/wire.ts'

/** Upper bound on requests sent while waiting for the send window to fill. */
const MAX_REQUESTS = 100_000

describe('piece client on a congested stream', () => {
  let server: DfnodeLibp2p
  let client: DfnodeLibp2p
  const pausedStreams: Stream[] = []

  before(async () => {
    server = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    client = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    // The remote accepts piece streams and pauses them, so it sends no window updates.
    await server.handle(PIECE_PROTOCOL, stream => {
      stream.pause()
      pausedStreams.push(stream)
    })
  })

  after(async () => {
    for (const stream of pausedStreams) stream.abort(new Error('test ended'))
    await client?.stop()
    await server?.stop()
  })

  it('closes without unhandled rejections while writes wait', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
    process.on('unhandledRejection', onUnhandled)
    try {
      const stream = await client.dialProtocol(server.getMultiaddrs()[0]!, PIECE_PROTOCOL)
      const key = digestToCid(`sha256:${'ab'.repeat(32)}`)
      const pieces = new PieceClient(new FramedStream(stream), { stallMs: 60_000 })

      // Send requests until the stream buffers them, so the latest ones wait for 'drain'.
      let sent = 0
      while (stream.writeBufferLength === 0 && sent < MAX_REQUESTS) {
        pieces.get(key, sent % 1000).catch(() => {})
        sent++
        if (sent % 1000 === 0) await nextTurn()
      }
      assert.ok(stream.writeBufferLength > 0, `the stream buffered nothing after ${sent} requests`)

      // The download ending calls close() without awaiting it, as Download.cleanup() does.
      void pieces.close()
      await nextTurn()
      await nextTurn()
      stream.abort(new Error('test ended'))
      assert.deepEqual(unhandled.map(reason => (reason as Error).message), [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
