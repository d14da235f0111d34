/**
 * The main job on loopback: an origin HTTP server with a generated file, one
 * supernode and several peers that all `dfnode fetch` it at once, each a
 * separate process. Prints a table per peer and the bytes the origin served.
 *
 *   npm run demo [-- --size 256MiB --peers 4]
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parseSize } from '../src/config/units.ts'
import { DfnodeProcess, NODE } from '../test/helpers/dfnode-process.ts'
import { writeRandomFile } from './bench/swarm/random-file.ts'
import { freePort } from './lib/free-port.ts'
import type { OriginStats } from './bench/swarm/origin-server.ts'

const MiB = 1024 * 1024

interface FetchSummary {
  digest: string
  size: number
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
  ms: number
}

const USAGE = 'usage: npm run demo [-- --size 256MiB --peers 4]\n'
let values: { size: string, peers: string, help: boolean }
try {
  values = parseArgs({
    options: {
      size: { type: 'string', default: '256MiB' },
      peers: { type: 'string', default: '4' },
      help: { type: 'boolean', default: false }
    }
  }).values
} catch (err) {
  process.stderr.write(`demo: ${(err as Error).message}\n${USAGE}`)
  process.exit(2)
}
if (values.help) {
  process.stdout.write(USAGE)
  process.exit(0)
}
const size = parseSize(values.size) ?? -1
if (size < 0) {
  process.stderr.write(`demo: invalid --size "${values.size}": expected bytes or a size such as 256MiB\n`)
  process.exit(2)
}
const peerCount = Number(values.peers)
if (!Number.isInteger(peerCount) || peerCount < 1 || peerCount > 32) {
  process.stderr.write(`demo: invalid --peers "${values.peers}": expected 1 to 32\n`)
  process.exit(2)
}

const dir = await mkdtemp(join(tmpdir(), 'dfnode-demo-'))
const children: DfnodeProcess[] = []
let origin: ReturnType<typeof import('node:child_process').spawn> | undefined
const cleanup = async (): Promise<void> => {
  await Promise.all(children.map(async child => await child.stop()))
  origin?.kill('SIGTERM')
  await rm(dir, { recursive: true, force: true })
}
process.on('SIGINT', () => { void cleanup().then(() => process.exit(130)) })

try {
  // 1. The origin: a plain HTTP server with a random file.
  process.stdout.write(`generating a ${(size / MiB).toFixed(0)} MiB file in ${dir}\n`)
  const file = join(dir, 'demo.bin')
  const digest = `sha256:${await writeRandomFile(file, size)}`
  const port = await freePort()
  const { spawn } = await import('node:child_process')
  origin = spawn(NODE, [join(import.meta.dirname, 'bench/swarm/origin-server.ts'), '--file', file, '--host', '127.0.0.1', '--port', String(port), '--path', '/demo.bin'], { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise<void>((resolve, reject) => {
    origin!.stdout!.on('data', (chunk: Buffer) => { if (chunk.toString().includes('listening')) resolve() })
    origin!.on('exit', code => { reject(new Error(`origin exited with ${String(code)}`)) })
  })
  const url = `http://127.0.0.1:${port}/demo.bin`

  // 2. One supernode beside the origin.
  const supernode = new DfnodeProcess(['supernode', '--listen', '/ip4/127.0.0.1/tcp/0', '--allow-origin', `127.0.0.1:${port}`, '--data-dir', join(dir, 'supernode')])
  children.push(supernode)
  const address = await supernode.line(line => line.startsWith('/ip4/'), 30_000)
  process.stdout.write(`origin ${url}\nsupernode ${address}\n${peerCount} peers fetching at once...\n`)

  // 3. The peers, all at once; each keeps serving until every peer is done.
  const started = Date.now()
  const peers = Array.from({ length: peerCount }, (_, index) => new DfnodeProcess([
    'fetch', url, '-o', join(dir, `peer-${index}.bin`), '--supernode', address,
    '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, `peer-${index}`), '--json', '--seed-time', '10m'
  ]))
  children.push(...peers)
  const results = await Promise.all(peers.map(async peer => {
    const summary = await peer.json<FetchSummary>(30 * 60_000)
    return { summary, seconds: (Date.now() - started) / 1000 }
  }))

  // 4. Check every output and read the origin's counters.
  for (const [index] of results.entries()) {
    const actual = `sha256:${await sha256File(join(dir, `peer-${index}.bin`))}`
    if (actual !== digest) throw new Error(`peer ${index} wrote a file with digest ${actual}, expected ${digest}`)
  }
  const stats = await (await fetch(`http://127.0.0.1:${port}/__stats`)).json() as OriginStats

  // 5. The table.
  const rows = results.map(({ summary, seconds }, index) => [
    `peer ${index}`, seconds.toFixed(1), (summary.fromSupernode / MiB).toFixed(0), (summary.fromPeers / MiB).toFixed(0), (summary.fromOrigin / MiB).toFixed(0), 'yes'
  ])
  printTable(['peer', 'time s', 'from supernode MiB', 'from peers MiB', 'from origin MiB', 'sha256 ok'], rows)
  process.stdout.write(`\norigin served ${(stats.bodyBytes / MiB).toFixed(1)} MiB for a ${(size / MiB).toFixed(0)} MiB file (${(stats.bodyBytes / size).toFixed(2)}x), which ${peerCount} peers fetched through the supernode and each other\n`)
} finally {
  await cleanup()
}

function printTable (header: string[], rows: string[][]): void {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map(row => row[column]!.length)))
  const line = (cells: string[]): string => `| ${cells.map((cell, column) => cell.padStart(widths[column]!)).join(' | ')} |`
  process.stdout.write(`\n${line(header)}\n|${widths.map(width => '-'.repeat(width + 2)).join('|')}|\n${rows.map(line).join('\n')}\n`)
}

async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
