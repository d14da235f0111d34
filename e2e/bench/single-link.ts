/**
 * Single-link transfer benchmark on loopback. It runs curl from an HTTP
 * origin (baseline), then a dfnode peer through a supernode that seeds from
 * the origin (cold), then a fresh peer from a supernode that already has the
 * whole file (warm: supernode to peer only). Each client process runs under
 * GNU time, and the supernode and the origin are measured per case from /proc.
 *
 *   node e2e/bench/single-link.ts [--size 1GiB] [--runs 1] [--profile DIR]
 *
 * See single-link/options.ts for every flag.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { DfnodeProcess, NODE, dfnodeArgv } from '../../test/helpers/dfnode-process.ts'
import { freePort } from '../lib/free-port.ts'
import { TestbedError } from './swarm/errors.ts'
import type { OriginStats } from './swarm/origin-server.ts'
import { readCpuTimes } from './swarm/machine-cpu.ts'
import { sha256File, writeRandomFile } from './swarm/random-file.ts'
import { readMachineFacts, renderMachineFacts, renderResultTable, renderThreadTable, type CaseResult, type ClientUsage } from './single-link/report.ts'
import { OriginProcess } from './single-link/origin-process.ts'
import { HELP, parseOptions, type SingleLinkOptions } from './single-link/options.ts'
import { PhaseMeter, type PhaseUsage } from './single-link/proc-usage.ts'
import { readProfile, renderSummary, summarizeProfile } from './single-link/profile-summary.ts'
import { ThreadSampler, childPidOf, type ThreadGroup } from './single-link/thread-usage.ts'
import { runTimed, stopTimedRuns } from './single-link/timed-process.ts'

/**
 * Pause between the cold and the warm transfer. Super-seeding replies 'busy' to a second peer for
 * a piece whose first upload finished within its grace period (5 s while the supernode seeds,
 * 1 s once it has the whole file), unless the first peer's connection is gone. A warm transfer
 * started at once could wait out that grace period instead of measuring the link.
 */
const WARM_DELAY_MS = 5_500

/** The origin and supernode under way, stopped on SIGINT or SIGTERM so that none outlives the benchmark. */
const running = new Set<{ stop: () => Promise<unknown> }>()

/** Work directory of the run under way, emptied but for its logs on SIGINT or SIGTERM. */
let currentWorkDir: string | undefined

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`single-link benchmark: ${signal}, stopping ${running.size} processes and the transfers under way\n`)
    stopTimedRuns()
    void Promise.allSettled([...running].map(async component => await component.stop()))
      .then(async () => {
        if (currentWorkDir == null) return
        await removeAllButLogs(currentWorkDir)
        process.stderr.write(`logs of the interrupted run kept in ${currentWorkDir}\n`)
      })
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  })
}

/** JSON line printed by `dfnode fetch --json`. */
interface FetchJson {
  key: string
  digest: string
  size: number
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
  ms: number
}

/** State shared by all cases of one benchmark. */
interface Bench {
  options: SingleLinkOptions
  workDir: string
  file: string
  digest: string
  originUrl: string
  origin: OriginProcess
  /** Per-process time limit, in ms. */
  timeoutMs: number
}

async function main (): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  if (options.help) {
    process.stdout.write(HELP)
    return
  }
  const command = ['node', 'e2e/bench/single-link.ts', ...process.argv.slice(2)].join(' ')

  // 1. A work directory with the random file, and the origin serving it.
  const workDir = await mkdtemp(join(options.dir, 'dfnode-single-link-'))
  currentWorkDir = workDir
  const machine = await readMachineFacts(workDir)
  const results: CaseResult[] = []
  let bench: Bench | undefined
  let profileReport = ''
  let failed = true
  try {
    bench = await prepare(options, workDir)

    // 2. Each run: curl, then a new supernode with a cold and a warm peer.
    for (let run = 1; run <= options.runs; run++) {
      results.push(await runCurl(bench, run))
      results.push(...await runDfnode(bench, run))
    }

    // 3. One more cold and warm transfer with CPU profiles, apart from the measured ones.
    if (options.profileDir != null) profileReport = await runProfiled(bench, options.profileDir)
    failed = false
  } finally {
    if (bench != null) running.delete(bench.origin)
    await bench?.origin.stop()
    if (failed && !options.keep) {
      await removeAllButLogs(workDir)
      process.stderr.write(`logs of the failed run kept in ${workDir}\n`)
    } else if (!options.keep) {
      await rm(workDir, { recursive: true, force: true })
    }
  }

  // 4. The report.
  const report = [
    '## Single-link transfer on loopback', '',
    `Command: \`${command}\``, '',
    renderMachineFacts(machine), '',
    renderResultTable(results, options.fileBytes), '',
    '### CPU seconds by thread', '',
    renderThreadTable(results), '',
    profileReport
  ].join('\n')
  process.stdout.write(report)
  if (options.json != null) await writeFile(options.json, JSON.stringify({ command, machine, fileBytes: options.fileBytes, results }, null, 2) + '\n')
}

async function prepare (options: SingleLinkOptions, workDir: string): Promise<Bench> {
  const file = join(workDir, 'file.bin')
  process.stderr.write(`writing ${options.fileBytes} random bytes to ${file}\n`)
  const digest = await writeRandomFile(file, options.fileBytes)

  const origin = await OriginProcess.start(file, await freePort())
  running.add(origin)

  // Generous: 60 s plus 2 MB/s, far below any rate worth measuring.
  const timeoutMs = 60_000 + Math.ceil(options.fileBytes / 2e3)
  return { options, workDir, file, digest, originUrl: origin.url, origin, timeoutMs }
}

async function runCurl (bench: Bench, run: number): Promise<CaseResult> {
  const output = join(bench.workDir, 'curl.out')
  const originMeter = new PhaseMeter(bench.origin.pid)
  const originBefore = await originStats(bench)
  await originMeter.start()
  const machine = new MachineMeter()
  const timed = await runTimed({
    command: 'curl',
    args: ['-sS', '--fail', '--max-time', String(Math.ceil(bench.timeoutMs / 1000)), '-o', output, bench.originUrl],
    usageFile: join(bench.workDir, 'curl.time'),
    timeoutMs: bench.timeoutMs
  })
  const machineBusy = machine.stop()
  const origin = await originMeter.stop()
  const originBytes = (await originStats(bench)).bodyBytes - originBefore.bodyBytes
  await checkOutput(bench, output, 'curl')
  await rm(output, { force: true })
  return {
    name: 'curl (HTTP baseline)',
    run,
    wallMs: timed.exitedAtMs - timed.startedAtMs,
    client: { cpuSeconds: timed.usage.cpuSeconds, maxRssKiB: timed.usage.maxRssKiB },
    origin,
    originBytes,
    otherCpuSeconds: machineBusy - timed.usage.cpuSeconds - origin.cpuSeconds
  }
}

/** Busy CPU seconds of the whole machine, all cores, between construction and stop(). */
class MachineMeter {
  private readonly busyAtStart = readCpuTimes().busy

  stop (): number {
    // /proc/stat counts in USER_HZ ticks, 100 per second on Linux.
    return (readCpuTimes().busy - this.busyAtStart) / 100
  }
}

async function runDfnode (bench: Bench, run: number): Promise<CaseResult[]> {
  const supernodeDir = join(bench.workDir, `supernode-${run}`)
  const supernode = await startSupernode(supernodeDir, {})
  try {
    const cold = await runPeer(bench, supernode, `cold-${run}`, {})
    await sleep(WARM_DELAY_MS)
    const warm = await runPeer(bench, supernode, `warm-${run}`, {})
    return [
      { name: 'dfnode cold (origin → supernode → peer)', run, ...cold.result },
      { name: 'dfnode warm (supernode → peer)', run, ...warm.result }
    ]
  } finally {
    await stopSupernode(supernode, supernodeDir)
  }
}

interface Supernode {
  process: DfnodeProcess
  address: string
  pid: number
}

async function startSupernode (dataDir: string, env: NodeJS.ProcessEnv): Promise<Supernode> {
  const process = new DfnodeProcess(['supernode', '--listen', '/ip4/127.0.0.1/tcp/0', '--allow-origin', '127.0.0.1', '--data-dir', dataDir], env)
  let address: string
  try {
    address = await process.line(line => line.startsWith('/ip4/127.0.0.1/'), 30_000)
  } catch (err) {
    await process.stop()
    throw err
  }
  const pid = process.child.pid
  if (pid == null) throw new TestbedError('the supernode process has no pid')
  running.add(process)
  return { process, address, pid }
}

/** Stops a supernode, keeps its log beside its data dir and removes the data dir. */
async function stopSupernode (supernode: Supernode, dataDir: string): Promise<void> {
  running.delete(supernode.process)
  await supernode.process.stop()
  await writeFile(`${dataDir}.log`, supernode.process.stderr)
  await rm(dataDir, { recursive: true, force: true })
}

/** Removes everything in the work directory except logs and GNU time reports. */
async function removeAllButLogs (workDir: string): Promise<void> {
  for (const name of await readdir(workDir)) {
    if (name.endsWith('.log') || name.endsWith('.time')) continue
    await rm(join(workDir, name), { recursive: true, force: true })
  }
}

interface PeerRun {
  result: Omit<CaseResult, 'name' | 'run'>
  /** Window of the transfer on the CPU profile clock (µs): spawn to JSON line. */
  fromMicros: bigint
  toMicros: bigint
}

async function runPeer (bench: Bench, supernode: Supernode, label: string, env: NodeJS.ProcessEnv): Promise<PeerRun> {
  const dataDir = join(bench.workDir, `peer-${label}`)
  const output = join(bench.workDir, `peer-${label}.out`)
  const supernodeMeter = new PhaseMeter(supernode.pid)
  const originMeter = new PhaseMeter(bench.origin.pid)
  const supernodeThreads = new ThreadSampler(supernode.pid)
  let peerThreads: ThreadSampler | undefined
  let peerThreadsStarted: Promise<void> | undefined
  const originBefore = await originStats(bench)

  // 1. Meters on the long-lived processes, then the peer under GNU time.
  await supernodeMeter.start()
  await originMeter.start()
  await supernodeThreads.start()
  const machine = new MachineMeter()
  const timed = await runTimed({
    command: NODE,
    args: dfnodeArgv(['fetch', bench.originUrl, '-o', output, '--supernode', supernode.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', dataDir, '--json', '--timeout', `${Math.ceil(bench.timeoutMs / 1000)}s`]),
    usageFile: join(bench.workDir, `peer-${label}.time`),
    stderrFile: join(bench.workDir, `peer-${label}.log`),
    env,
    timeoutMs: bench.timeoutMs,
    onSpawn: pid => {
      peerThreadsStarted = (async () => {
        const nodePid = await childPidOf(pid)
        if (nodePid == null) return
        peerThreads = new ThreadSampler(nodePid)
        await peerThreads.start()
      })()
    }
  })
  await peerThreadsStarted
  const machineBusy = machine.stop()
  const supernodeUsage: PhaseUsage = await supernodeMeter.stop()
  const origin = await originMeter.stop()
  const supernodeByThread = await supernodeThreads.stop()
  const peerByThread = await peerThreads?.stop() ?? new Map<ThreadGroup, number>()
  const originBytes = (await originStats(bench)).bodyBytes - originBefore.bodyBytes

  // 2. The JSON line ends the measured time; the checks come after.
  const jsonLine = timed.lines.find(entry => entry.line.startsWith('{'))
  if (jsonLine == null) throw new TestbedError(`dfnode fetch ${label} printed no JSON line; stderr tail:\n${timed.stderrTail}`)
  const json = JSON.parse(jsonLine.line) as FetchJson
  if (json.size !== bench.options.fileBytes || json.digest !== `sha256:${bench.digest}`) {
    throw new TestbedError(`dfnode fetch ${label} reported ${json.size} bytes with ${json.digest}, expected ${bench.options.fileBytes} bytes with sha256:${bench.digest}`)
  }
  await checkOutput(bench, output, `dfnode fetch ${label}`)
  await rm(output, { force: true })
  await rm(dataDir, { recursive: true, force: true })

  const client: ClientUsage = { cpuSeconds: timed.usage.cpuSeconds, maxRssKiB: timed.usage.maxRssKiB, byThread: Object.fromEntries(peerByThread) }
  const fromMicros = timed.startedAtMicros
  const toMicros = fromMicros + BigInt(Math.round((jsonLine.atMs - timed.startedAtMs) * 1000))
  return {
    result: {
      wallMs: jsonLine.atMs - timed.startedAtMs,
      exitMs: timed.exitedAtMs - timed.startedAtMs,
      peerReportedMs: json.ms,
      client,
      supernode: { ...supernodeUsage, byThread: Object.fromEntries(supernodeByThread) },
      origin,
      originBytes,
      otherCpuSeconds: machineBusy - timed.usage.cpuSeconds - supernodeUsage.cpuSeconds - origin.cpuSeconds,
      sources: { fromSupernode: json.fromSupernode, fromPeers: json.fromPeers, fromOrigin: json.fromOrigin, fromLocal: json.fromLocal }
    },
    fromMicros,
    toMicros
  }
}

/** Runs a cold and a warm transfer with CPU profiles; returns the markdown of the summaries. */
async function runProfiled (bench: Bench, profileDir: string): Promise<string> {
  const supernodeProfiles = join(profileDir, 'supernode')
  const peerProfiles = join(profileDir, 'peer')
  await rm(profileDir, { recursive: true, force: true })
  await mkdir(supernodeProfiles, { recursive: true })
  await mkdir(peerProfiles, { recursive: true })

  // The supernode profiles its whole life; only the warm transfer's window is summarized.
  const supernodeDir = join(bench.workDir, 'supernode-profiled')
  const supernode = await startSupernode(supernodeDir, { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${supernodeProfiles}` })
  let warm: PeerRun
  try {
    process.stderr.write('profiled run: cold transfer (not profiled on the peer)\n')
    await runPeer(bench, supernode, 'profiled-cold', {})
    await sleep(WARM_DELAY_MS)
    process.stderr.write('profiled run: warm transfer\n')
    warm = await runPeer(bench, supernode, 'profiled-warm', { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${peerProfiles}` })
  } finally {
    await stopSupernode(supernode, supernodeDir)
  }

  const supernodeFile = await onlyProfileIn(supernodeProfiles)
  const peerFile = await onlyProfileIn(peerProfiles)
  const from = Number(warm.fromMicros)
  const to = Number(warm.toMicros)
  const top = bench.options.top
  const wallS = (warm.result.wallMs / 1000).toFixed(2)
  const rate = (bench.options.fileBytes / warm.result.wallMs / 1e3).toFixed(0)
  const parts = [
    '## CPU profile of a warm transfer', '',
    `Profiled warm transfer: ${wallS} s, ${rate} MB/s (profiling on). Supernode samples are limited to the peer's spawn-to-JSON-line window.`, '',
    renderSummary(`supernode (${supernodeFile.replace(profileDir + '/', '')})`, summarizeProfile(await readProfile(supernodeFile), from, to), top),
    renderSummary(`peer (${peerFile.replace(profileDir + '/', '')})`, summarizeProfile(await readProfile(peerFile), from, to), top)
  ]
  const markdown = parts.join('\n')
  await writeFile(join(profileDir, 'summary.md'), markdown)
  return markdown
}

async function onlyProfileIn (dir: string): Promise<string> {
  const files = (await readdir(dir)).filter(name => name.endsWith('.cpuprofile'))
  if (files.length !== 1) throw new TestbedError(`expected one .cpuprofile in ${dir}, found ${files.length}: did the process exit cleanly?`)
  return join(dir, files[0]!)
}

async function originStats (bench: Bench): Promise<OriginStats> {
  const response = await fetch(new URL('/__stats', bench.originUrl), { signal: AbortSignal.timeout(10_000) })
  return await response.json() as OriginStats
}

async function checkOutput (bench: Bench, output: string, label: string): Promise<void> {
  const digest = await sha256File(output)
  if (digest !== bench.digest) throw new TestbedError(`${label} wrote ${output} with sha256 ${digest}, expected ${bench.digest}`)
}

main().catch((err: unknown) => {
  process.stderr.write(`single-link: ${(err as Error).message}\n`)
  process.exit(1)
})
