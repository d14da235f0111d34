/**
 * HTTP client for upstreams (registries, storage, any host in forward-proxy
 * mode): one undici Agent per TLS setting, timeouts, and redirect following
 * for the requests the proxy makes on its own behalf.
 */
import { Agent, type Dispatcher } from 'undici'
import type { Readable } from 'node:stream'
import { OriginUnreachableError } from '../errors.ts'

/** TLS settings for one upstream host. */
export interface TlsSettings {
  /** PEM CA certificates trusted in place of the system store. */
  ca?: string
  /** Skip certificate verification. */
  insecure: boolean
}

export interface UpstreamInit {
  /** Returns the TLS settings of an https upstream `host:port`, undefined for the system defaults. */
  tlsFor: (host: string) => TlsSettings | undefined
  /** Time allowed for response headers, in milliseconds. */
  headersTimeoutMs: number
  /** Time allowed between two body chunks, in milliseconds. */
  bodyTimeoutMs: number
}

export interface UpstreamRequest {
  method: Dispatcher.HttpMethod
  headers: Record<string, string>
  body?: Readable | null
  signal?: AbortSignal
}

/** Maximum number of redirects followed by `requestFollowing`. */
export const MAX_REDIRECTS = 5

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])

export class Upstream {
  private readonly init: UpstreamInit
  private readonly agents = new Map<string, Agent>()

  constructor (init: UpstreamInit) {
    this.init = init
  }

  /** Sends one request without following redirects. The caller consumes or destroys the body. */
  async request (url: URL, request: UpstreamRequest): Promise<Dispatcher.ResponseData> {
    try {
      return await this.dispatcherFor(url).request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: request.method,
        headers: request.headers,
        body: request.body ?? null,
        signal: request.signal ?? null,
        headersTimeout: this.init.headersTimeoutMs,
        bodyTimeout: this.init.bodyTimeoutMs
      })
    } catch (err) {
      if (request.signal?.aborted === true) throw err
      throw new OriginUnreachableError(`request ${request.method} ${url.origin}${url.pathname} failed: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * Sends a GET or HEAD and follows up to MAX_REDIRECTS redirects, relative
   * Locations included. Authorization is dropped once the origin changes.
   */
  async requestFollowing (url: URL, request: UpstreamRequest): Promise<{ response: Dispatcher.ResponseData, url: URL }> {
    let current = url
    let headers = request.headers
    for (let hop = 0; ; hop++) {
      const response = await this.request(current, { ...request, headers })
      const location = response.headers.location
      if (!REDIRECT_STATUSES.has(response.statusCode) || location == null) return { response, url: current }

      await response.body.dump()
      if (hop === MAX_REDIRECTS) {
        throw new OriginUnreachableError(`too many redirects from ${url.origin}${url.pathname}: stopped after ${MAX_REDIRECTS}`)
      }
      const next = new URL(Array.isArray(location) ? location[0] ?? '' : location, current)
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new OriginUnreachableError(`redirect from ${current.origin}${current.pathname} to unsupported scheme ${next.protocol}`)
      }
      if (next.origin !== current.origin) headers = withoutAuthorization(headers)
      current = next
    }
  }

  /** Closes every pooled connection. */
  async close (): Promise<void> {
    const agents = [...this.agents.values()]
    this.agents.clear()
    await Promise.all(agents.map(async agent => { await agent.close() }))
  }

  private dispatcherFor (url: URL): Agent {
    const tls = url.protocol === 'https:' ? this.init.tlsFor(url.host) : undefined
    const key = tls == null ? 'default' : `${tls.insecure ? 'insecure' : 'verify'}:${tls.ca ?? ''}`
    let agent = this.agents.get(key)
    if (agent == null) {
      const connect = tls == null ? {} : { rejectUnauthorized: !tls.insecure, ...(tls.ca != null ? { ca: tls.ca } : {}) }
      agent = new Agent({ connect, headersTimeout: this.init.headersTimeoutMs, bodyTimeout: this.init.bodyTimeoutMs })
      this.agents.set(key, agent)
    }
    return agent
  }
}

function withoutAuthorization (headers: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() !== 'authorization' && name.toLowerCase() !== 'cookie') out[name] = value
  }
  return out
}

/** Drops a response body without reading it; undici reports the drop as an error event, which is ignored here. */
export function discardBody (body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {})
  body.destroy()
}
