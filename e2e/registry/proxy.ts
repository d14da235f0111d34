/**
 * Runs a dfnode proxy in-process for tests, with a data dir of its own and a
 * log captured in memory, on a free port of 127.0.0.1.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import type { Logger } from '../../src/log.ts'
import type { BlobSource } from '../../src/proxy/blob-source.ts'
import { OriginBlobSource } from '../../src/proxy/origin-blob-source.ts'
import { resolveProxyOptions, type ProxyOptionsInput } from '../../src/proxy/options.ts'
import { ProxyServer } from '../../src/proxy/server.ts'
import { Upstream } from '../../src/proxy/upstream.ts'
import { loadUpstreamTls } from '../../src/proxy/upstream-tls.ts'

export interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

export interface TestProxyOptions extends ProxyOptionsInput {
  /** Blob source to use; default an OriginBlobSource in the proxy's data dir. */
  blobSource?: (components: { upstream: Upstream, logger: Logger, dataDir: string }) => BlobSource
}

export class TestProxy {
  readonly server: ProxyServer
  readonly dataDir: string
  /** Every log line, parsed. */
  readonly lines: LogLine[]
  /** Raw log text, to check that no secret appears in it. */
  readonly rawLog: string[]
  private readonly upstream: Upstream
  private readonly origin: OriginBlobSource | undefined

  private constructor (server: ProxyServer, dataDir: string, lines: LogLine[], rawLog: string[], upstream: Upstream, origin: OriginBlobSource | undefined) {
    this.server = server
    this.dataDir = dataDir
    this.lines = lines
    this.rawLog = rawLog
    this.upstream = upstream
    this.origin = origin
  }

  static async start (options: TestProxyOptions = {}): Promise<TestProxy> {
    const dataDir = await mkdtemp(join(tmpdir(), 'dfnode-proxy-'))
    const lines: LogLine[] = []
    const rawLog: string[] = []
    const logger = pino({ level: 'debug' }, {
      write (line: string) {
        rawLog.push(line)
        lines.push(JSON.parse(line) as LogLine)
      }
    })
    const { blobSource: makeSource, ...input } = options
    const resolved = resolveProxyOptions({ host: '127.0.0.1', port: 0, ...input })
    const upstream = new Upstream({ tlsFor: await loadUpstreamTls(resolved), headersTimeoutMs: resolved.headersTimeoutMs, bodyTimeoutMs: resolved.bodyTimeoutMs })
    let origin: OriginBlobSource | undefined
    let blobSource: BlobSource
    if (makeSource != null) {
      blobSource = makeSource({ upstream, logger, dataDir })
    } else {
      origin = new OriginBlobSource({ directory: join(dataDir, 'blobs'), upstream, logger })
      await origin.start()
      blobSource = origin
    }
    const server = new ProxyServer({ logger, blobSource, upstream }, resolved)
    await server.start()
    return new TestProxy(server, dataDir, lines, rawLog, upstream, origin)
  }

  get url (): string {
    return this.server.url
  }

  /** Access-log lines (one per request), oldest first. */
  requests (): LogLine[] {
    return this.lines.filter(line => line.msg === 'request')
  }

  async stop (): Promise<void> {
    await this.server.stop()
    await this.origin?.stop()
    await this.upstream.close()
    await rm(this.dataDir, { recursive: true, force: true })
  }
}
