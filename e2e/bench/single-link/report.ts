/** Results of the single-link benchmark and their markdown tables. */
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { availableParallelism, release, totalmem } from 'node:os'
import { promisify } from 'node:util'
import type { PhaseUsage } from './proc-usage.ts'
import type { ThreadGroup } from './thread-usage.ts'

const MIB = 2 ** 20

/** CPU and memory of the downloading process (curl or the dfnode peer), from GNU time. */
export interface ClientUsage {
  cpuSeconds: number
  maxRssKiB: number
  /** CPU seconds per thread group, sampled from /proc (dfnode only). */
  byThread?: Partial<Record<ThreadGroup, number>>
}

export interface ServiceUsage extends PhaseUsage {
  byThread?: Partial<Record<ThreadGroup, number>>
}

export interface CaseResult {
  name: string
  run: number
  /** Spawn of the client to its result: curl's exit, or the peer's JSON line. */
  wallMs: number
  /** Spawn to exit of the dfnode peer (it stops its node after the JSON line). */
  exitMs?: number
  /** `ms` in the peer's JSON line: its own time from start-up to a verified file. */
  peerReportedMs?: number
  client: ClientUsage
  supernode?: ServiceUsage
  origin: PhaseUsage
  /** Body bytes the origin sent during the case. */
  originBytes: number
  /**
   * Busy CPU seconds of the machine during the case that none of the measured processes used:
   * other work on a shared machine, the benchmark's own sampling, kernel threads (network softirqs, writeback).
   */
  otherCpuSeconds: number
  /** Byte counts from the peer's JSON line. */
  sources?: { fromSupernode: number, fromPeers: number, fromOrigin: number, fromLocal: number }
}

export interface MachineFacts {
  cpus: number
  cpuModel: string
  kernel: string
  memoryGiB: number
  node: string
  curl: string
  /** Filesystem of the work directory, from findmnt. */
  filesystem: string
}

/** Reads the facts that the numbers depend on. */
export async function readMachineFacts (workDir: string): Promise<MachineFacts> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  const cpuModel = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? 'unknown'
  const curl = await firstLine('curl', ['--version'])
  const filesystem = await firstLine('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '--target', workDir])
  return {
    cpus: availableParallelism(),
    cpuModel,
    kernel: release(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    curl,
    filesystem
  }
}

async function firstLine (command: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(command, args)
    return stdout.split('\n')[0]?.trim() ?? ''
  } catch {
    return 'unknown'
  }
}

export function renderMachineFacts (facts: MachineFacts): string {
  return [
    `Machine: ${facts.cpus} CPUs (${facts.cpuModel}), ${facts.memoryGiB} GiB RAM, Linux ${facts.kernel}, Node ${facts.node}.`,
    `curl: ${facts.curl}. Work directory on ${facts.filesystem}.`
  ].join('\n')
}

/** Renders one row per case and run, plus a median row per case when there are several runs. */
export function renderResultTable (results: CaseResult[], fileBytes: number): string {
  const header = ['case', 'run', 'wall s', 'MB/s', '÷ curl', 'client CPU s', 'client peak RSS MiB', 'supernode CPU s', 'supernode peak RSS MiB', 'origin CPU s', 'origin bytes ÷ size', 'other CPU s']
  const rows = [header, header.map((_, index) => index < 2 ? '---' : '---:')]
  const curlWall = new Map(results.filter(result => result.name.startsWith('curl')).map(result => [result.run, result.wallMs]))
  const runs = new Set(results.map(result => result.run)).size

  for (const result of results) {
    const baseline = curlWall.get(result.run)
    rows.push([
      result.name,
      String(result.run),
      (result.wallMs / 1000).toFixed(2),
      rate(fileBytes, result.wallMs),
      baseline != null ? (baseline / result.wallMs).toFixed(2) : '—',
      result.client.cpuSeconds.toFixed(2),
      (result.client.maxRssKiB / 1024).toFixed(0),
      result.supernode != null ? result.supernode.cpuSeconds.toFixed(2) : '—',
      result.supernode != null ? (result.supernode.maxRssKiB / 1024).toFixed(0) : '—',
      result.origin.cpuSeconds.toFixed(2),
      (result.originBytes / fileBytes).toFixed(2),
      result.otherCpuSeconds.toFixed(2)
    ])
  }

  if (runs > 1) {
    for (const name of new Set(results.map(result => result.name))) {
      const cases = results.filter(result => result.name === name)
      const wall = median(cases.map(result => result.wallMs))
      const curl = median([...curlWall.values()])
      rows.push([
        `**${name}, median**`, `${cases.length}`, (wall / 1000).toFixed(2), rate(fileBytes, wall), (curl / wall).toFixed(2),
        median(cases.map(result => result.client.cpuSeconds)).toFixed(2),
        (Math.max(...cases.map(result => result.client.maxRssKiB)) / 1024).toFixed(0) + ' (max)',
        cases[0]?.supernode != null ? median(cases.map(result => result.supernode?.cpuSeconds ?? 0)).toFixed(2) : '—',
        cases[0]?.supernode != null ? (Math.max(...cases.map(result => result.supernode?.maxRssKiB ?? 0)) / 1024).toFixed(0) + ' (max)' : '—',
        median(cases.map(result => result.origin.cpuSeconds)).toFixed(2),
        median(cases.map(result => result.originBytes / fileBytes)).toFixed(2),
        median(cases.map(result => result.otherCpuSeconds)).toFixed(2)
      ])
    }
  }

  const table = rows.map(row => `| ${row.join(' | ')} |`).join('\n')
  const notes = [
    '',
    `File ${(fileBytes / MIB).toFixed(0)} MiB. MB/s is 10^6 bytes per second of wall time. ÷ curl is curl's wall time over the case's, so above 1 means faster than curl.`,
    'Wall time runs from the spawn of the client to curl\'s exit or to the peer\'s JSON line, so process start-up, libp2p start-up and the final fsync of the output are in it.',
    'Other CPU s is the machine\'s busy CPU time (/proc/stat, all cores) during the case minus that of the client, supernode and origin: other work on the machine, the benchmark\'s own sampling, and kernel threads such as network softirqs and disk writeback. A large value means a noisy run.',
    'Client CPU and peak RSS come from GNU time (ru_maxrss, all threads). Supernode and origin CPU are /proc/<pid>/stat deltas over the case; their peak RSS is VmHWM after a reset through /proc/<pid>/clear_refs at the start of the case.'
  ]
  return table + '\n' + notes.join('\n')
}

/** Renders CPU seconds per thread group of the dfnode processes. */
export function renderThreadTable (results: CaseResult[]): string {
  const groups: ThreadGroup[] = ['main thread', 'libuv pool (fs, crypto jobs)', 'V8 helpers (GC, compiler)', 'other threads']
  const rows = [['case', 'run', 'process', ...groups], ['---', '---', '---', ...groups.map(() => '---:')]]
  for (const result of results) {
    const processes: Array<[string, Partial<Record<ThreadGroup, number>> | undefined]> = [['peer', result.client.byThread], ['supernode', result.supernode?.byThread]]
    for (const [name, byThread] of processes) {
      if (byThread == null) continue
      rows.push([result.name, String(result.run), name, ...groups.map(group => (byThread[group] ?? 0).toFixed(2))])
    }
  }
  const note = 'Sampled from /proc/<pid>/task every 100 ms; the peer\'s last sample is taken up to 100 ms before it exits, so its numbers can be a little lower than the GNU time total.'
  return rows.map(row => `| ${row.join(' | ')} |`).join('\n') + '\n\n' + note
}

function rate (bytes: number, ms: number): string {
  return (bytes / ms / 1e3).toFixed(0)
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : ((sorted[middle - 1]! + sorted[middle]!) / 2)
}
