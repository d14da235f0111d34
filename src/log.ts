/**
 * Logging with pino: one structured line per event to stderr and to
 * `<data dir>/logs/dfnode.log`.
 */
import { join } from 'node:path'
import { pino, type Logger } from 'pino'
import { ConfigError } from './errors.ts'

export type { Logger }

export interface LoggerOptions {
  /** Debug lines too when true; info and above otherwise. */
  verbose?: boolean
  /** Data dir whose logs/dfnode.log receives a copy of every line; none when undefined. Its logs folder must exist. */
  dataDir?: string
  /** Process role, added to every line. */
  role?: string
  /**
   * Lowest level written to stderr, for commands whose stderr a person reads. The log file still
   * receives every line, and --verbose or DFNODE_LOG_LEVEL puts every line on stderr too.
   */
  stderrLevel?: pino.Level
}

/** Header names whose values are replaced before a line is written. */
const REDACTED_PATHS = ['headers.authorization', 'headers.Authorization', 'headers.cookie', 'headers.Cookie', 'req.headers.authorization', 'req.headers.cookie', '*.authorization', '*.Authorization']

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])

/** Returns DFNODE_LOG_LEVEL, or undefined when unset or empty. Raises ConfigError when it names no pino level. */
export function logLevelFromEnv (): pino.Level | undefined {
  const fromEnv = process.env.DFNODE_LOG_LEVEL?.trim()
  if (fromEnv == null || fromEnv === '') return undefined
  if (!LEVELS.has(fromEnv)) throw new ConfigError(`invalid DFNODE_LOG_LEVEL "${fromEnv}": expected one of ${[...LEVELS].join(', ')}`)
  return fromEnv as pino.Level
}

/** File-only loggers by process logger, for lines that must not reach stderr. */
const fileLoggers = new WeakMap<Logger, Logger>()

/**
 * Creates the process logger. Its level is DFNODE_LOG_LEVEL if set, else debug with verbose, else
 * info. With `stderrLevel` in effect, stderr gets each line as plain text instead of JSON.
 */
export function createLogger (options: LoggerOptions = {}): Logger {
  const fromEnv = logLevelFromEnv()
  const level = fromEnv ?? (options.verbose === true ? 'debug' : 'info')
  const levelChosen = fromEnv != null || options.verbose === true
  const plain = !levelChosen && options.stderrLevel != null
  const stderrLevel = plain && pino.levels.values[options.stderrLevel!]! > pino.levels.values[level]! ? options.stderrLevel! : level
  const stderr = pino.destination({ fd: 2, sync: true })
  const streams: pino.StreamEntry[] = [{ level: stderrLevel, stream: plain ? plainTextStream(stderr) : stderr }]
  let file: pino.DestinationStream | undefined
  if (options.dataDir != null) {
    file = pino.destination({ dest: logFileOf(options.dataDir), sync: true })
    streams.push({ level, stream: file })
  }
  const settings: pino.LoggerOptions = {
    level,
    base: options.role != null ? { role: options.role, pid: process.pid } : { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' }
  }
  const logger = pino(settings, pino.multistream(streams))
  if (file != null) fileLoggers.set(logger, pino(settings, file))
  return logger
}

/** Returns the path of the log file in data dir `dataDir`. */
export function logFileOf (dataDir: string): string {
  return join(dataDir, 'logs', 'dfnode.log')
}

/** Returns the logger that writes only to the log file of `logger`, if it has one. */
export function fileLoggerOf (logger: Logger): Logger | undefined {
  return fileLoggers.get(logger)
}

/** Fields of a log line that plain text shows after the message, in this order. */
const PLAIN_FIELDS = ['err', 'supernode', 'peer', 'url', 'ignored']

/** Returns a stream that writes each JSON log line to `out` as `dfnode: warning: message (field: value)`. */
function plainTextStream (out: pino.DestinationStream): pino.DestinationStream {
  return {
    write (line: string): void {
      let entry: Record<string, unknown>
      try {
        entry = JSON.parse(line) as Record<string, unknown>
      } catch {
        out.write(line)
        return
      }
      const level = typeof entry.level === 'number' ? pino.levels.labels[entry.level] : undefined
      const label = level === 'warn' ? 'warning' : level ?? 'log'
      const details = PLAIN_FIELDS.filter(field => entry[field] != null).map(field => `${field}: ${plainValue(entry[field])}`)
      out.write(`dfnode: ${label}: ${String(entry.msg ?? '')}${details.length > 0 ? ` (${details.join(', ')})` : ''}\n`)
    }
  }
}

/** Returns a field value as plain text: an error as its message, a list as its items. */
function plainValue (value: unknown): string {
  if (typeof value === 'string') return value
  if (Array.isArray(value)) return value.map(plainValue).join(' ')
  if (typeof value === 'object' && value != null && 'message' in value) return String((value as { message: unknown }).message)
  return JSON.stringify(value)
}

/** Returns a logger that drops everything, for library use without output. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
