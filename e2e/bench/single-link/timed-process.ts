/**
 * A short-lived benchmarked process (curl, one `dfnode fetch`) run under GNU
 * time, so its CPU seconds and peak RSS come from the kernel's rusage of the
 * exited process, and its stdout lines are timed as they arrive.
 */
import { spawn } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { TestbedError } from '../swarm/errors.ts'

export const TIME_BINARY = '/usr/bin/time'

/** CPU time and peak memory of one exited process, from GNU time. */
export interface ExitUsage {
  /** User plus system CPU seconds. */
  cpuSeconds: number
  /** Peak resident set size in KiB (ru_maxrss). */
  maxRssKiB: number
}

export interface TimedRun {
  exitCode: number | null
  /** Stdout lines in order, each with the time it was read (ms, performance.now()). */
  lines: Array<{ line: string, atMs: number }>
  /** performance.now() just before the spawn. */
  startedAtMs: number
  /** performance.now() when the process had exited. */
  exitedAtMs: number
  /** process.hrtime in µs just before the spawn; the clock V8 CPU profiles use. */
  startedAtMicros: bigint
  usage: ExitUsage
  stderrTail: string
}

export interface TimedRunInit {
  command: string
  args: readonly string[]
  /** File GNU time writes its report to. */
  usageFile: string
  env?: NodeJS.ProcessEnv
  /** The process is killed after this many ms and the run fails. */
  timeoutMs: number
  /** Called with each stdout line as it arrives. */
  onLine?: (line: string, atMs: number) => void
  /** File that receives the whole stderr of the command. */
  stderrFile?: string
  /** Called with the pid of GNU time once it has been spawned. */
  onSpawn?: (pid: number) => void
}

const STDERR_TAIL_CHARS = 4000

/** Process groups of the runs under way, each GNU time and the command it forked. */
const runningGroups = new Set<number>()

/** Sends SIGTERM to every run under way, GNU time and its command alike. */
export function stopTimedRuns (): void {
  for (const group of runningGroups) killGroup(group, 'SIGTERM')
}

/** Sends `signal` to process group `group`; does nothing when the group has ended. */
function killGroup (group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-group, signal)
  } catch {
    // The group has ended already.
  }
}

/** Runs a command under GNU time to completion; raises TestbedError when it fails or times out. */
export async function runTimed (init: TimedRunInit): Promise<TimedRun> {
  const lines: TimedRun['lines'] = []
  let stderrTail = ''
  const startedAtMicros = process.hrtime.bigint() / 1000n
  const startedAtMs = performance.now()

  // GNU time forks the command and writes "user system maxrss" once it has exited.
  // A process group of its own, so that a kill reaches the command as well as GNU time.
  const child = spawn(TIME_BINARY, ['-o', init.usageFile, '-f', '%U %S %M', init.command, ...init.args], {
    env: { ...process.env, ...init.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true
  })
  const group = child.pid
  if (group != null) {
    runningGroups.add(group)
    init.onSpawn?.(group)
  }
  createInterface({ input: child.stdout }).on('line', line => {
    const atMs = performance.now()
    lines.push({ line, atMs })
    init.onLine?.(line, atMs)
  })
  child.stderr.on('data', (chunk: Buffer) => { stderrTail = (stderrTail + chunk.toString('utf8')).slice(-STDERR_TAIL_CHARS) })
  const stderrLog = init.stderrFile != null ? createWriteStream(init.stderrFile) : undefined
  if (stderrLog != null) child.stderr.pipe(stderrLog)

  const timer = setTimeout(() => { if (group != null) killGroup(group, 'SIGKILL') }, init.timeoutMs)
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    child.on('error', err => { reject(new TestbedError(`cannot start ${TIME_BINARY} ${init.command}: ${err.message}; install GNU time (apt-get install -y time)`, { cause: err })) })
    child.on('close', code => { resolve(code) })
  }).finally(() => {
    clearTimeout(timer)
    if (group != null) runningGroups.delete(group)
  })
  const exitedAtMs = performance.now()
  if (stderrLog != null) await new Promise(resolve => stderrLog.end(resolve))

  if (exitCode !== 0) {
    throw new TestbedError(`${init.command} ${init.args.join(' ')} exited with ${String(exitCode)} (killed after ${init.timeoutMs} ms if null); stderr tail:\n${stderrTail}`)
  }
  const usage = parseUsage(await readFile(init.usageFile, 'utf8'), init.usageFile)
  return { exitCode, lines, startedAtMs, exitedAtMs, startedAtMicros, usage, stderrTail }
}

/** Parses the last line of a GNU time report written with `-f '%U %S %M'`. */
export function parseUsage (text: string, file: string): ExitUsage {
  const last = text.trim().split('\n').at(-1) ?? ''
  const fields = last.trim().split(/\s+/).map(Number)
  const [user, system, maxRss] = fields
  if (fields.length !== 3 || user == null || system == null || maxRss == null || fields.some(Number.isNaN)) {
    throw new TestbedError(`unexpected GNU time report in ${file}: ${JSON.stringify(last)}; expected "user system maxrss"`)
  }
  return { cpuSeconds: user + system, maxRssKiB: maxRss }
}
