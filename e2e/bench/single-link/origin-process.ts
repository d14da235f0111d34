/**
 * The benchmark's HTTP origin (swarm/origin-server.ts) as a child process,
 * started on a loopback port and stopped with SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { NODE } from '../../../test/helpers/dfnode-process.ts'
import { TestbedError } from '../swarm/errors.ts'

const ORIGIN_SERVER = new URL('../swarm/origin-server.ts', import.meta.url).pathname

export class OriginProcess {
  readonly url: string
  readonly pid: number
  private readonly child: ChildProcess
  private readonly exited: Promise<unknown>

  private constructor (child: ChildProcess, url: string) {
    this.child = child
    this.url = url
    this.pid = child.pid!
    this.exited = new Promise(resolve => child.on('exit', resolve))
  }

  /** Starts the origin serving `file` at http://127.0.0.1:PORT/file.bin and waits until it listens. */
  static async start (file: string, port: number): Promise<OriginProcess> {
    const child = spawn(NODE, [ORIGIN_SERVER, '--file', file, '--host', '127.0.0.1', '--port', String(port), '--path', '/file.bin'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
    const ready = new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', line => { if (line.startsWith('listening')) resolve() })
      child.on('exit', code => { reject(new TestbedError(`origin server exited with ${String(code)} before listening: ${stderr.slice(-2000)}`)) })
      setTimeout(() => { reject(new TestbedError(`origin server did not listen on port ${port} within 15 s: ${stderr.slice(-2000)}`)) }, 15_000).unref()
    })
    const origin = new OriginProcess(child, `http://127.0.0.1:${port}/file.bin`)
    try {
      await ready
    } catch (err) {
      await origin.stop()
      throw err
    }
    return origin
  }

  async stop (): Promise<void> {
    if (this.child.exitCode == null && this.child.signalCode == null) this.child.kill('SIGTERM')
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, 10_000)
    await this.exited
    clearTimeout(timer)
  }
}
