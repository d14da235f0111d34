/**
 * The per-host proxy: registry mirror for `/v2/…` on the proxy itself, HTTP
 * forward proxy for absolute URIs, CONNECT tunnels with optional interception.
 * Blob GETs go through the blob source; everything else passes through.
 */
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import { ConfigError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { trackRequest, withoutQuery } from './access-log.ts'
import { AuthorizationCheck } from './auth-check.ts'
import type { BlobSource } from './blob-source.ts'
import { LeafCertificates, loadCa } from './certificates.ts'
import { handleConnect, type ConnectContext } from './connect.ts'
import type { ProxyOptions } from './options.ts'
import { passThrough } from './pass-through.ts'
import { isTargetError, resolveForwardTarget, resolveMirrorTarget, resolveOriginTarget, type RequestTarget, type TargetError } from './request-target.ts'
import { sendError } from './responses.ts'
import { routeOf, trustedForSwarm } from './rules.ts'
import { serveBlob } from './serve-blob.ts'
import type { Upstream } from './upstream.ts'
import { withPort } from './upstream-tls.ts'

/** Time a rejected client gets to read the error response before its connection is destroyed, in ms. */
const REJECTED_CLOSE_MS = 5000

export interface ProxyComponents {
  logger: Logger
  /** Supplier of blob bytes: the swarm, or OriginBlobSource. */
  blobSource: BlobSource
  /** Client for upstreams, with TLS settings from loadUpstreamTls; the caller closes it. */
  upstream: Upstream
}

export class ProxyServer {
  private readonly components: ProxyComponents
  private readonly options: ProxyOptions
  private readonly server: Server
  private readonly interceptServer: Server
  private readonly interceptOrigins = new WeakMap<object, string>()
  private readonly sockets = new Set<Duplex>()
  private readonly authorization: AuthorizationCheck
  private certificates: LeafCertificates | undefined
  private readonly inFlight = new Set<Promise<void>>()

  constructor (components: ProxyComponents, options: ProxyOptions) {
    this.components = components
    this.options = options
    // Node checks header timeouts every connectionsCheckingInterval ms, 30 s by default.
    const serverOptions = { maxHeaderSize: options.maxHeaderSize, requestTimeout: 0, headersTimeout: options.headersTimeoutMs, connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(options.headersTimeoutMs / 4))) }
    this.server = createServer(serverOptions, (req, res) => { this.track(this.handle(req, res, undefined)) })
    this.interceptServer = createServer(serverOptions, (req, res) => { this.track(this.handle(req, res, this.interceptOrigins.get(req.socket))) })
    // NOTE: Node (checked on 24.21) starts the header timeout checks of a server when it emits
    // 'listening'. The intercept server takes its connections from CONNECT tunnels and never
    // listens, so it emits the event itself. Otherwise a client inside a tunnel could hold its
    // connection open by never finishing its headers.
    this.interceptServer.emit('listening')
    for (const server of [this.server, this.interceptServer]) {
      server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => { this.rejectMalformed(err, socket) })
    }
    this.authorization = new AuthorizationCheck({ upstream: components.upstream, ttlMs: options.authCacheTtlMs })
  }

  /** Reads the interception CA, if any, and starts listening. */
  async start (): Promise<void> {
    // 1. Load the interception CA.
    if (this.options.hijackHttps && this.options.caCert != null && this.options.caKey != null) {
      this.certificates = new LeafCertificates(await loadCa(this.options.caCert, this.options.caKey))
    }

    // 2. Accept CONNECT requests.
    const connectContext: ConnectContext = {
      logger: this.components.logger,
      intercepts: authority => this.intercepts(authority),
      acceptIntercepted: (socket: TLSSocket, origin: string) => {
        this.interceptOrigins.set(socket, origin)
        this.interceptServer.emit('connection', socket)
      },
      sockets: this.sockets,
      handshakeTimeoutMs: this.options.headersTimeoutMs
    }
    if (this.certificates != null) connectContext.certificates = this.certificates
    this.server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.track(handleConnect(connectContext, req, socket, head))
    })

    // 3. Listen.
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => { reject(listenError(err, this.options.host, this.options.port)) }
      this.server.once('error', onError)
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', onError)
        resolve()
      })
    })
    this.components.logger.info({ url: this.url, registries: this.options.registries.map(r => r.host), hijackHttps: this.options.hijackHttps }, 'proxy listening')
  }

  /** Stops listening, closes open connections and waits for request handlers to finish. */
  async stop (): Promise<void> {
    const url = this.server.listening ? this.url : undefined
    const closed = new Promise<void>(resolve => { this.server.close(() => { resolve() }) })
    this.server.closeAllConnections()
    this.interceptServer.closeAllConnections()
    // Ends the intercept server's header timeout checks; it never listened, so close reports an error.
    this.interceptServer.close(() => {})
    for (const socket of this.sockets) socket.destroy()
    await closed
    await Promise.allSettled([...this.inFlight])
    this.components.logger.info({ url }, 'proxy stopped')
  }

  /** Address the proxy listens on. */
  get address (): AddressInfo {
    const address = this.server.address()
    if (address == null || typeof address === 'string') throw new Error('the proxy is not listening')
    return address
  }

  /** Base URL of the proxy, such as http://127.0.0.1:65001. */
  get url (): string {
    const { address, port } = this.address
    return `http://${address.includes(':') ? `[${address}]` : address}:${port}`
  }

  private async handle (req: IncomingMessage, res: ServerResponse, interceptOrigin: string | undefined): Promise<void> {
    const rawUrl = req.url ?? '/'
    const method = (req.method ?? 'GET').toUpperCase()
    // 1. Work out the target from the request form.
    let mode: string
    let target: RequestTarget | TargetError
    let logUrl: string
    if (interceptOrigin != null) {
      mode = 'intercept'
      logUrl = `${interceptOrigin}${rawUrl}`
      target = resolveOriginTarget('intercept', interceptOrigin, rawUrl)
    } else if (rawUrl.startsWith('/')) {
      mode = 'mirror'
      logUrl = rawUrl
      if (withoutQuery(rawUrl) === '/healthz') {
        const record = trackRequest(this.components.logger, res, method, logUrl, mode)
        record.bytes = 3
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 3 }).end('ok\n')
        return
      }
      target = rawUrl === '/v2' || rawUrl.startsWith('/v2/') || rawUrl.startsWith('/v2?')
        ? resolveMirrorTarget(rawUrl, this.options)
        : { status: 404, code: 'NAME_UNKNOWN', message: `path ${withoutQuery(rawUrl).slice(0, 200)} is not part of the registry API: this proxy mirrors /v2/ and forwards absolute-URI requests` }
    } else {
      mode = 'forward'
      logUrl = rawUrl
      target = resolveForwardTarget(rawUrl)
    }
    const record = trackRequest(this.components.logger, res, method, logUrl, mode)
    if (isTargetError(target)) {
      sendError(res, record, target.status, target.code, target.message)
      return
    }

    // 2. Send blob GETs through the blob source and everything else to the upstream.
    const context = { upstream: this.components.upstream, authorization: this.authorization, blobSource: this.components.blobSource, logger: this.components.logger }
    try {
      if (method === 'GET' && target.blob != null && routeOf(target.upstreamUrl, this.options.rules, trustedForSwarm(target.mode, target.upstreamUrl, this.options)) === 'swarm') {
        await serveBlob(context, req, res, target.upstreamUrl, target.blob, record)
      } else {
        await passThrough(context, req, res, target.upstreamUrl, record)
      }
    } catch (err) {
      this.components.logger.error({ err, method, url: withoutQuery(logUrl) }, 'request handling failed')
      sendError(res, record, 500, 'UNKNOWN', `proxy failed to handle ${method} ${withoutQuery(logUrl)}: ${(err as Error).message}`)
    }
  }

  /** Responds to a request that node's HTTP parser rejected: 431 for oversized headers, 408 for a timeout, 400 otherwise. */
  private rejectMalformed (err: NodeJS.ErrnoException, socket: Duplex): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy()
      return
    }
    let status = 400
    if (err.code === 'HPE_HEADER_OVERFLOW') status = 431
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') status = 408
    const body = status === 431
      ? `request headers are larger than ${this.options.maxHeaderSize} bytes: send fewer or smaller headers, or raise maxHeaderSize in the --proxy-config file\n`
      : `malformed HTTP request (${err.code ?? err.message})\n`
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    // A client that never closes its side would keep the half-closed connection open.
    setTimeout(() => { socket.destroy() }, REJECTED_CLOSE_MS).unref()
    this.components.logger.info({ method: undefined, url: undefined, route: 'proxy', status, bytes: Buffer.byteLength(body), reason: err.code }, 'request rejected')
  }

  private intercepts (authority: string): boolean {
    if (this.options.hijack.length > 0) return this.options.hijack.some(entry => entry.host.test(authority))
    return this.options.registries.some(entry => entry.url.protocol === 'https:' && withPort(entry.url.host) === authority)
  }

  private track (work: Promise<void>): void {
    const tracked = work.catch(err => { this.components.logger.error({ err }, 'proxy handler failed') })
    this.inFlight.add(tracked)
    void tracked.finally(() => { this.inFlight.delete(tracked) })
  }
}

/** Returns the error for a listen address the proxy cannot use, with the option to change. */
function listenError (err: NodeJS.ErrnoException, host: string, port: number): Error {
  const address = `${host}:${port}`
  if (err.code === 'EADDRINUSE') return new ConfigError(`cannot listen on ${address}: the port is in use; pass another --port, or stop the process that uses it`, { cause: err })
  if (err.code === 'EACCES') return new ConfigError(`cannot listen on ${address}: permission denied; pass a --port above 1023, or run with the right to bind low ports`, { cause: err })
  if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
    return new ConfigError(`cannot listen on ${address}: ${host} is not an address of this machine; pass --host with one, such as 127.0.0.1 or 0.0.0.0`, { cause: err })
  }
  return err
}
