/**
 * HTTP client for origins (registries and file servers): redirects, identity
 * encoding, checked byte ranges, bounded retries, resuming of broken bodies and
 * timeouts. Responses stream and nothing is cached, error statuses included.
 */
import { Agent } from 'undici'
import { ConfigError, OriginNotAllowedError, UsageError } from '../errors.ts'
import { silentLogger, type Logger } from '../log.ts'
import { parseHttpUrl } from '../content/url.ts'
import { isAllowed, parseAllowedOrigins, type AllowedOrigins } from './allowed.ts'
import { buildHeaders, droppedHeaderNames } from './headers.ts'
import { single } from './range.ts'
import { urlForLog } from './redact.ts'
import { Transfer, type Segment } from './transfer.ts'

export { readAll } from './read-all.ts'

export interface OriginClientInit {
  /** Hosts allowed as origins ("host" or "host:port"; "*" allows all). Undefined: all allowed. */
  allowedOrigins?: string[]
  /** Max redirects followed, default 5. */
  maxRedirects?: number
  /**
   * Retries after a 5xx, a connection reset or a broken body, default 3. Counted per
   * open(); the count starts again after a body attempt that delivered at least 1 MiB.
   */
  retries?: number
  /** First back-off delay in ms, doubled each retry up to 60000, default 200. */
  backoffMs?: number
  /** Time allowed to receive response headers, ms, default 30000. */
  headersTimeoutMs?: number
  /** Time allowed without a body byte, ms, default 30000. */
  bodyTimeoutMs?: number
  logger?: Logger
}

export interface OriginRequest {
  url: string
  /** Headers passed to the origin; credentials among them are never logged and go only to the first URL's origin. */
  headers?: Record<string, string>
  /** Byte range to fetch: start inclusive, end exclusive; undefined end means to the end. */
  range?: { start: number, end?: number }
  signal?: AbortSignal
}

export interface OriginResponse {
  /** Final URL after redirects. */
  url: string
  /** Total content size in bytes if known (Content-Length of a 200, or the total of Content-Range). */
  size?: number
  contentType?: string
  /** Offset of the first byte that body yields (== range.start when a range was requested). */
  start: number
  /** True when the origin ignored a Range request past byte 0 and sent the content from byte 0; the body skips up to the range. */
  rangeIgnored?: boolean
  /**
   * Body bytes, exactly the requested range (or the whole content). Resumes transparently.
   * Iterate it once: to the end, or leave the loop early, or abort the request's signal.
   * A body never iterated keeps its connection open until the signal aborts or the client closes.
   */
  body: AsyncIterable<Uint8Array>
}

const DEFAULTS = {
  maxRedirects: 5,
  retries: 3,
  backoffMs: 200,
  headersTimeoutMs: 30_000,
  bodyTimeoutMs: 30_000
}

export class OriginClient {
  readonly #allowed: AllowedOrigins
  readonly #settings: typeof DEFAULTS
  readonly #log: Logger
  readonly #agent: Agent
  #closed = false

  /** Validates the settings, throwing ConfigError that names the key and value. Does no I/O. */
  constructor (init: OriginClientInit = {}) {
    this.#allowed = parseAllowedOrigins(init.allowedOrigins)
    this.#settings = {
      maxRedirects: integerSetting('maxRedirects', init.maxRedirects, DEFAULTS.maxRedirects, 0),
      retries: integerSetting('retries', init.retries, DEFAULTS.retries, 0),
      backoffMs: integerSetting('backoffMs', init.backoffMs, DEFAULTS.backoffMs, 0),
      headersTimeoutMs: integerSetting('headersTimeoutMs', init.headersTimeoutMs, DEFAULTS.headersTimeoutMs, 1),
      bodyTimeoutMs: integerSetting('bodyTimeoutMs', init.bodyTimeoutMs, DEFAULTS.bodyTimeoutMs, 1)
    }
    this.#log = (init.logger ?? silentLogger()).child({ component: 'origin' })
    this.#agent = new Agent({
      headersTimeout: this.#settings.headersTimeoutMs,
      bodyTimeout: this.#settings.bodyTimeoutMs
    })
  }

  /**
   * Checks the URL against allowedOrigins; throws OriginNotAllowedError naming the host and the allowed list.
   * Also throws UsageError for a URL that is not absolute http(s) or that carries user info.
   */
  checkAllowed (url: string): void {
    this.#allowedUrl(url)
  }

  /**
   * Sends a GET for the request and returns once the response headers have arrived.
   * Throws OriginNotAllowedError, OriginStatusError (4xx at once, 5xx after the retries),
   * OriginUnreachableError, OriginResponseError, TimeoutError, or the signal's reason.
   * Only the first URL must be allowed: see #allowedUrl for redirect targets.
   */
  async open (request: OriginRequest): Promise<OriginResponse> {
    if (this.#closed) throw new UsageError('origin client is closed: create a new OriginClient')

    // 1. Check the URL, the range and the headers before any I/O.
    const url = this.#allowedUrl(request.url)
    const range = validRange(request.range)
    const headers = buildHeaders(request.headers)
    const dropped = droppedHeaderNames(request.headers)
    if (dropped.length > 0) this.#log.debug({ url: urlForLog(url), dropped }, 'dropped request headers that the origin client sets itself')

    // 2. Connect, with retries, and check the status and Content-Range.
    const transfer = new Transfer({
      dispatcher: this.#agent,
      log: this.#log,
      url,
      headers,
      ...this.#settings,
      ...(range === undefined ? {} : { range }),
      ...(request.signal === undefined ? {} : { signal: request.signal })
    })
    const first = await transfer.connect(range?.start ?? 0)

    // 3. Hand out a body that reads the first response and resumes where it breaks off.
    const response: OriginResponse = {
      url: first.exchange.url.href,
      start: range?.start ?? 0,
      body: bodyOnce(transfer, first)
    }
    if (transfer.size !== undefined) response.size = transfer.size
    if (first.plan.skip > 0) response.rangeIgnored = true
    const contentType = single(first.exchange.headers['content-type'])
    if (contentType !== undefined) response.contentType = contentType
    return response
  }

  /** Closes the connections; bodies still being read fail with an error. */
  async close (): Promise<void> {
    this.#closed = true
    await this.#agent.destroy()
  }

  /**
   * Parses the URL and checks its host against the allowed list. Redirect targets are
   * not checked: registries send blob downloads on to storage backends and CDNs whose
   * hosts vary by region and by signed URL, so the list names the origins a node may
   * be asked for and trusts their redirects.
   * NOTE: an allowed origin can therefore redirect to any host, internal addresses included.
   */
  #allowedUrl (value: string): URL {
    const url = parseHttpUrl(value)
    if (!isAllowed(this.#allowed, url)) {
      const list = this.#allowed.spelled.length > 0 ? this.#allowed.spelled.join(', ') : '(none)'
      throw new OriginNotAllowedError(`origin "${url.host}" is not allowed: the allowed origins are ${list}. Start the supernode with --allow-origin ${url.host} (config key allowOrigins) to fetch from it`)
    }
    return url
  }
}

/** Returns the body iterable of a transfer, which can be iterated once. */
function bodyOnce (transfer: Transfer, first: Segment): AsyncIterable<Uint8Array> {
  let used = false
  return {
    [Symbol.asyncIterator] (): AsyncIterator<Uint8Array> {
      if (used) throw new UsageError('origin response body was already iterated: open the URL again to read it twice')
      used = true

      const reader = transfer.read(first)
      return {
        next: async () => await reader.next(),
        // A generator that never started skips its finally block on return(), so the
        // first body is destroyed here as well.
        return: async () => {
          transfer.cancel()
          return await reader.return(undefined)
        }
      }
    }
  }
}

function validRange (range: OriginRequest['range']): { start: number, end?: number } | undefined {
  if (range === undefined) return undefined

  const { start, end } = range
  if (!Number.isSafeInteger(start) || start < 0) {
    throw new UsageError(`invalid range start ${start}: expected an integer of 0 or more`)
  }
  if (end === undefined) return { start }
  if (!Number.isSafeInteger(end) || end <= start) {
    throw new UsageError(`invalid range end ${end} for start ${start}: expected an integer greater than the start (the end is exclusive)`)
  }
  return { start, end }
}

function integerSetting (key: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`invalid origin client setting ${key}: ${value}: expected an integer of ${min} or more`)
  }
  return value
}
