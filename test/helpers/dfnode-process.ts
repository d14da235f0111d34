/**
 * Runs `bin/dfnode` as a child process with Node 24, collecting its stdout
 * lines and stderr, and stops it when the test ends.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'

const root = fileURLToPath(new URL('../..', import.meta.url))
export const DFNODE = `${root}bin/dfnode`
/** Node 24 installed by `npm ci`; the machine's own node may be older. */
export const NODE = `${root}node_modules/.bin/node`
/**
 * Node options on the `#!/usr/bin/env -S node ...` line of bin/dfnode. A script that starts
 * `node bin/dfnode` passes them, so the process runs as the installed command does.
 */
export const DFNODE_NODE_OPTIONS: readonly string[] = shebangOptions(readFileSync(DFNODE, 'utf8'))

/** Returns the argv that runs `dfnode args...` with Node 24 and the launcher's options. */
export function dfnodeArgv (args: readonly string[]): string[] {
  return [...DFNODE_NODE_OPTIONS, DFNODE, ...args]
}

function shebangOptions (script: string): string[] {
  const first = script.slice(0, script.indexOf('\n'))
  const match = /^#!\S*env -S node((?: \S+)*)$/.exec(first)
  if (match == null) throw new Error(`first line of ${DFNODE} is not '#!/usr/bin/env -S node [options]': ${first}`)
  return match[1]!.split(' ').filter(option => option !== '')
}

/** Children still running. A test file that crashes ends without its after hooks, so these go with it. */
const running = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL')
})

export class DfnodeProcess {
  readonly child: ChildProcess
  readonly lines: string[] = []
  stderr = ''
  readonly exited: Promise<number | null>
  private readonly lineWaiters: Array<{ match: (line: string) => boolean, resolve: (line: string) => void }> = []

  constructor (args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(NODE, dfnodeArgv(args), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(this.child)
    this.child.once('exit', () => { running.delete(this.child) })
    createInterface({ input: this.child.stdout! }).on('line', line => {
      this.lines.push(line)
      for (const waiter of [...this.lineWaiters]) {
        if (waiter.match(line)) {
          this.lineWaiters.splice(this.lineWaiters.indexOf(waiter), 1)
          waiter.resolve(line)
        }
      }
    })
    this.child.stderr!.on('data', (chunk: Buffer) => { this.stderr += chunk.toString('utf8') })
    this.exited = new Promise(resolve => this.child.on('exit', code => { resolve(code) }))
  }

  /** Waits for a stdout line matching `match`, failing with the stderr tail after `ms`. */
  async line (match: (line: string) => boolean, ms = 60_000): Promise<string> {
    const seen = this.lines.find(match)
    if (seen != null) return seen
    const { promise, resolve, reject } = Promise.withResolvers<string>()
    this.lineWaiters.push({ match, resolve })
    const timer = setTimeout(() => { reject(new Error(`no matching line within ${ms} ms; stderr tail:\n${this.stderr.slice(-3000)}`)) }, ms)
    void this.exited.then(code => { setTimeout(() => { reject(new Error(`process exited with ${String(code)} before the line; stderr tail:\n${this.stderr.slice(-3000)}`)) }, 100) })
    try {
      return await promise
    } finally {
      clearTimeout(timer)
    }
  }

  /** Parses the first JSON object printed on stdout. */
  async json<T = Record<string, unknown>> (ms = 120_000): Promise<T> {
    return JSON.parse(await this.line(line => line.startsWith('{'), ms)) as T
  }

  async stop (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode == null && this.child.signalCode == null) this.child.kill(signal)
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, 10_000)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }
}

/** Starts a supernode on loopback and returns it with its first multiaddr. */
export async function startSupernodeProcess (dataDir: string, allowOrigin = '127.0.0.1', extra: string[] = []): Promise<{ process: DfnodeProcess, address: string }> {
  const process = new DfnodeProcess(['supernode', '--listen', '/ip4/127.0.0.1/tcp/0', '--allow-origin', allowOrigin, '--data-dir', dataDir, ...extra])
  const address = await process.line(line => line.startsWith('/ip4/'), 30_000)
  return { process, address }
}

/** JSON summary that `dfnode fetch --json` prints. */
export interface FetchSummary {
  key: string
  digest: string
  size: number
  output: string
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
  ms: number
}

/** Returns `sha256:<hex>` of some bytes. */
export function sha256 (bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}
