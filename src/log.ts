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
  /** Skip stderr (the log file still receives every line). */
  quiet?: boolean
}

/** Header names whose values are replaced before a line is written. */
const REDACTED_PATHS = ['headers.authorization', 'headers.Authorization', 'headers.cookie', 'headers.Cookie', 'req.headers.authorization', 'req.headers.cookie', '*.authorization', '*.Authorization']

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace'])

/** Returns the level: DFNODE_LOG_LEVEL when it names a pino level, else debug with verbose, else info. */
function logLevel (verbose: boolean): pino.Level {
  const fromEnv = process.env.DFNODE_LOG_LEVEL
  if (fromEnv != null && LEVELS.has(fromEnv)) return fromEnv as pino.Level
  return verbose ? 'debug' : 'info'
}

/** Creates the process logger. */
export function createLogger (options: LoggerOptions = {}): Logger {
  const level = logLevel(options.verbose === true)
  const streams: pino.StreamEntry[] = []
  if (options.quiet !== true) streams.push({ level, stream: pino.destination({ fd: 2, sync: true }) })
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
