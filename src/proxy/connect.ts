/**
 * CONNECT requests: a plain TCP tunnel by default, or, for hosts chosen for
 * interception, TLS terminated here with a certificate signed by the local CA
 * so the requests inside reach the proxy's own request handling.
 */
import type { IncomingMessage } from 'node:http'
import { connect as connectTcp, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { TLSSocket } from 'node:tls'
import type { Logger } from '../log.ts'
import type { LeafCertificates } from './certificates.ts'

export interface ConnectContext {
  logger: Logger
  /** Issues certificates for intercepted hosts; undefined when interception is off. */
  certificates?: LeafCertificates
  /** Tells whether CONNECT to `host:port` is intercepted. */
  intercepts: (authority: string) => boolean
  /** Hands a decrypted connection to the HTTP server that handles intercepted requests, with the origin it is for. */
  acceptIntercepted: (socket: TLSSocket, origin: string) => void
  /** Every socket a CONNECT opened, so that stop() can close them. */
  sockets: Set<Duplex>
  /** Time an intercepted client gets to finish its TLS handshake, in milliseconds. */
  handshakeTimeoutMs: number
}

/** Parses a CONNECT authority `host:port` or `[v6]:port`. */
export function parseAuthority (value: string): { hostname: string, port: number } | undefined {
  const match = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+)):([0-9]{1,5})$/i.exec(value)
  const hostname = match?.[1] ?? match?.[2]
  const port = Number(match?.[3])
  if (hostname == null || !Number.isInteger(port) || port < 1 || port > 65535) return undefined
  return { hostname: hostname.toLowerCase(), port }
}

/** Handles one CONNECT request on `client`. */
export async function handleConnect (context: ConnectContext, req: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
  const startedAt = performance.now()
  const authority = req.url ?? ''
  context.sockets.add(client)
  client.once('close', () => context.sockets.delete(client))
  client.on('error', err => { context.logger.debug({ err, authority }, 'CONNECT client socket error') })

  const log = (status: number, route: string, bytes: number): void => {
    context.logger.info({ method: 'CONNECT', url: authority, mode: 'forward', route, status, bytes, ms: Math.round(performance.now() - startedAt) }, 'request')
  }

  // 1. Parse the target.
  const target = parseAuthority(authority)
  if (target == null) {
    refuse(client, 400, `invalid CONNECT target "${authority.slice(0, 200)}": expected host:port`)
    log(400, 'proxy', 0)
    return
  }

  // 2. Intercept chosen hosts.
  if (context.certificates != null && context.intercepts(`${target.hostname}:${target.port}`)) {
    let secureContext
    try {
      secureContext = await context.certificates.contextFor(target.hostname)
    } catch (err) {
      context.logger.error({ err, authority }, 'cannot issue a certificate for an intercepted host')
      refuse(client, 502, `cannot intercept ${authority}: ${(err as Error).message}`)
      log(502, 'proxy', 0)
      return
    }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
    if (head.length > 0) client.unshift(head)
    const tls = new TLSSocket(client as Socket, { isServer: true, secureContext, ALPNProtocols: ['http/1.1'] })
    tls.on('error', err => { context.logger.debug({ err, authority }, 'intercepted TLS connection failed') })
    const handshake = setTimeout(() => { tls.destroy(new Error(`TLS handshake with the client of ${authority} timed out`)) }, context.handshakeTimeoutMs)
    tls.once('secure', () => { clearTimeout(handshake) })
    context.sockets.add(tls)
    tls.once('close', () => {
      clearTimeout(handshake)
      context.sockets.delete(tls)
      log(200, 'intercept', 0)
    })
    const port = target.port === 443 ? '' : `:${target.port}`
    const host = target.hostname.includes(':') ? `[${target.hostname}]` : target.hostname
    context.acceptIntercepted(tls, `https://${host}${port}`)
    return
  }

  // 3. Otherwise tunnel bytes both ways.
  const upstream = connectTcp({ host: target.hostname, port: target.port })
  context.sockets.add(upstream)
  let established = false
  let bytes = 0
  upstream.once('connect', () => {
    established = true
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
    if (head.length > 0) upstream.write(head)
    upstream.on('data', (chunk: Buffer) => { bytes += chunk.length })
    upstream.pipe(client)
    client.pipe(upstream)
  })
  upstream.once('error', err => {
    if (!established) {
      refuse(client, 502, `cannot connect to ${authority}: ${err.message}`)
      return
    }
    context.logger.debug({ err, authority }, 'tunnel upstream error')
    client.destroy()
  })
  client.once('close', () => { upstream.destroy() })
  upstream.once('close', () => {
    context.sockets.delete(upstream)
    client.destroy()
    log(established ? 200 : 502, 'tunnel', bytes)
  })
}

function refuse (socket: Duplex, status: number, message: string): void {
  const reason = status === 400 ? 'Bad Request' : 'Bad Gateway'
  const body = `${message}\n`
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}
