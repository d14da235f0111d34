/**
 * A process started inside a host's namespace under GNU time, so its CPU
 * seconds and peak RSS come from the kernel's rusage of the exited process
 * (wait4), including threads and any children it waited for.
 *
 * The chain is `ip netns exec NS /usr/bin/time -o FILE -f FORMAT cmd...`:
 * ip execs time in place, and time forks the command. Signals go to the
 * command itself, never to time, so time survives to write the usage file.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { TestbedError } from './errors.ts'
import { withinTimeout } from './timeouts.ts'

export const TIME_BINARY = '/usr/bin/time'
const USAGE_MARK = 'DFB-USAGE'
const TAIL_CHARS = 8 * 1024

/** Resource use of one exited process as reported by GNU time. */
export interface ProcessUsage {
  /** Wall-clock seconds from fork to exit. */
  wallSeconds: number
  /** User plus system CPU seconds. */
  cpuSeconds: number
  /** Peak resident set size in KiB (ru_maxrss). */
  maxRssKiB: number
}

export interface ProcessResult {
  label: string
  /** Exit code of the command, or null when a signal ended it. */
  exitCode: number | null
  /** Signal that ended the command, as GNU time reports it, or null. */
  signal: number | null
  /** Undefined when GNU time did not write its report. */
  usage: ProcessUsage | undefined
  /** Last characters of the command's stderr. */
  stderrTail: string
  /** performance.now() when the runner saw the process end. */
  endedAtMs: number
}

export interface HostProcessInit {
  /** Name in reports, e.g. `p03 aria2c`. */
  label: string
  namespace: string
  command: string
  args: readonly string[]
  /** File GNU time writes its report to. */
  usageFile: string
  cwd?: string
  env?: NodeJS.ProcessEnv
}

export interface TimedLine {
  line: string
  /** performance.now() when the runner read the line. */
  atMs: number
}

type LineListener = (line: TimedLine) => void

/** One benchmarked process; construction spawns nothing, `start()` does. */
export class HostProcess {
  readonly label: string
  private readonly init: HostProcessInit
  private child: ChildProcess | undefined
  private readonly listeners: LineListener[] = []
  private stdoutRest = ''
  private stderrTail = ''
  private exitPromise: Promise<ProcessResult> | undefined
  private result: ProcessResult | undefined

  constructor (init: HostProcessInit) {
    this.label = init.label
    this.init = init
  }

  /** Spawns the process; `exited` resolves when it and GNU time have ended. */
  start (): void {
    if (this.child != null) throw new TestbedError(`process ${this.label} was already started`)
    const { namespace, command, args, usageFile } = this.init
    const argv = ['netns', 'exec', namespace, TIME_BINARY, '-o', usageFile, '-f', `${USAGE_MARK} %e %U %S %M`, command, ...args]
    const child = spawn('ip', argv, { cwd: this.init.cwd, env: this.init.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child

    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (chunk: string) => { this.readStdout(chunk) })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk: string) => { this.stderrTail = (this.stderrTail + chunk).slice(-TAIL_CHARS) })

    this.exitPromise = new Promise((resolve) => {
      child.on('error', (err) => {
        this.stderrTail += `\ncould not start ip netns exec: ${err.message}`
      })
      child.on('close', (code) => {
        const endedAtMs = performance.now()
        if (this.stdoutRest !== '') this.emitLine(this.stdoutRest)
        this.stdoutRest = ''
        void this.collect(code, endedAtMs).then((result) => {
          this.result = result
          resolve(result)
        })
      })
    })
  }

  /** Resolves with the result once the process has ended. */
  get exited (): Promise<ProcessResult> {
    if (this.exitPromise == null) throw new TestbedError(`process ${this.label} was never started`)
    return this.exitPromise
  }

  /** True once start() has run. */
  get isStarted (): boolean {
    return this.child != null
  }

  /** True once the process has ended and its result is read. */
  get hasExited (): boolean {
    return this.result != null
  }

  /** Calls `listener` for every stdout line from now on. */
  onLine (listener: LineListener): void {
    this.listeners.push(listener)
  }

  /**
   * Waits for the first stdout line that satisfies `predicate`. Rejects when
   * the process ends first or `timeoutMs` passes.
   */
  async waitForLine (predicate: (line: string) => boolean, timeoutMs: number): Promise<TimedLine> {
    const exited = this.exited
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new TestbedError(`${this.label} printed no expected line within ${(timeoutMs / 1000).toFixed(0)} s; stderr: ${lastLines(this.stderrTail, 10)}`))
      }, timeoutMs)
      this.onLine((timed) => {
        if (!predicate(timed.line)) return
        clearTimeout(timer)
        resolve(timed)
      })
      void exited.then((result) => {
        clearTimeout(timer)
        reject(new TestbedError(`${this.label} ended (exit ${result.exitCode ?? 'by signal ' + String(result.signal)}) before printing the expected line; stderr: ${lastLines(result.stderrTail, 10)}`))
      })
    })
  }

  /**
   * Sends SIGTERM to the command, then SIGKILL after `graceMs`, and returns
   * its result. Returns at once when it has already ended.
   */
  async stop (graceMs = 10_000): Promise<ProcessResult> {
    if (this.child == null) throw new TestbedError(`process ${this.label} was never started`)
    if (this.result != null) return this.result

    await this.signalCommand('SIGTERM')
    const ended = await withinTimeout(this.exited, graceMs)
    if (ended != null) return ended

    await this.signalCommand('SIGKILL')
    const killed = await withinTimeout(this.exited, 5_000)
    if (killed != null) return killed

    // The command is gone or stuck in the kernel; end GNU time too so the run can go on.
    if (this.child.pid != null) signalPid(this.child.pid, 'SIGKILL')
    return await this.exited
  }

  private async signalCommand (signal: NodeJS.Signals): Promise<void> {
    const timePid = this.child?.pid
    if (timePid == null) return

    // GNU time forks right after it starts, so a missing child is short-lived.
    for (let attempt = 0; attempt < 50; attempt++) {
      if (this.result != null) return
      const children = await childPids(timePid)
      if (children.length > 0) {
        for (const pid of children) signalPid(pid, signal)
        return
      }
      await sleep(20)
    }
    signalPid(timePid, signal)
  }

  private readStdout (chunk: string): void {
    const text = this.stdoutRest + chunk
    const lines = text.split('\n')
    this.stdoutRest = lines.pop() ?? ''
    for (const line of lines) this.emitLine(line)
  }

  private emitLine (line: string): void {
    const timed = { line: line.replace(/\r$/, ''), atMs: performance.now() }
    for (const listener of [...this.listeners]) listener(timed)
  }

  private async collect (ipExitCode: number | null, endedAtMs: number): Promise<ProcessResult> {
    const report = await readFile(this.init.usageFile, 'utf8').catch(() => '')
    const usage = parseUsage(report)
    const signalMatch = /Command terminated by signal (\d+)/.exec(report)
    const exitMatch = /Command exited with non-zero status (\d+)/.exec(report)
    let exitCode: number | null = ipExitCode
    if (signalMatch != null) exitCode = null
    else if (exitMatch != null) exitCode = Number(exitMatch[1])
    else if (usage != null) exitCode = 0
    return {
      label: this.label,
      exitCode,
      signal: signalMatch != null ? Number(signalMatch[1]) : null,
      usage,
      stderrTail: this.stderrTail,
      endedAtMs
    }
  }
}

/** Parses the line GNU time writes with the format `DFB-USAGE %e %U %S %M`. */
export function parseUsage (report: string): ProcessUsage | undefined {
  const line = report.split('\n').find((entry) => entry.startsWith(USAGE_MARK + ' '))
  if (line == null) return undefined
  const [wall, user, system, rss] = line.slice(USAGE_MARK.length + 1).trim().split(/\s+/).map(Number)
  if (wall == null || user == null || system == null || rss == null || [wall, user, system, rss].some((value) => !Number.isFinite(value))) return undefined
  return { wallSeconds: wall, cpuSeconds: user + system, maxRssKiB: rss }
}

/** Returns the last `count` non-empty lines of `text`, joined by ' | '. */
export function lastLines (text: string, count: number): string {
  return text.split('\n').map((line) => line.trim()).filter((line) => line !== '').slice(-count).join(' | ')
}

async function childPids (pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  return text.split(/\s+/).filter((entry) => entry !== '').map(Number)
}

function signalPid (pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // Already gone.
  }
}
