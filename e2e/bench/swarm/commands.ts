/**
 * Runs short system commands (ip, tc, cat inside a namespace) and returns
 * their stdout, raising TestbedError with the command line and stderr.
 */
import { execFile } from 'node:child_process'
import { TestbedError } from './errors.ts'

export interface RunCommandOptions {
  /** Kill the command after this many milliseconds. Default 30 000. */
  timeoutMs?: number
  /** Working directory. Default: the current one. */
  cwd?: string
}

/** Runs `file args...` to completion and returns its stdout. */
export async function runCommand (file: string, args: readonly string[], options: RunCommandOptions = {}): Promise<string> {
  const timeoutMs = options.timeoutMs ?? 30_000
  return await new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 << 20, cwd: options.cwd, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err == null) {
        resolve(stdout)
        return
      }
      const detail = stderr.trim() !== '' ? stderr.trim() : err.message
      reject(new TestbedError(`command failed: ${file} ${args.join(' ')}: ${detail}`, { cause: err }))
    })
  })
}

/** Runs a command inside a network namespace and returns its stdout. */
export async function runInNamespace (namespace: string, argv: readonly string[], options: RunCommandOptions = {}): Promise<string> {
  return await runCommand('ip', ['netns', 'exec', namespace, ...argv], options)
}
