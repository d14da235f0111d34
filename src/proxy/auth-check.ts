/**
 * Confirms with the upstream that a client may read a blob before the proxy
 * serves it from the swarm, where another client's download may have put it.
 * An allowed result is reused for a short time per credential, registry,
 * repository and digest. The credential is kept only as an HMAC under a key
 * that exists in this process alone.
 */
import { createHmac, randomBytes } from 'node:crypto'
import type { BlobTarget } from './request-target.ts'
import type { Upstream } from './upstream.ts'

export interface AuthorizationCheckInit {
  upstream: Upstream
  /** How long an allowed result is reused, in milliseconds; 0 disables reuse. */
  ttlMs: number
  /** Maximum number of remembered results; the oldest go first. Default 10000. */
  maxEntries?: number
}

export interface AuthorizationRequest {
  /** Upstream URL of the blob. */
  url: URL
  /** Headers the client sent, as forwarded upstream. */
  headers: Record<string, string>
  blob: BlobTarget
  signal?: AbortSignal
}

export type AuthorizationDecision =
  | { allowed: true, cached: boolean }
  | { allowed: false, status: number }

/** Request headers that carry a client's identity to the upstream. */
const IDENTITY_HEADERS = ['authorization', 'cookie', 'user-agent']

export class AuthorizationCheck {
  private readonly init: AuthorizationCheckInit
  private readonly hmacKey = randomBytes(32)
  /** Cache key to expiry time (performance.now() milliseconds). */
  private readonly allowed = new Map<string, number>()

  constructor (init: AuthorizationCheckInit) {
    this.init = init
  }

  /**
   * Asks the upstream whether the client may read the blob: HEAD of a registry
   * blob URL, or a one-byte ranged GET of a storage URL (whose signed query a
   * HEAD would not match). 2xx and 3xx allow; any other status denies.
   * Throws when the upstream cannot be reached.
   */
  async check (request: AuthorizationRequest): Promise<AuthorizationDecision> {
    const key = request.blob.kind === 'api' ? this.cacheKey(request) : undefined
    const now = performance.now()
    if (key != null) {
      const expiry = this.allowed.get(key)
      if (expiry != null && expiry > now) return { allowed: true, cached: true }
      if (expiry != null) this.allowed.delete(key)
    }

    const headers: Record<string, string> = {}
    for (const name of IDENTITY_HEADERS) {
      const value = request.headers[name]
      if (value != null) headers[name] = value
    }
    if (request.blob.kind === 'storage') headers.range = 'bytes=0-0'

    const signal = request.signal
    const response = await this.init.upstream.request(request.url, {
      method: request.blob.kind === 'api' ? 'HEAD' : 'GET',
      headers,
      ...(signal != null ? { signal } : {})
    })
    await response.body.dump()
    const status = response.statusCode
    if (status < 200 || status >= 400) return { allowed: false, status }

    if (key != null && this.init.ttlMs > 0) this.remember(key, now + this.init.ttlMs)
    return { allowed: true, cached: false }
  }

  private cacheKey (request: AuthorizationRequest): string {
    // The digest is part of the key because access to a repository does not
    // mean that every blob in the swarm is linked into that repository.
    const credential = request.headers.authorization ?? request.headers.cookie ?? ''
    const hashed = credential === '' ? 'anonymous' : createHmac('sha256', this.hmacKey).update(credential).digest('hex')
    return `${hashed}\n${request.url.host}\n${request.blob.repository ?? ''}\n${request.blob.digest}`
  }

  private remember (key: string, expiry: number): void {
    const max = this.init.maxEntries ?? 10_000
    this.allowed.delete(key)
    this.allowed.set(key, expiry)
    while (this.allowed.size > max) {
      const oldest = this.allowed.keys().next()
      if (oldest.done === true) break
      this.allowed.delete(oldest.value)
    }
  }
}
