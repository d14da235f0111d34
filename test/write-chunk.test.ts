/**
 * writeChunk: a buffer may be overwritten once the write resolves. Real TCP
 * sockets on loopback, with a receiver that reads late or not at all.
 */
import { once } from 'node:events'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { writeChunk } from '../src/write-chunk.ts'

const MiB = 1024 * 1024

/** Opens a connected pair of sockets on loopback. The accepted side starts paused. */
async function socketPair (): Promise<{ sender: net.Socket, receiver: net.Socket, close: () => void }> {
  const server = net.createServer({ pauseOnConnect: true })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const sender = net.connect(port, '127.0.0.1')
  await once(sender, 'connect')
  const [receiver] = await accepted
  return { sender, receiver, close: () => { sender.destroy(); receiver.destroy(); server.close() } }
}

describe('writeChunk', () => {
  it('reused buffer arrives intact', async () => {
    const { sender, receiver, close } = await socketPair()
    try {
      // 8 MiB per write is more than loopback's socket buffers take while the receiver is paused.
      const buffer = Buffer.alloc(8 * MiB)
      const writes = 4
      const received: Buffer[] = []
      receiver.on('data', (chunk: Buffer) => received.push(chunk))
      const sent = (async () => {
        for (let i = 0; i < writes; i++) {
          buffer.fill(i + 1)
          await writeChunk(sender, buffer)
        }
        sender.end()
      })()
      await sleep(200)
      receiver.resume()
      await sent
      await once(receiver, 'end')
      const all = Buffer.concat(received)
      assert.equal(all.byteLength, writes * buffer.byteLength)
      for (let i = 0; i < writes; i++) {
        const part = all.subarray(i * buffer.byteLength, (i + 1) * buffer.byteLength)
        assert.equal(part.indexOf(i === 0 ? 2 : 1), -1, `write ${i + 1} holds bytes of another write`)
        assert.equal(part[0], i + 1)
        assert.equal(part.at(-1), i + 1)
      }
    } finally {
      close()
    }
  })

  it('signal ends a stalled write', async () => {
    const { sender, close } = await socketPair()
    try {
      const controller = new AbortController()
      const pending = writeChunk(sender, Buffer.alloc(64 * MiB), controller.signal)
      const state = await Promise.race([pending.then(() => 'written', () => 'failed'), sleep(300, 'waiting')])
      assert.equal(state, 'waiting', 'a write that the receiver does not take stays pending')
      controller.abort(new Error('client gone'))
      await assert.rejects(pending, /client gone/)
      await assert.rejects(writeChunk(sender, Buffer.alloc(1), controller.signal), /client gone/, 'an aborted signal refuses new writes')
    } finally {
      close()
    }
  })

  it('stream error rejects the write', async () => {
    const { sender, receiver, close } = await socketPair()
    try {
      // The socket's own 'error' event is handled elsewhere in a server (http does it).
      sender.on('error', () => {})
      const pending = writeChunk(sender, Buffer.alloc(64 * MiB))
      receiver.destroy()
      sender.destroy(new Error('reset by the test'))
      // The pending write is cancelled (ECANCELED) or fails with the socket.
      await assert.rejects(pending, Error)
    } finally {
      close()
    }
  })
})
