/**
 * A real Docker registry (distribution 2.x, Debian package docker-registry)
 * for tests: its own config in a temp dir, filesystem storage, an access log
 * to count requests, optional htpasswd or token auth and TLS. It listens on
 * 127.0.0.1, or inside a network namespace made by netns.ts.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Path of the registry binary in the Debian package. */
export const REGISTRY_BINARY = '/usr/bin/docker-registry'

export interface RegistryUser {
  name: string
  password: string
}

export interface TokenAuthSettings {
  /** URL clients get tokens from (the WWW-Authenticate realm). */
  realm: string
  service: string
  issuer: string
  /** PEM file of the certificate that signs tokens. */
  rootCertBundle: string
}

export interface RegistryOptions {
  /** Users for htpasswd basic auth; anonymous access when absent. */
  users?: RegistryUser[]
  /** Bearer-token auth instead of basic auth. */
  token?: TokenAuthSettings
  /** PEM certificate and key files for HTTPS. */
  tls?: { cert: string, key: string }
  /** Address to listen on; default 127.0.0.1. */
  address?: string
  /** Port; default a free one. */
  port?: number
  /** Runs the registry inside this network namespace (`ip netns exec`). */
  netns?: string
}

export interface AccessLogEntry {
  method: string
  /** Path with its query string. */
  path: string
  status: number
  bytes: number
}

export class TestRegistry {
  readonly dir: string
  /** Storage root: blobs are at docker/registry/v2/blobs/sha256/<ab>/<hex>/data below it. */
  readonly storage: string
  readonly url: string
  /** host:port, as image references name it. */
  readonly host: string
  private readonly child: ChildProcess
  private readonly logPath: string

  private constructor (dir: string, url: string, child: ChildProcess, logPath: string) {
    this.dir = dir
    this.storage = join(dir, 'storage')
    this.url = url
    this.host = new URL(url).host
    this.child = child
    this.logPath = logPath
  }

  /** Starts a registry and waits until it answers /v2/. */
  static async start (options: RegistryOptions = {}): Promise<TestRegistry> {
    const dir = await mkdtemp(join(tmpdir(), 'dfnode-registry-'))
    const address = options.address ?? '127.0.0.1'
    const port = options.port ?? await freePort()
    const scheme = options.tls != null ? 'https' : 'http'
    await mkdir(join(dir, 'storage'), { recursive: true })

    const lines = [
      'version: 0.1',
      'log:',
      '  level: error',
      '  formatter: text',
      '  accesslog:',
      '    disabled: false',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'storage')}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: ${address.includes(':') ? `[${address}]` : address}:${port}`,
      `  secret: ${randomBytes(16).toString('hex')}`
    ]
    if (options.tls != null) lines.push('  tls:', `    certificate: ${options.tls.cert}`, `    key: ${options.tls.key}`)
    if (options.users != null) {
      const htpasswd = join(dir, 'htpasswd')
      const entries: string[] = []
      for (const user of options.users) {
        const { stdout } = await run('htpasswd', ['-Bbn', user.name, user.password])
        entries.push(stdout.trim())
      }
      await writeFile(htpasswd, entries.join('\n') + '\n')
      lines.push('auth:', '  htpasswd:', '    realm: dfnode-test', `    path: ${htpasswd}`)
    } else if (options.token != null) {
      lines.push('auth:', '  token:', `    realm: ${options.token.realm}`, `    service: ${options.token.service}`, `    issuer: ${options.token.issuer}`, `    rootcertbundle: ${options.token.rootCertBundle}`)
    }
    const configPath = join(dir, 'config.yml')
    await writeFile(configPath, lines.join('\n') + '\n')

    // The access log goes to stdout, error-level lines to stderr.
    const logPath = join(dir, 'access.log')
    const { openSync } = await import('node:fs')
    const out = openSync(logPath, 'a')
    const err = openSync(join(dir, 'registry.err'), 'a')
    const command = options.netns != null ? ['ip', ['netns', 'exec', options.netns, REGISTRY_BINARY, 'serve', configPath]] as const : [REGISTRY_BINARY, ['serve', configPath]] as const
    const child = spawn(command[0], [...command[1]], { stdio: ['ignore', out, err] })
    const host = address.includes(':') ? `[${address}]` : address
    const registry = new TestRegistry(dir, `${scheme}://${host}:${port}`, child, logPath)
    try {
      await registry.waitReady(options)
    } catch (error) {
      await registry.stop()
      throw error
    }
    return registry
  }

  /** Process id of the registry (of `ip netns exec` when it runs in a namespace). */
  get pid (): number | undefined {
    return this.child.pid
  }

  /** Stops the registry and removes its directory. */
  async stop (): Promise<void> {
    if (this.child.exitCode == null && this.child.signalCode == null) {
      const exited = new Promise(resolve => this.child.once('exit', resolve))
      this.child.kill('SIGTERM')
      await exited
    }
    await rm(this.dir, { recursive: true, force: true })
  }

  /** Reads the access log, after waiting until no line was added for 100 ms (the registry logs after responding). */
  async accessLog (): Promise<AccessLogEntry[]> {
    let previous = ''
    for (let attempt = 0; attempt < 50; attempt++) {
      const text = await readFile(this.logPath, 'utf8')
      if (text === previous) return parseAccessLog(text)
      previous = text
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    return parseAccessLog(previous)
  }

  /** Counts GET requests of a blob (registry API path) that the registry answered with 2xx or 3xx. */
  async blobGets (digest: string): Promise<number> {
    const entries = await this.accessLog()
    return entries.filter(entry => entry.method === 'GET' && entry.status < 400 && entry.path.split('?')[0]?.endsWith(`/blobs/${digest}`)).length
  }

  private async waitReady (options: RegistryOptions): Promise<void> {
    const { Agent, request } = await import('undici')
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } })
    try {
      for (let attempt = 0; attempt < 200; attempt++) {
        if (this.child.exitCode != null) throw new Error(`docker-registry exited with ${this.child.exitCode}: ${await readFile(join(this.dir, 'registry.err'), 'utf8').catch(() => '')}`)
        try {
          const response = await request(`${this.url}/v2/`, { dispatcher, signal: AbortSignal.timeout(1000) })
          await response.body.dump()
          if (response.statusCode === 200 || response.statusCode === 401) return
        } catch {}
        if (options.netns != null && attempt === 0) await new Promise(resolve => setTimeout(resolve, 50))
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      throw new Error(`docker-registry at ${this.url} did not answer /v2/ within 10 s`)
    } finally {
      await dispatcher.close()
    }
  }
}

/** Parses Apache combined log lines: `host - - [time] "METHOD path HTTP/1.1" status bytes …`. */
export function parseAccessLog (text: string): AccessLogEntry[] {
  const entries: AccessLogEntry[] = []
  for (const line of text.split('\n')) {
    const match = /"([A-Z]+) (\S+) HTTP\/[0-9.]+" ([0-9]{3}) ([0-9-]+)/.exec(line)
    if (match?.[1] == null || match[2] == null) continue
    entries.push({ method: match[1], path: match[2], status: Number(match[3]), bytes: match[4] === '-' ? 0 : Number(match[4]) })
  }
  return entries
}

/** Returns a TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise(resolve => server.close(resolve))
  if (address == null || typeof address === 'string') throw new Error('no port')
  return address.port
}
