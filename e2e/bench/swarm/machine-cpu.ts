/**
 * Machine-wide CPU use from /proc/stat, sampled while a system runs.
 * 100 % means every core was busy; iowait counts as idle.
 */
import { readFileSync } from 'node:fs'

interface CpuTimes {
  busy: number
  total: number
}

export interface CpuUse {
  /** Busy share of all cores between start() and stop(), in percent. */
  meanPercent: number
  /** Highest busy share over one sampling interval, in percent. */
  peakPercent: number
}

/** Reads the aggregate `cpu` line of /proc/stat. */
export function readCpuTimes (): CpuTimes {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((entry) => entry.startsWith('cpu '))
  if (line == null) throw new Error('no aggregate cpu line in /proc/stat')
  // Fields: user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const fields = line.trim().split(/\s+/).slice(1, 9).map(Number)
  const total = fields.reduce((sum, value) => sum + value, 0)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
  return { busy: total - idle, total }
}

/** Samples /proc/stat every `intervalMs` between start() and stop(). */
export class CpuSampler {
  private readonly intervalMs: number
  private first: CpuTimes | undefined
  private previous: CpuTimes | undefined
  private peak = 0
  private timer: NodeJS.Timeout | undefined

  constructor (intervalMs = 500) {
    this.intervalMs = intervalMs
  }

  start (): void {
    this.first = readCpuTimes()
    this.previous = this.first
    this.peak = 0
    this.timer = setInterval(() => { this.sample() }, this.intervalMs)
  }

  stop (): CpuUse {
    clearInterval(this.timer)
    this.sample()
    const first = this.first
    const last = this.previous
    if (first == null || last == null) return { meanPercent: 0, peakPercent: 0 }
    return { meanPercent: share(first, last), peakPercent: this.peak }
  }

  private sample (): void {
    const now = readCpuTimes()
    if (this.previous != null) this.peak = Math.max(this.peak, share(this.previous, now))
    this.previous = now
  }
}

function share (from: CpuTimes, to: CpuTimes): number {
  const total = to.total - from.total
  return total > 0 ? 100 * (to.busy - from.busy) / total : 0
}
