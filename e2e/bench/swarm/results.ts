/** Shapes of the benchmark results shared by the table, the plot and the JSON dump. */
import type { LowerBound } from './lower-bound.ts'
import type { SystemRunRecord } from './measure.ts'

export interface ScenarioSettings {
  fileBytes: number
  peerMbit: number
  originMbit: number
  supernodeMbit: number
}

export interface ScenarioResult {
  peerCount: number
  lowerBound: LowerBound
  records: SystemRunRecord[]
}

export interface BenchResults {
  /** Exact command line of the run. */
  command: string
  startedAt: string
  machine: string
  settings: ScenarioSettings
  scenarios: ScenarioResult[]
}

/** Completion times in seconds of the peers that completed, sorted. */
export function completionTimes (record: SystemRunRecord): number[] {
  return record.peers
    .map((peer) => peer.completedSeconds)
    .filter((seconds): seconds is number => seconds != null)
    .sort((a, b) => a - b)
}

/** Median of a sorted list; NaN when empty. */
export function median (sorted: readonly number[]): number {
  if (sorted.length === 0) return NaN
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length % 2 === 1) return sorted[middle] as number
  return ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}
