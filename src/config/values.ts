/**
 * Parsing and validation of each config key, whatever layer its value comes
 * from. Every failure is a ConfigError naming the key, the value, where it was
 * set and what is accepted.
 */
import { isAbsolute, resolve } from 'node:path'
import { ConfigError } from '../errors.ts'
import { MAX_PIECE_SIZE, MIN_PIECE_SIZE } from '../content/pieces.ts'
import { parseHostPort, tcpMultiaddrProblem, type TcpMultiaddrRules } from './addresses.ts'
import { MAX_TIMER_MS, type Config } from './schema.ts'
import { formatDuration, formatSize, parseDuration, parseSize } from './units.ts'

/** Layer that set a value: the config file, an environment variable or a flag. */
export type Source =
  | { kind: 'file', path: string }
  | { kind: 'env', name: string }
  | { kind: 'flag', name: string }

export interface ValueContext {
  key: keyof Config
  source: Source
  /** Directory relative paths resolve against. */
  baseDir: string
  /** Home directory that a leading `~` stands for. */
  home: string
}

/**
 * Builds the error for an invalid value of a key. It names the setting as the user wrote it: the
 * key and the file, the environment variable, or the flag.
 */
export function invalidValue (context: ValueContext, value: unknown, expected: string): ConfigError {
  return new ConfigError(`invalid ${describeSetting(context.key, context.source, value)}: expected ${expected}`)
}

/** Names a setting and its value as the user wrote them: `timeoutMs "30" in FILE`, `DFNODE_TIMEOUT "x"`, `--timeout "x"`. */
export function describeSetting (key: keyof Config, source: Source, value: unknown): string {
  return source.kind === 'file' ? `${key} ${showValue(value)} in ${source.path}` : `${source.name} ${showValue(value)}`
}

/** Quotes a value for a message, shortened when long. */
function showValue (value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value)
  const short = text.length > 120 ? `${text.slice(0, 117)}...` : text
  return typeof value === 'string' ? `"${short}"` : short
}

const TRUE_WORDS = new Set(['true', 'yes', 'on', '1'])
const FALSE_WORDS = new Set(['false', 'no', 'off', '0'])

function toBoolean (raw: unknown, context: ValueContext): boolean {
  if (typeof raw === 'boolean') return raw
  if (typeof raw === 'string') {
    const word = raw.trim().toLowerCase()
    if (TRUE_WORDS.has(word)) return true
    if (FALSE_WORDS.has(word)) return false
  }
  throw invalidValue(context, raw, 'true or false (also yes/no, on/off, 1/0)')
}

/** Parses the port of direct links: 0 to 65535, or false for "off". */
function toDataPort (raw: unknown, context: ValueContext): number | false {
  if (raw === false || (typeof raw === 'string' && raw.trim().toLowerCase() === 'off')) return false
  const port = typeof raw === 'string' && /^\s*\d+\s*$/.test(raw) ? Number(raw) : raw
  if (typeof port === 'number' && Number.isInteger(port) && port >= 0 && port <= 65535) return port
  throw invalidValue(context, raw, 'a TCP port from 1 to 65535, 0 for one the system picks, or off to send pieces over libp2p only')
}

/** Turns a list (array or comma-separated string) into its trimmed, non-empty entries. */
function toList (raw: unknown, context: ValueContext, expected: string): string[] {
  const items = typeof raw === 'string' ? [raw] : raw
  if (!Array.isArray(items)) throw invalidValue(context, raw, `a list of ${expected}`)

  const entries: string[] = []
  for (const item of items) {
    if (typeof item !== 'string') throw invalidValue(context, item, `a list of ${expected}`)
    for (const part of item.split(',')) {
      const entry = part.trim()
      if (entry !== '') entries.push(entry)
    }
  }
  return entries
}

function toSize (raw: unknown, context: ValueContext, expected: string): number {
  let bytes: number | undefined
  if (typeof raw === 'number') bytes = raw
  else if (typeof raw === 'string') bytes = parseSize(raw)
  if (bytes == null || !Number.isSafeInteger(bytes) || bytes < 0) throw invalidValue(context, raw, expected)
  return bytes
}

/**
 * Parses a duration to milliseconds. In a config file a number is milliseconds, the unit in the key names
 * (timeoutMs, seedMs), and a string needs a unit. From the environment or a flag a bare number is seconds.
 */
function toDuration (raw: unknown, context: ValueContext): number {
  const fromFile = context.source.kind === 'file'
  const expected = fromFile
    ? `milliseconds as a number, or a duration with a unit (ms, s, m, h) such as "30s" or "5m", up to ${formatDuration(MAX_TIMER_MS)}`
    : `seconds, or a duration with a unit (ms, s, m, h) such as 30s or 5m, up to ${formatDuration(MAX_TIMER_MS)}`

  let ms: number | undefined
  if (typeof raw === 'number' && fromFile) ms = raw
  else if (typeof raw === 'string') ms = parseDuration(raw, fromFile ? undefined : 's')

  if (ms == null || !Number.isSafeInteger(ms) || ms < 0 || ms > MAX_TIMER_MS) throw invalidValue(context, raw, expected)
  return ms
}

function toPath (raw: unknown, context: ValueContext): string {
  if (typeof raw !== 'string' || raw.trim() === '' || raw.includes('\0')) throw invalidValue(context, raw, 'a directory path')
  const expanded = raw === '~' ? context.home : raw.startsWith('~/') ? context.home + raw.slice(1) : raw
  return isAbsolute(expanded) ? resolve(expanded) : resolve(context.baseDir, expanded)
}

function toMultiaddrs (raw: unknown, context: ValueContext, rules: TcpMultiaddrRules, example: string): string[] {
  const entries = toList(raw, context, 'multiaddrs')
  for (const entry of entries) {
    const problem = tcpMultiaddrProblem(entry, rules)
    if (problem != null) throw invalidValue(context, entry, `a multiaddr such as ${example}, but it is ${problem}`)
  }
  return entries
}

/** Accepted forms of an allowOrigins entry. */
const ORIGIN_EXPECTED = 'a host such as registry.example.com or registry.example.com:5000, or * for any host, without a scheme or path'

function toOrigins (raw: unknown, context: ValueContext): string[] {
  const entries = toList(raw, context, 'hosts')
  // Values that are all empty, such as `--allow-origin "$REGISTRY"` with the variable unset, would
  // allow nothing. An empty list, as in the example config file, is the default and stays valid.
  const values = typeof raw === 'string' ? [raw] : raw
  if (entries.length === 0 && Array.isArray(values) && values.length > 0) throw invalidValue(context, values.length === 1 ? values[0] : raw, ORIGIN_EXPECTED)
  return entries.map(entry => {
    if (entry === '*') return entry
    const parsed = parseHostPort(entry)
    if (parsed == null) throw invalidValue(context, entry, ORIGIN_EXPECTED)
    const host = parsed.family === 'ip6' ? `[${parsed.host}]` : parsed.host
    return parsed.port != null ? `${host}:${parsed.port}` : host
  })
}

/** Parses a piece size. "auto" gives undefined, which chooses the size by content size. */
function toPieceSize (raw: unknown, context: ValueContext): number | undefined {
  if (raw === 'auto') return undefined
  const expected = `"auto", or a power of two from ${formatSize(MIN_PIECE_SIZE)} to ${formatSize(MAX_PIECE_SIZE)} such as 1MiB or 4MiB (KB and MB count in powers of 1000, so 4MB is none)`
  const bytes = toSize(raw, context, expected)
  const powerOfTwo = (bytes & (bytes - 1)) === 0
  if (bytes < MIN_PIECE_SIZE || bytes > MAX_PIECE_SIZE || !powerOfTwo) throw invalidValue(context, raw, expected)
  return bytes
}

function toStoreQuota (raw: unknown, context: ValueContext): number {
  const bytes = toSize(raw, context, 'a size in bytes or with a unit, such as 20GiB or 500GB')
  if (bytes === 0) throw invalidValue(context, raw, 'a size above zero, such as 20GiB')
  return bytes
}

function toQueryNames (raw: unknown, context: ValueContext): string[] {
  const names = toList(raw, context, 'query parameter names')
  for (const name of names) {
    if (/[\s&=#?]/.test(name)) throw invalidValue(context, name, 'query parameter names without spaces, &, =, # or ?')
    if (name.slice(0, -1).includes('*')) throw invalidValue(context, name, 'query parameter names, each either exact or a prefix followed by one * at its end, such as X-Amz-*')
  }
  return names
}

type ValueParsers = { readonly [K in keyof Config]: (raw: unknown, context: ValueContext) => Config[K] }

/** Parser of each key: turns a raw value (YAML value, environment string or flag value) into its typed value. */
export const VALUE_PARSERS: ValueParsers = {
  dataDir: toPath,
  verbose: toBoolean,
  supernodes: (raw, context) => toMultiaddrs(raw, context, { hostnames: true, peerId: true }, '/ip4/192.0.2.1/tcp/8002/p2p/<peer id> or /dns/supernode.example.com/tcp/8002'),
  listen: (raw, context) => toMultiaddrs(raw, context, { hostnames: false, peerId: false }, '/ip4/0.0.0.0/tcp/8002'),
  announce: (raw, context) => toMultiaddrs(raw, context, { hostnames: true, peerId: false }, '/ip4/203.0.113.5/tcp/8002 or /dns/node.example.com/tcp/8002'),
  allowOrigins: toOrigins,
  pieceSize: toPieceSize,
  backSource: toBoolean,
  filter: toQueryNames,
  timeoutMs: toDuration,
  seedMs: toDuration,
  storeQuotaBytes: toStoreQuota,
  uploadRate: (raw, context) => toSize(raw, context, 'bytes per second, or a size with a unit such as 10MiB; 0 for no limit'),
  dataPort: toDataPort
}

/** Parses the raw value of one key. */
export function parseValue<K extends keyof Config> (key: K, raw: unknown, context: Omit<ValueContext, 'key'>): Config[K] {
  const parser = VALUE_PARSERS[key] as (raw: unknown, context: ValueContext) => Config[K]
  return parser(raw, { ...context, key })
}
