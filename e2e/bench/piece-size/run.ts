/**
 * Single-link transfer time by piece size: a supernode seeds a random file
 * from a loopback origin, then a fresh peer fetches it (the warm case), so
 * only the supernode-to-peer link is timed.
 *
 *   SIZE=256 PIECE=4MiB node e2e/bench/piece-size/run.ts
 *
 * SIZE is in MiB; PIECE is passed to `dfnode supernode --piece-size`; PROF=DIR
 * writes a CPU profile of the peer there.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TestOrigin } from '../../../test/helpers/origin-server.ts'
import { DfnodeProcess, startSupernodeProcess } from '../../../test/helpers/dfnode-process.ts'
const MiB = 1 << 20
const origin = new TestOrigin()
const size = Number(process.env.SIZE ?? 256) * MiB
origin.files.set('/f', { body: randomBytes(size) })
const base = await origin.start()
const dir = await mkdtemp(join(tmpdir(), 'pl-'))
const sn = await startSupernodeProcess(join(dir, 'sn'), '127.0.0.1', process.env.PIECE ? ['--piece-size', process.env.PIECE] : [])
const warm = new DfnodeProcess(['fetch', `${base}/f`, '-o', join(dir, 'w.out'), '--supernode', sn.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, 'w'), '--json'])
console.log('cold', JSON.stringify(await warm.json()))
const t = Date.now()
const env = process.env.PROF ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.PROF}` } : {}
const p = new DfnodeProcess(['fetch', `${base}/f`, '-o', join(dir, 'o'), '--supernode', sn.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, 'p'), '--json'], env)
const r = await p.json<any>()
console.log('warm ms', Date.now() - t, 'MB/s', (size / 1e6 / ((Date.now() - t) / 1000)).toFixed(0), 'inner ms', r.ms)
await p.exited
await sn.process.stop(); await origin.stop()
