/**
 * Ceiling of a direct link on loopback. One process opens a direct link to
 * itself (dfnode's DirectServer and connectDirect: TLS 1.2 with a pre-shared
 * key), sends SIZE bytes on it in 256 KiB writes and counts them on the other
 * end. It prints the rate and the CPU time of the process, sender and receiver
 * together. There is no framing, hashing or disk.
 *
 *   node_modules/.bin/node e2e/bench/single-link/raw-tls.ts [--size 4GiB] [--runs 2]
 */
import { parseArgs } from 'node:util'
import { parseSize } from '../../../src/config/units.ts'
import { silentLogger } from '../../../src/log.ts'
import type { SocketChannel } from '../../../src/swarm/socket-channel.ts'
import { DirectServer, connectDirect } from '../../../src/swarm/direct-link.ts'

/** Bytes per write, as dfnode's data frames. */
const WRITE_BYTES = 256 * 1024

/** Sends `size` bytes from the accepting end of one link to the connecting end; resolves the wall time in ms. */
async function transfer (size: number): Promise<number> {
  const accepted = Promise.withResolvers<SocketChannel>()
  const server = new DirectServer({ hosts: ['127.0.0.1'], port: 0, logger: silentLogger(), onLink: (channel) => { accepted.resolve(channel) } })
  await server.start()
  try {
    const ticket = server.ticket('bench')
    if (ticket == null) throw new Error('the server issued no ticket')
    const receiver = await connectDirect('127.0.0.1', ticket, AbortSignal.timeout(10_000))
    const sender = await accepted.promise

    const started = performance.now()
    const received = Promise.withResolvers<void>()
    let count = 0
    // The channel's own reader would buffer the bytes and pause the socket; this counts them instead.
    receiver.socket.removeAllListeners('data')
    receiver.socket.resume()
    receiver.socket.on('data', (chunk: Buffer) => {
      count += chunk.byteLength
      if (count >= size) received.resolve()
    })
    const block = Buffer.alloc(WRITE_BYTES, 7)
    for (let sent = 0; sent < size; sent += WRITE_BYTES) {
      if (!sender.socket.write(block.subarray(0, Math.min(WRITE_BYTES, size - sent)))) await new Promise(resolve => sender.socket.once('drain', resolve))
    }
    await received.promise
    const ms = performance.now() - started
    receiver.abort(new Error('done'))
    sender.abort(new Error('done'))
    return ms
  } finally {
    await server.stop()
  }
}

const { values } = parseArgs({ options: { size: { type: 'string', default: '4GiB' }, runs: { type: 'string', default: '2' } } })
const size = parseSize(values.size)
if (size == null || size <= 0) throw new Error(`invalid --size "${values.size}": expected a size such as 4GiB`)
const runs = Number(values.runs)
if (!Number.isInteger(runs) || runs < 1) throw new Error(`invalid --runs "${values.runs}": expected a whole number of at least 1`)

for (let run = 1; run <= runs; run++) {
  const cpuBefore = process.cpuUsage()
  const ms = await transfer(size)
  const cpu = process.cpuUsage(cpuBefore)
  process.stdout.write(`run ${run}: ${values.size} in ${(ms / 1000).toFixed(2)} s, ${(size / ms / 1000).toFixed(0)} MB/s, ${((cpu.user + cpu.system) / 1e6).toFixed(2)} CPU s (sender and receiver)\n`)
}
