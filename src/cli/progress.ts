/**
 * Progress of a download on a terminal (one line redrawn in place) and the
 * one-line summary at its end.
 */
import { formatBytes, formatElapsed } from '../config/units.ts'
import type { FetchProgress, FetchResult } from '../swarm/fetch-file.ts'
import type { OutputStream } from './command.ts'

/** Minimum time between two redraws: at most 4 per second. */
export const REDRAW_INTERVAL_MS = 250

/** Span of the recent samples the transfer rate is computed over. */
const RATE_WINDOW_MS = 5000

/** Width assumed when the terminal does not report one. */
const DEFAULT_COLUMNS = 80

interface Sample {
  at: number
  received: number
}

export interface ProgressBarOptions {
  /** Clock in milliseconds; default performance.now. */
  now?: () => number
}

/** A progress line on a terminal, redrawn at most every REDRAW_INTERVAL_MS. */
export class ProgressBar {
  private readonly terminal: OutputStream
  private readonly now: () => number
  private samples: Sample[] = []
  private lastDraw: number | undefined
  private drawn = false

  constructor (terminal: OutputStream, options: ProgressBarOptions = {}) {
    this.terminal = terminal
    this.now = options.now ?? (() => performance.now())
  }

  /** Records a progress report and redraws the line unless it was drawn less than REDRAW_INTERVAL_MS ago. */
  update (progress: FetchProgress): void {
    const at = this.now()
    this.samples.push({ at, received: progress.received })
    this.samples = this.samples.filter(sample => at - sample.at <= RATE_WINDOW_MS)

    if (this.lastDraw != null && at - this.lastDraw < REDRAW_INTERVAL_MS) return
    this.lastDraw = at
    // A pseudo-terminal without a size reports 0 columns.
    const columns = this.terminal.columns != null && this.terminal.columns > 0 ? this.terminal.columns : DEFAULT_COLUMNS
    const line = formatProgressLine(progress, this.rate(), columns)
    this.terminal.write(`\r${line}\x1b[K`)
    this.drawn = true
  }

  /** Erases the line, so that the next output starts on a clean line. */
  clear (): void {
    if (this.drawn) this.terminal.write('\r\x1b[K')
    this.drawn = false
  }

  /** Bytes per second over the recent samples; undefined until two samples are apart in time. */
  private rate (): number | undefined {
    const first = this.samples[0]
    const last = this.samples[this.samples.length - 1]
    if (first == null || last == null || last.at <= first.at) return undefined
    return (last.received - first.received) / ((last.at - first.at) / 1000)
  }
}

/**
 * Formats one progress line that fits `columns - 1` characters, e.g.
 * ` 45% [#########           ] 45.0 MiB / 100.0 MiB  12.3 MiB/s  3 peers  supernode 40.0 MiB, peers 5.0 MiB, origin 0 B`.
 * The bar is left out when the size is unknown or the terminal is too narrow.
 */
export function formatProgressLine (progress: FetchProgress, bytesPerSecond: number | undefined, columns: number): string {
  const size = progress.size
  const fraction = size != null && size > 0 ? Math.min(1, progress.received / size) : size === 0 ? 1 : undefined

  // 1. The text parts.
  const parts = [
    size != null ? `${formatBytes(progress.received)} / ${formatBytes(size)}` : formatBytes(progress.received),
    bytesPerSecond != null ? `${formatBytes(Math.round(bytesPerSecond))}/s` : '-- B/s',
    `${progress.peers} ${progress.peers === 1 ? 'peer' : 'peers'}`,
    `supernode ${formatBytes(progress.fromSupernode)}, peers ${formatBytes(progress.fromPeers)}, origin ${formatBytes(progress.fromOrigin)}`
  ]
  const percent = fraction != null ? `${Math.floor(fraction * 100).toString().padStart(3)}% ` : ''
  const text = parts.join('  ')

  // 2. A bar in the room that is left, 10 to 30 characters wide.
  const room = columns - 1 - percent.length - text.length - 3
  let bar = ''
  if (fraction != null && room >= 10) {
    const width = Math.min(30, room)
    const filled = Math.floor(fraction * width)
    bar = `[${'#'.repeat(filled)}${' '.repeat(width - filled)}] `
  }

  const line = `${percent}${bar}${text}`
  return line.length > columns - 1 ? line.slice(0, Math.max(0, columns - 1)) : line
}

/** Formats the summary of a finished download, e.g. `fetched /tmp/a.iso (1.0 GiB, sha256:…) in 3.2s, 320.0 MiB/s: supernode …`. */
export function formatSummary (result: FetchResult): string {
  const rate = result.ms > 0 ? `${formatBytes(Math.round(result.size / (result.ms / 1000)))}/s` : '-- B/s'
  const sources = [
    `supernode ${formatBytes(result.fromSupernode)}`,
    `peers ${formatBytes(result.fromPeers)}`,
    `origin ${formatBytes(result.fromOrigin)}`,
    `local ${formatBytes(result.fromLocal)}`
  ].join(', ')
  return `fetched ${result.output} (${formatBytes(result.size)}, ${result.digest}) in ${formatElapsed(result.ms)}, ${rate}: ${sources}`
}
