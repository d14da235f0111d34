/**
 * CPU time and peak RSS of a running process from /proc, for the processes
 * that outlive one measured phase (supernode, origin). Linux only.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { TestbedError } from '../swarm/errors.ts'

/** Clock ticks per second of /proc/<pid>/stat times (sysconf(_SC_CLK_TCK), 100 on Linux x86-64 and arm64). */
const CLOCK_TICKS = 100

/** Returns the user plus system CPU seconds a process has used so far, its threads included. */
export async function cpuSecondsOf (pid: number): Promise<number> {
  const stat = await readProc(pid, 'stat')
  // The command name (field 2) may contain spaces, so count the fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the state field.
  const user = Number(fields[11])
  const system = Number(fields[12])
  if (!Number.isFinite(user) || !Number.isFinite(system)) throw new TestbedError(`unexpected /proc/${pid}/stat: ${stat.slice(0, 200)}`)
  return (user + system) / CLOCK_TICKS
}

/** Returns the peak resident set size (VmHWM) of a process in KiB. */
export async function peakRssKiBOf (pid: number): Promise<number> {
  const status = await readProc(pid, 'status')
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status)
  if (match?.[1] == null) throw new TestbedError(`no VmHWM line in /proc/${pid}/status`)
  return Number(match[1])
}

/** Resets the peak RSS of a process to its current RSS (clear_refs value 5, Linux 4.0 and later; needs the same user or root). */
export async function resetPeakRss (pid: number): Promise<void> {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, '5')
  } catch (err) {
    throw new TestbedError(`cannot reset the peak RSS of process ${pid} through /proc/${pid}/clear_refs: ${(err as Error).message}`, { cause: err })
  }
}

/** CPU seconds and peak RSS of a long-lived process over one phase. */
export interface PhaseUsage {
  cpuSeconds: number
  /** Peak RSS during the phase in KiB: VmHWM after a reset at the phase start. */
  maxRssKiB: number
}

/** Measures one phase of a running process: call `start()` before it and `stop()` after it. */
export class PhaseMeter {
  private readonly pid: number
  private cpuAtStart = 0

  constructor (pid: number) {
    this.pid = pid
  }

  async start (): Promise<void> {
    await resetPeakRss(this.pid)
    this.cpuAtStart = await cpuSecondsOf(this.pid)
  }

  async stop (): Promise<PhaseUsage> {
    const cpuSeconds = await cpuSecondsOf(this.pid) - this.cpuAtStart
    return { cpuSeconds, maxRssKiB: await peakRssKiBOf(this.pid) }
  }
}

async function readProc (pid: number, name: string): Promise<string> {
  try {
    return await readFile(`/proc/${pid}/${name}`, 'utf8')
  } catch (err) {
    throw new TestbedError(`cannot read /proc/${pid}/${name} (has the process exited?): ${(err as Error).message}`, { cause: err })
  }
}
