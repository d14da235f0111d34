/**
 * Runs one system on a testbed and measures it: common start for every peer,
 * completion times, interface byte counters, origin HTTP bytes, per-process
 * CPU and peak RSS, machine CPU, and the SHA-256 of every output.
 */
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { HostProcess, lastLines, type ProcessResult } from './host-process.ts'
import { CpuSampler, type CpuUse } from './machine-cpu.ts'
import { readOriginStats } from './origin.ts'
import { sha256File } from './random-file.ts'
import { withinTimeout } from './timeouts.ts'
import type { BenchContext, BenchFile, BenchSystem, OriginEndpoint, PeerLaunch, ProcessSpec } from './systems/system.ts'
import type { Host, LinkCounters, Testbed } from './testbed.ts'

export interface PeerRecord {
  host: string
  /** Seconds from the common start to completion; undefined when the peer did not complete. */
  completedSeconds?: number
  /** Why the peer failed, with the tail of its stderr. */
  error?: string
  /** The stdout line that marked completion, when the system signals it that way. */
  completionLine?: string
  /** Bytes the peer's interface sent (its upload) during the run, headers included. */
  txBytes?: number
}

export interface ProcessRecord {
  label: string
  exitCode: number | null
  signal: number | null
  cpuSeconds?: number
  maxRssKiB?: number
}

export interface SystemRunRecord {
  systemId: string
  title: string
  peerCount: number
  status: 'ok' | 'failed'
  /** Reason for 'failed'. */
  failure?: string
  peers: PeerRecord[]
  processes: ProcessRecord[]
  /** Bytes sent by the origin host's interface during the run. */
  originTxBytes: number
  /** Body bytes the HTTP origin sent during the run. */
  originHttpBytes: number
  /** Bytes sent by the supernode host's interface. */
  supernodeTxBytes: number
  /** Bytes sent by all peer interfaces together. */
  peersTxBytes: number
  machineCpu?: CpuUse
  notes: string[]
}

export interface MeasureOptions {
  testbed: Testbed
  projectRoot: string
  nodeBinary: string
  /** Parent directory of the run directory. */
  workDir: string
  file: BenchFile
  origin: OriginEndpoint
  supernode: Host
  peers: readonly Host[]
  timeoutMs: number
  /** Keep outputs and logs of the run. */
  keepFiles: boolean
  /** Called with progress messages. */
  log: (message: string) => void
}

const STOP_GRACE_MS = 10_000

/** Runs `system` once with every peer of `options.peers` and returns what was measured. */
export async function measureSystem (system: BenchSystem, options: MeasureOptions): Promise<SystemRunRecord> {
  const { testbed, peers, file } = options
  const record: SystemRunRecord = {
    systemId: system.id,
    title: system.title,
    peerCount: peers.length,
    status: 'failed',
    peers: peers.map((host) => ({ host: host.name })),
    processes: [],
    originTxBytes: 0,
    originHttpBytes: 0,
    supernodeTxBytes: 0,
    peersTxBytes: 0,
    notes: []
  }

  // 1. Availability on this machine.
  const unavailable = await system.checkAvailable(options.projectRoot)
  if (unavailable != null) {
    record.failure = `not available: ${unavailable}`
    return record
  }

  const runDir = join(options.workDir, `n${peers.length}-${system.id}`)
  await mkdir(join(runDir, 'usage'), { recursive: true })
  const tracked: HostProcess[] = []
  const context: BenchContext = {
    testbed,
    projectRoot: options.projectRoot,
    nodeBinary: options.nodeBinary,
    runDir,
    file,
    origin: options.origin,
    supernode: options.supernode,
    peers,
    timeoutMs: options.timeoutMs,
    createProcess: (spec: ProcessSpec) => {
      const process = new HostProcess({
        label: spec.label,
        namespace: spec.host.namespace,
        command: spec.command,
        args: spec.args,
        cwd: spec.cwd,
        usageFile: join(runDir, 'usage', `${spec.label.replace(/[^a-zA-Z0-9.-]+/g, '_')}.txt`)
      })
      tracked.push(process)
      return process
    }
  }

  let peerProcesses: HostProcess[] = []
  const sampler = new CpuSampler()
  try {
    // 2. Services (seeders, tracker, supernode), ready before the start.
    options.log(`${system.id} N=${peers.length}: setting up`)
    const setup = await system.setUp(context)
    const launches: PeerLaunch[] = []
    for (const [index, host] of peers.entries()) launches.push(await setup.launchPeer(host, index))
    peerProcesses = launches.map((launch) => launch.process)

    // 3. Counters before the start.
    const countersBefore = await testbed.allCounters()
    const originBefore = await readOriginStats(options.origin)

    // 4. The common start: every peer at once.
    options.log(`${system.id} N=${peers.length}: starting ${peers.length} peers`)
    sampler.start()
    const startMs = performance.now()
    for (const launch of launches) launch.process.start()
    const outcomes = await Promise.all(launches.map(async (launch, index) => await awaitCompletion(launch, startMs, options.timeoutMs, record.peers[index] as PeerRecord)))
    record.machineCpu = sampler.stop()

    // 5. Stop peers, then services, and collect their usage.
    const services = tracked.filter((process) => !peerProcesses.includes(process))
    const peerResults = await Promise.all(peerProcesses.map(async (process) => await process.stop(STOP_GRACE_MS)))
    const serviceResults = await Promise.all(services.map(async (process) => await process.stop(STOP_GRACE_MS)))
    record.processes = [...peerResults, ...serviceResults].map(toProcessRecord)
    for (const result of serviceResults) {
      if (result.exitCode != null && result.exitCode !== 0) record.notes.push(`${result.label} exited with ${result.exitCode}: ${lastLines(result.stderrTail, 3)}`)
    }

    // 6. Counters after the stop.
    const countersAfter = await testbed.allCounters()
    const originAfter = await readOriginStats(options.origin)
    record.originHttpBytes = originAfter.bodyBytes - originBefore.bodyBytes
    record.originTxBytes = txDelta(countersBefore, countersAfter, options.origin.host.name)
    record.supernodeTxBytes = txDelta(countersBefore, countersAfter, options.supernode.name)
    for (const [index, host] of peers.entries()) (record.peers[index] as PeerRecord).txBytes = txDelta(countersBefore, countersAfter, host.name)
    record.peersTxBytes = peers.reduce((sum, host) => sum + txDelta(countersBefore, countersAfter, host.name), 0)

    // 7. Every completed output must match the original.
    await Promise.all(launches.map(async (launch, index) => {
      const peer = record.peers[index] as PeerRecord
      if (peer.completedSeconds == null) return
      const digest = await sha256File(launch.outputPath).catch((err: unknown) => `unreadable (${(err as Error).message})`)
      if (digest !== file.sha256) {
        peer.error = `sha256 of ${launch.outputPath} is ${digest}, expected ${file.sha256}`
        delete peer.completedSeconds
      }
    }))

    if (setup.summarize != null) record.notes.push(...setup.summarize(outcomes.filter((line): line is string => line != null)))
    const failed = record.peers.filter((peer) => peer.completedSeconds == null)
    if (failed.length === 0) {
      record.status = 'ok'
    } else {
      record.failure = `${failed.length}/${peers.length} peers did not complete; ${failed.slice(0, 2).map((peer) => `${peer.host}: ${tail(peer.error ?? 'unknown reason', 600)}`).join('; ')}`
    }
  } catch (err) {
    record.failure = (err as Error).message
  } finally {
    sampler.stop()
    await Promise.all(tracked.filter((process) => process.isStarted).map(async (process) => await process.stop(2_000)))
    if (record.processes.length === 0) record.processes = await collectStarted(tracked)
    if (!options.keepFiles) await rm(runDir, { recursive: true, force: true })
  }
  return record
}

/** Waits until one peer completes or fails; returns its completion line if it has one. */
async function awaitCompletion (launch: PeerLaunch, startMs: number, timeoutMs: number, peer: PeerRecord): Promise<string | undefined> {
  const remaining = Math.max(1, startMs + timeoutMs - performance.now())
  try {
    if (launch.completion === 'exit') {
      const result = await withinTimeout(launch.process.exited, remaining)
      if (result == null) {
        peer.error = `not complete after ${Math.round(timeoutMs / 1000)} s`
        return undefined
      }
      if (result.exitCode !== 0) {
        peer.error = `exit ${result.exitCode ?? 'by signal ' + String(result.signal)}: ${lastLines(result.stderrTail, 3)}`
        return undefined
      }
      peer.completedSeconds = (result.endedAtMs - startMs) / 1000
      return undefined
    }

    const timed = await launch.process.waitForLine(launch.completion, remaining)
    peer.completedSeconds = (timed.atMs - startMs) / 1000
    peer.completionLine = timed.line
    return timed.line
  } catch (err) {
    peer.error = (err as Error).message
    return undefined
  }
}

/** Keeps the last `chars` characters, where stderr tails end with the reason a process stopped. */
function tail (text: string, chars: number): string {
  return text.length > chars ? `…${text.slice(-chars)}` : text
}

function txDelta (before: Map<string, LinkCounters>, after: Map<string, LinkCounters>, host: string): number {
  return (after.get(host)?.txBytes ?? 0) - (before.get(host)?.txBytes ?? 0)
}

function toProcessRecord (result: ProcessResult): ProcessRecord {
  return {
    label: result.label,
    exitCode: result.exitCode,
    signal: result.signal,
    cpuSeconds: result.usage?.cpuSeconds,
    maxRssKiB: result.usage?.maxRssKiB
  }
}

async function collectStarted (tracked: readonly HostProcess[]): Promise<ProcessRecord[]> {
  const started = tracked.filter((process) => process.isStarted)
  return (await Promise.all(started.map(async (process) => await process.exited))).map(toProcessRecord)
}
