/**
 * A private containerd (Debian package containerd) for tests: its own root,
 * state and socket under a temp dir, no CRI plugin, and a `ctr` runner.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { openSync } from 'node:fs'
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface CtrResult {
  code: number
  stdout: string
  stderr: string
}

export class TestContainerd {
  readonly dir: string
  /** gRPC socket to pass as `ctr --address`. */
  readonly address: string
  private readonly child: ChildProcess

  private constructor (dir: string, address: string, child: ChildProcess) {
    this.dir = dir
    this.address = address
    this.child = child
  }

  /** Starts containerd and waits until `ctr version` succeeds. */
  static async start (): Promise<TestContainerd> {
    const dir = await mkdtemp(join(tmpdir(), 'dfnode-containerd-'))
    const address = join(dir, 'containerd.sock')
    const config = [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${join(dir, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]',
      '[grpc]',
      `  address = "${address}"`,
      '[ttrpc]',
      `  address = "${address}.ttrpc"`,
      '[debug]',
      `  address = "${join(dir, 'debug.sock')}"`
    ].join('\n')
    await writeFile(join(dir, 'config.toml'), config + '\n')
    const log = openSync(join(dir, 'containerd.log'), 'a')
    const child = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: ['ignore', log, log] })
    const containerd = new TestContainerd(dir, address, child)

    for (let attempt = 0; attempt < 100; attempt++) {
      if (child.exitCode != null) break
      const ready = await access(address).then(() => true, () => false)
      if (ready && (await containerd.ctr(['version'])).code === 0) return containerd
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const output = await readFile(join(dir, 'containerd.log'), 'utf8').catch(() => '')
    await containerd.stop()
    throw new Error(`containerd did not start within 10 s: ${output.slice(-2000)}`)
  }

  /** Runs `ctr --address <socket> ...args`; never rejects, the exit code is in the result. */
  async ctr (args: readonly string[], timeoutMs = 120_000): Promise<CtrResult> {
    return await new Promise(resolve => {
      execFile('ctr', ['--address', this.address, ...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        const code = err == null ? 0 : typeof (err as NodeJS.ErrnoException).code === 'number' ? (err as unknown as { code: number }).code : 1
        const killed = err != null && (err as { killed?: boolean }).killed === true ? `\nctr ${args[0] ?? ''} was killed after ${timeoutMs} ms` : ''
        resolve({ code, stdout, stderr: stderr + killed })
      })
    })
  }

  /** Process id of containerd. */
  get pid (): number | undefined {
    return this.child.pid
  }

  /** Stops containerd and removes its directory. */
  async stop (): Promise<void> {
    if (this.child.exitCode == null && this.child.signalCode == null) {
      const exited = new Promise(resolve => this.child.once('exit', resolve))
      this.child.kill('SIGTERM')
      await exited
    }
    await rm(this.dir, { recursive: true, force: true })
  }
}
