/**
 * Parts every command shares: the global options, loading the configuration,
 * and the logger's lifetime.
 */
import { once, type EventEmitter } from 'node:events'
import { dirname } from 'node:path'
import { pino } from 'pino'
import { loadConfig, type ConfigFlags } from '../config/load.ts'
import type { Config } from '../config/schema.ts'
import { makeDirectory } from '../directories.ts'
import { ConfigError } from '../errors.ts'
import { createLogger, fileLoggerOf, logFileOf, logLevelFromEnv, type Logger, type LoggerOptions } from '../log.ts'
import { booleanOption, stringOption, type Invocation, type OptionSpec } from './command.ts'

/** Options every command takes. */
export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { name: 'config', type: 'string', description: 'YAML config file of supernode, proxy and fetch; gen-ca and containerd-config read none (default: $DFNODE_CONFIG, else /etc/dfnode/config.yaml if it exists)' },
  { name: 'data-dir', type: 'string', description: 'Directory for pieces, identity key and logs of supernode, proxy and fetch (default: $DFNODE_DATA_DIR, else ~/.dfnode)' },
  { name: 'verbose', type: 'boolean', description: 'Log debug lines of supernode, proxy and fetch too, and let fetch put every log line on stderr (default: off, or $DFNODE_VERBOSE)' }
]

/** Loads the configuration of a command from the global options, the environment and the command's own `flags`. */
export async function loadCommandConfig (invocation: Invocation, role: string, flags: ConfigFlags): Promise<Config> {
  const { options, io } = invocation
  const home = io.env.HOME
  return await loadConfig({
    role,
    configPath: stringOption(options, 'config'),
    env: io.env,
    cwd: io.cwd,
    ...(home != null && home !== '' ? { home } : {}),
    flags: {
      dataDir: stringOption(options, 'data-dir'),
      verbose: booleanOption(options, 'verbose'),
      ...flags
    }
  })
}

/**
 * Creates the logger of a command, runs `work` with it, and writes out the log file before
 * returning, so that the process can exit right after. A failure is logged to the log file
 * (with its stack) and rethrown for main to print.
 */
export async function runWithLogger<T> (config: Config, role: string, work: (logger: Logger) => Promise<T>, options: Pick<LoggerOptions, 'stderrLevel'> = {}): Promise<T> {
  // An invalid DFNODE_LOG_LEVEL stops the command before anything is created.
  logLevelFromEnv()
  let logger: Logger
  try {
    await makeDirectory(dirname(logFileOf(config.dataDir)))
    logger = createLogger({ verbose: config.verbose, dataDir: config.dataDir, role, ...options })
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError(`cannot create data dir ${config.dataDir} or its logs folder: ${(err as Error).message}; pass a writable directory with --data-dir or DFNODE_DATA_DIR`, { cause: err })
  }

  try {
    return await work(logger)
  } catch (err) {
    // The log file gets the error that ends the command; stderr gets it from main as one line.
    const file = fileLoggerOf(logger)
    if (file != null) file.error({ err }, `${role} failed`)
    else logger.debug({ err }, `${role} failed`)
    throw err
  } finally {
    await flushLogger(logger)
  }
}

/** The parts of a sonic-boom stream (pino's file destination) that flushing needs. */
interface FileDestination {
  fd: number
  destroyed?: boolean
  flushSync (): void
}

/** Time to wait for a log file to open before giving up on writing it out. */
const LOG_OPEN_TIMEOUT_MS = 2000

/**
 * Waits until each log file is open, then writes out what pino buffered.
 * pino flushes its file streams when the process exits, but throws if a file is not open yet,
 * which happens when a command fails right after creating its logger.
 */
export async function flushLogger (logger: Logger): Promise<void> {
  const multistream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { streams?: Array<{ stream: unknown }> } | undefined

  for (const { stream } of multistream?.streams ?? []) {
    const destination = stream as Partial<FileDestination>
    if (typeof destination.flushSync !== 'function' || destination.destroyed === true) continue
    try {
      if (destination.fd === -1) await once(stream as EventEmitter, 'ready', { signal: AbortSignal.timeout(LOG_OPEN_TIMEOUT_MS) })
      destination.flushSync()
    } catch {
      // A log file that cannot be written must not change the outcome of the command.
    }
  }
}
