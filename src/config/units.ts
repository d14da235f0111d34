/**
 * Sizes and durations as people write them: `4MiB`, `512KB`, `30s`, `1h30m`.
 */

const KiB = 1024

/** Multipliers of the size units, by lowercase unit; SI units are powers of 1000, IEC units powers of 1024. */
const SIZE_UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  k: KiB,
  ki: KiB,
  kib: KiB,
  m: KiB ** 2,
  mi: KiB ** 2,
  mib: KiB ** 2,
  g: KiB ** 3,
  gi: KiB ** 3,
  gib: KiB ** 3,
  t: KiB ** 4,
  ti: KiB ** 4,
  tib: KiB ** 4
}

/** Milliseconds per duration unit. */
const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000
}

/**
 * Parses a size in bytes: a bare number of bytes (`4194304`) or a number with a unit (`4MiB`, `512KB`, `1.5 GiB`).
 * Units are case-insensitive. KB, MB, GB and TB are powers of 1000, while KiB, MiB, GiB, TiB and K, M, G, T are powers of 1024.
 * Returns undefined when `text` is not such a size or is not a whole number of bytes.
 */
export function parseSize (text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text)
  if (match?.[1] == null) return undefined

  const multiplier = SIZE_UNITS[(match[2] ?? '').toLowerCase()]
  if (multiplier == null) return undefined

  const exact = Number(match[1]) * multiplier
  // Decimal fractions such as 1.1 are not exact in binary, so allow rounding noise but not a fraction of a byte.
  const bytes = Math.round(exact)
  if (Math.abs(exact - bytes) > 1e-6 * multiplier || (multiplier === 1 && !Number.isInteger(exact))) return undefined
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

/**
 * Parses a duration in milliseconds: one or more number-unit pairs (`500ms`, `30s`, `5m`,
 * `1h30m`). A bare number (`30`) is taken in `bareUnit`, or rejected when `bareUnit` is undefined.
 * Returns undefined when `text` is not such a duration.
 */
export function parseDuration (text: string, bareUnit?: 'ms' | 's'): number | undefined {
  const trimmed = text.trim()

  if (/^\d+(?:\.\d+)?$/.test(trimmed)) {
    if (bareUnit == null) return undefined
    return toWholeMilliseconds(Number(trimmed) * (DURATION_UNITS[bareUnit] ?? 1))
  }

  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/i.test(trimmed)) return undefined
  let total = 0
  for (const [, amount, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/gi)) {
    total += Number(amount) * (DURATION_UNITS[(unit ?? '').toLowerCase()] ?? Number.NaN)
  }
  return toWholeMilliseconds(total)
}

function toWholeMilliseconds (ms: number): number | undefined {
  const rounded = Math.round(ms)
  return Number.isSafeInteger(rounded) ? rounded : undefined
}

/** Formats a byte count exactly, in the largest IEC unit that divides it (`4MiB`, `1536B`). */
export function formatSize (bytes: number): string {
  for (const [unit, multiplier] of [['TiB', KiB ** 4], ['GiB', KiB ** 3], ['MiB', KiB ** 2], ['KiB', KiB]] as const) {
    if (bytes >= multiplier && bytes % multiplier === 0) return `${bytes / multiplier}${unit}`
  }
  return `${bytes}B`
}

/** Formats a byte count for people, rounded to one decimal in the largest fitting IEC unit (`12.3 MiB`). */
export function formatBytes (bytes: number): string {
  if (bytes < KiB) return `${bytes} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes / KiB
  let index = 0
  while (value >= KiB && index < units.length - 1) {
    value /= KiB
    index++
  }
  return `${value.toFixed(1)} ${units[index] ?? 'TiB'}`
}

/** Formats milliseconds as the largest units that divide them (`1h30m`, `45s`, `250ms`). */
export function formatDuration (ms: number): string {
  if (ms === 0) return '0s'
  if (ms % 1000 !== 0) return `${ms}ms`

  let seconds = ms / 1000
  const hours = Math.floor(seconds / 3600)
  seconds -= hours * 3600
  const minutes = Math.floor(seconds / 60)
  seconds -= minutes * 60
  return `${hours > 0 ? `${hours}h` : ''}${minutes > 0 ? `${minutes}m` : ''}${seconds > 0 ? `${seconds}s` : ''}`
}

/** Formats elapsed milliseconds for people, with one decimal in seconds (`3.2s`), or in ms below one second. */
export function formatElapsed (ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`
}
