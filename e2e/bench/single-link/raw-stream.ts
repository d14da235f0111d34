/**
 * Ceiling of the libp2p stack on one link. A sender process writes SIZE bytes on
 * one stream (TCP, noise and yamux, as dfnode's node has them), and the receiver
 * counts them. There is no framing, hashing or disk, so the difference to a
 * dfnode transfer is dfnode's own work.
 *
 *   node_modules/.bin/node e2e/bench/single-link/raw-stream.ts [--size 256MiB] [--runs 3]
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { parseSize } from '../../../src/config/units.ts'
import { noiseCrypto } from '../../../src/p2p/noise-crypto.ts'

const PROTOCOL = '/dfnode-bench/raw/1'

/** Bytes per send, as dfnode's data frames. */
const SEND_BYTES = 256 * 1024

async function sender (size: number): Promise<void> {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux()]
  })
  await node.handle(PROTOCOL, async stream => {
    const before = process.cpuUsage()
    for (let sent = 0; sent < size; sent += SEND_BYTES) {
      // A fresh buffer per send, as a piece read from disk would be.
      const chunk = new Uint8Array(Math.min(SEND_BYTES, size - sent)).fill(7)
      if (!stream.send(chunk)) await stream.onDrain()
    }
    await stream.close()
    const used = process.cpuUsage(before)
    process.stdout.write(`cpu ${(used.user + used.system) / 1e6}\n`)
  })
  process.stdout.write(`addr ${node.getMultiaddrs()[0]!.toString()}\n`)
}

async function receiver (size: number, runs: number): Promise<void> {
  const child = spawn(process.execPath, [import.meta.filename, '--role', 'sender', '--size', String(size)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  const next = async (prefix: string): Promise<string> => {
    const line = await lines.next()
    if (line.done === true || !line.value.startsWith(prefix)) throw new Error(`sender printed ${String(line.value)}, expected "${prefix} ..."`)
    return line.value.slice(prefix.length + 1)
  }
  try {
    const address = multiaddr(await next('addr'))
    const node = await createLibp2p({ transports: [tcp()], connectionEncrypters: [noise({ crypto: noiseCrypto })], streamMuxers: [yamux()] })
    process.stdout.write('| run | MB/s | receiver CPU s | sender CPU s |\n| ---: | ---: | ---: | ---: |\n')
    for (let run = 1; run <= runs; run++) {
      const started = performance.now()
      const before = process.cpuUsage()
      const stream = await node.dialProtocol(address, PROTOCOL)
      let received = 0
      for await (const chunk of stream) received += chunk.byteLength
      const seconds = (performance.now() - started) / 1000
      const used = process.cpuUsage(before)
      if (received !== size) throw new Error(`received ${received} of ${size} bytes`)
      const senderCpu = Number(await next('cpu'))
      process.stdout.write(`| ${run} | ${(size / seconds / 1e6).toFixed(0)} | ${((used.user + used.system) / 1e6).toFixed(2)} | ${senderCpu.toFixed(2)} |\n`)
    }
    await node.stop()
  } finally {
    child.kill()
    await once(child, 'exit')
  }
}

const { values } = parseArgs({ options: { role: { type: 'string' }, size: { type: 'string', default: '256MiB' }, runs: { type: 'string', default: '3' } } })
const size = parseSize(values.size)
if (size == null || size <= 0) throw new Error(`invalid --size ${values.size}: give bytes or a number with KiB, MiB or GiB`)
if (values.role === 'sender') await sender(size)
else await receiver(size, Number(values.runs))
