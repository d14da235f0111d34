/**
 * CPU seconds per thread group of a Node process (main JavaScript thread,
 * libuv thread pool, V8 helper threads), sampled from /proc/<pid>/task while
 * it runs. The last sample before the process exits stands for the whole run,
 * so up to one interval of work at the very end is missed.
 */
import { readdir, readFile } from 'node:fs/promises'

const CLOCK_TICKS = 100

/** Thread groups by their name in /proc/<pid>/task/<tid>/comm. */
export type ThreadGroup = 'main thread' | 'libuv pool (fs, crypto jobs)' | 'V8 helpers (GC, compiler)' | 'other threads'

export function groupOfThread (name: string): ThreadGroup {
  if (name === 'MainThread' || name === 'node') return 'main thread'
  if (name.startsWith('libuv-worker')) return 'libuv pool (fs, crypto jobs)'
  if (name.startsWith('V8Worker') || name.startsWith('DelayedTask')) return 'V8 helpers (GC, compiler)'
  return 'other threads'
}

/** Samples the threads of one process until stop(). */
export class ThreadSampler {
  private readonly pid: number
  private readonly latest = new Map<string, { name: string, seconds: number }>()
  private readonly baseline = new Map<string, number>()
  private timer?: NodeJS.Timeout

  constructor (pid: number) {
    this.pid = pid
  }

  /** Starts sampling; CPU used before this call is subtracted. */
  async start (intervalMs = 100): Promise<void> {
    await this.sample()
    for (const [tid, entry] of this.latest) this.baseline.set(tid, entry.seconds)
    this.timer = setInterval(() => { void this.sample() }, intervalMs)
  }

  /** Stops sampling (after one last sample) and returns CPU seconds per thread group since start(). */
  async stop (): Promise<Map<ThreadGroup, number>> {
    clearInterval(this.timer)
    await this.sample()
    const groups = new Map<ThreadGroup, number>()
    for (const [tid, entry] of this.latest) {
      const group = groupOfThread(entry.name)
      groups.set(group, (groups.get(group) ?? 0) + entry.seconds - (this.baseline.get(tid) ?? 0))
    }
    return groups
  }

  private async sample (): Promise<void> {
    let tids: string[]
    try {
      tids = await readdir(`/proc/${this.pid}/task`)
    } catch {
      return
    }
    await Promise.all(tids.map(async tid => {
      try {
        const [stat, comm] = await Promise.all([
          readFile(`/proc/${this.pid}/task/${tid}/stat`, 'utf8'),
          readFile(`/proc/${this.pid}/task/${tid}/comm`, 'utf8')
        ])
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
        const seconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
        if (Number.isFinite(seconds)) this.latest.set(tid, { name: comm.trim(), seconds })
      } catch {
        // The thread or the process ended between readdir and read.
      }
    }))
  }
}

/** Returns the first child process of `pid` (the command that GNU time forked), waiting up to `ms`. */
export async function childPidOf (pid: number, ms = 5000): Promise<number | undefined> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    try {
      const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim()
      if (children !== '') return Number(children.split(' ')[0])
    } catch {
      return undefined
    }
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return undefined
}
