/**
 * Logging with pino: one structured line per event to stderr and to
 * `<data dir>/logs/dfnode.log`.
 */
import { join } from 'node:path'
import { pino, type Logger } from 'pino'
import { makeDirectorySync } from './directories.ts'

export type { Logger }

export interface LoggerOptions {
  /** Debug lines too when true; info and above otherwise. */
  verbose?: boolean
  /** Data dir whose logs/dfnode.log receives a copy of every line; none when undefined. */
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

/** Returns DFNODE_LOG_LEVEL when it names a pino level. */
function levelFromEnv (): pino.Level | undefined {
  const fromEnv = process.env.DFNODE_LOG_LEVEL
  return fromEnv != null && LEVELS.has(fromEnv) ? fromEnv as pino.Level : undefined
}

/** Creates the process logger. Its level is DFNODE_LOG_LEVEL if set, else debug with verbose, else info. */
export function createLogger (options: LoggerOptions = {}): Logger {
  const fromEnv = levelFromEnv()
  const level = fromEnv ?? (options.verbose === true ? 'debug' : 'info')
  const levelChosen = fromEnv != null || options.verbose === true
  const stderrLevel = !levelChosen && options.stderrLevel != null && pino.levels.values[options.stderrLevel]! > pino.levels.values[level]!
    ? options.stderrLevel
    : level
  const streams: pino.StreamEntry[] = [{ level: stderrLevel, stream: pino.destination({ fd: 2, sync: true }) }]
  if (options.dataDir != null) {
    const dir = join(options.dataDir, 'logs')
    makeDirectorySync(dir)
    streams.push({ level, stream: pino.destination({ dest: join(dir, 'dfnode.log'), sync: true }) })
  }
  return pino({
    level,
    base: options.role != null ? { role: options.role, pid: process.pid } : { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' }
  }, pino.multistream(streams))
}

/** Returns a logger that drops everything, for library use without output. */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
