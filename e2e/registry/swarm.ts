/**
 * A supernode process and several `dfnode proxy` processes on loopback, each
 * host with its own data dir and a swarm listener on 127.0.0.1, for tests and
 * benchmarks of the proxy on the swarm. Logs are read back from
 * `<data dir>/logs/dfnode.log`, which dfnode writes synchronously.
 */
import { readdir, readFile, readlink } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { digestToCid } from '../../src/content/ids.ts'
import { startSupernodeProcess, type DfnodeProcess } from '../../test/helpers/dfnode-process.ts'
import { ProxyProcess } from './proxy-process.ts'

export interface TestSwarmOptions {
  /** Directory that receives `supernode/` and `host-<i>/`; the caller removes it. */
  dir: string
  /** Number of proxy hosts. */
  hosts: number
  /** Hosts the supernode may fetch from ("host" or "host:port"), one `--allow-origin` each. */
  allowOrigins: string[]
  /** Arguments given to every `dfnode proxy`, such as `--registry URL`. */
  proxyArgs: string[]
  /** Further arguments of the supernode, such as `--piece-size 1MiB`. */
  supernodeArgs?: string[]
}

/** One parsed line of a dfnode log. */
export interface DfnodeLogLine {
  msg: string
  [field: string]: unknown
}

/** The "download complete" line of one content on one host. */
export interface DownloadLine extends DfnodeLogLine {
  key: string
  bytes: number
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
  /** Piece bytes that arrived after another copy of the piece was stored. */
  duplicateBytes?: number
  /** Piece bytes received on copies that were cancelled once another copy was stored. */
  cancelledBytes?: number
}

export class TestSwarm {
  readonly supernode: DfnodeProcess
  /** Multiaddr of the supernode, with its peer id. */
  readonly supernodeAddress: string
  readonly supernodeDir: string
  readonly proxies: ProxyProcess[] = []
  readonly options: TestSwarmOptions

  private constructor (options: TestSwarmOptions, supernode: DfnodeProcess, supernodeAddress: string) {
    this.options = options
    this.supernode = supernode
    this.supernodeAddress = supernodeAddress
    this.supernodeDir = join(options.dir, 'supernode')
  }

  /** Starts the supernode, then the proxies one after the other; stops what started when one fails. */
  static async start (options: TestSwarmOptions): Promise<TestSwarm> {
    const [first, ...others] = options.allowOrigins
    if (first == null) throw new Error('TestSwarm needs at least one allowed origin for the supernode')
    const extra = [...others.flatMap(origin => ['--allow-origin', origin]), ...(options.supernodeArgs ?? [])]
    const started = await startSupernodeProcess(join(options.dir, 'supernode'), first, extra)
    const swarm = new TestSwarm(options, started.process, started.address)
    try {
      for (let i = 0; i < options.hosts; i++) swarm.proxies.push(await ProxyProcess.start(swarm.hostArgs(i)))
    } catch (err) {
      await swarm.stop()
      throw err
    }
    return swarm
  }

  /** Data dir of host `i`. */
  hostDir (i: number): string {
    return join(this.options.dir, `host-${i}`)
  }

  /** URL of the proxy of host `i`; throws with the end of its stderr when the proxy has exited. */
  url (i: number): string {
    const proxy = this.proxies[i]
    if (proxy == null) throw new Error(`no host ${i}: the swarm has ${this.proxies.length}`)
    const { exitCode, signalCode } = proxy.child
    if (exitCode != null || signalCode != null) {
      throw new Error(`the proxy of host ${i} exited with ${String(exitCode ?? signalCode)}; stderr tail:\n${proxy.stderr.slice(-4000)}`)
    }
    return proxy.url
  }

  /** Files in host `i`'s piece store that its proxy process has open, read from /proc. */
  async openPieceFiles (i: number): Promise<string[]> {
    const pid = this.proxies[i]?.child.pid
    if (pid == null) throw new Error(`no running proxy on host ${i}`)
    const pieces = join(this.hostDir(i), 'store', 'pieces')
    const open: string[] = []
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
      if (target.startsWith(`${pieces}/`)) open.push(target)
    }
    return open
  }

  /** Stops the proxy of host `i` with SIGKILL, as a crash would. */
  async kill (i: number): Promise<void> {
    const proxy = this.proxies[i]
    if (proxy == null) throw new Error(`no host ${i}: the swarm has ${this.proxies.length}`)
    proxy.child.kill('SIGKILL')
    await proxy.stop()
  }

  /** Starts the proxy of host `i` again on its data dir, after `kill` or a stop. */
  async restart (i: number): Promise<void> {
    this.proxies[i] = await ProxyProcess.start(this.hostArgs(i))
  }

  /** Parsed lines of host `i`'s log. */
  async hostLog (i: number): Promise<DfnodeLogLine[]> {
    return await readLog(this.hostDir(i))
  }

  async supernodeLog (): Promise<DfnodeLogLine[]> {
    return await readLog(this.supernodeDir)
  }

  /** Access-log lines of host `i` for requests whose path (without query) is `path`. */
  async requests (i: number, path: string): Promise<DfnodeLogLine[]> {
    return (await this.hostLog(i)).filter(line => line.msg === 'request' && line.url === path)
  }

  /**
   * Waits until host `i` has logged at least `count` requests of `path` and returns them. A line is
   * written when the response closes, which can be after the client has read the whole body.
   */
  async waitRequests (i: number, path: string, count: number, timeoutMs = 5000): Promise<DfnodeLogLine[]> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const lines = await this.requests(i, path)
      if (lines.length >= count) return lines
      if (Date.now() > deadline) throw new Error(`host ${i} logged ${lines.length} requests of ${path} within ${timeoutMs} ms, expected ${count}`)
      await sleep(50)
    }
  }

  /**
   * "download complete" lines of host `i` for the content with this digest. Each request of a
   * content already in the host's store adds a line too, with every byte counted in fromLocal.
   */
  async downloads (i: number, digest: string): Promise<DownloadLine[]> {
    const key = digestToCid(digest).toString()
    return (await this.hostLog(i)).filter((line): line is DownloadLine => line.msg === 'download complete' && line.key === key)
  }

  /** Names of the content records under `<dir>/store/contents` of host `i`, or of the supernode when `i` is undefined. */
  async records (i?: number): Promise<string[]> {
    const dir = join(i == null ? this.supernodeDir : this.hostDir(i), 'store', 'contents')
    return await readdir(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return []
      throw err
    })
  }

  /**
   * Returns the last warnings and errors of every process's log and the state of each proxy,
   * as text to attach to a failed assertion.
   */
  async problems (lines = 20): Promise<string> {
    const sections: string[] = []
    const logs: Array<[string, string]> = [['supernode', this.supernodeDir], ...this.proxies.map((_, i): [string, string] => [`host ${i}`, this.hostDir(i)])]
    for (const [name, dir] of logs) {
      const warnings = (await readLog(dir).catch(() => [])).filter(line => typeof line.level === 'number' && line.level >= 40)
      sections.push(`${name}: ${warnings.length} warnings or errors${warnings.length > lines ? `, the last ${lines}` : ''}`)
      for (const line of warnings.slice(-lines)) sections.push(`  ${JSON.stringify(line).slice(0, 600)}`)
    }
    for (const [i, proxy] of this.proxies.entries()) {
      const { exitCode, signalCode } = proxy.child
      if (exitCode != null || signalCode != null) sections.push(`host ${i} exited with ${String(exitCode ?? signalCode)}; stderr tail:\n${proxy.stderr.slice(-2000)}`)
    }
    return sections.join('\n')
  }

  /** Stops every proxy, then the supernode. */
  async stop (): Promise<void> {
    await Promise.all(this.proxies.map(async proxy => await proxy.stop()))
    await this.supernode.stop()
  }

  private hostArgs (i: number): string[] {
    return [
      ...this.options.proxyArgs,
      '--supernode', this.supernodeAddress,
      '--listen', '/ip4/127.0.0.1/tcp/0',
      '--data-dir', this.hostDir(i)
    ]
  }
}

/** Returns the record file name of a digest's content, as the store names it. */
export function recordNameOf (digest: string): string {
  return `${digestToCid(digest).toString()}.cbor`
}

async function readLog (dataDir: string): Promise<DfnodeLogLine[]> {
  const text = await readFile(join(dataDir, 'logs', 'dfnode.log'), 'utf8')
  const lines: DfnodeLogLine[] = []
  for (const line of text.split('\n')) {
    if (line.startsWith('{')) lines.push(JSON.parse(line) as DfnodeLogLine)
  }
  return lines
}
