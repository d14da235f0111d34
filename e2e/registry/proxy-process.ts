/**
 * Runs `dfnode proxy` as a child process with Node 24 through bin/dfnode, as
 * a user starts it, and reads the URL it prints once it listens.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { dfnodeArgv } from '../../test/helpers/dfnode-process.ts'

const root = fileURLToPath(new URL('../..', import.meta.url))
/** Node 24 installed by `npm ci`; the machine's own node may be older. */
const NODE = `${root}node_modules/.bin/node`
/** Environment that config/dfnode-proxy.service and the Kubernetes DaemonSet give the proxy. */
export const PROXY_ENV = { MALLOC_MMAP_THRESHOLD_: '2097152' }

export class ProxyProcess {
  readonly child: ChildProcess
  /** URL the proxy listens on. */
  url = ''
  stderr = ''
  private readonly exited: Promise<number | null>

  private constructor (child: ChildProcess) {
    this.child = child
    this.exited = new Promise(resolve => child.once('exit', resolve))
    child.stderr?.on('data', (chunk: Buffer) => { this.stderr += chunk.toString() })
  }

  /** Starts `dfnode proxy ...args` and waits up to 60 s for its URL line. */
  static async start (args: string[]): Promise<ProxyProcess> {
    const child = spawn(NODE, dfnodeArgv(['proxy', '--port', '0', ...args]), { cwd: root, env: { ...process.env, ...PROXY_ENV }, stdio: ['ignore', 'pipe', 'pipe'] })
    const proxy = new ProxyProcess(child)
    const lines = createInterface({ input: child.stdout! })
    try {
      proxy.url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`proxy printed no URL within 60 s: ${proxy.stderr.slice(-3000)}`)) }, 60_000)
        lines.once('line', line => { clearTimeout(timer); resolve(line) })
        void proxy.exited.then(code => { clearTimeout(timer); reject(new Error(`proxy exited with ${String(code)}: ${proxy.stderr.slice(-3000)}`)) })
      })
    } catch (err) {
      await proxy.stop()
      throw err
    }
    return proxy
  }

  /** Sends SIGTERM, then SIGKILL after 10 s, and returns the exit code. */
  async stop (): Promise<number | null> {
    if (this.child.exitCode == null && this.child.signalCode == null) this.child.kill('SIGTERM')
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, 10_000)
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
    }
  }
}
