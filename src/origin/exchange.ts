/**
 * One GET to an origin: follows redirects, then rejects error statuses and
 * encoded bodies. Retries and resuming are the caller's part.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { request, type Dispatcher } from 'undici'
import { OriginResponseError, OriginStatusError, OriginUnreachableError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { withoutCredentials } from './headers.ts'
import { single } from './range.ts'
import { urlForLog } from './redact.ts'

/** Status codes whose Location the client follows; all of them repeat the GET. */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])

/** Bytes of an error response body kept in OriginStatusError. */
export const STATUS_BODY_LIMIT = 4096

/** A final response: not a redirect, a status below 400, and an unencoded body. */
export interface Exchange {
  /** URL that returned this response, after redirects. */
  url: URL
  status: number
  headers: IncomingHttpHeaders
  body: Dispatcher.ResponseData['body']
}

export interface ExchangeOptions {
  dispatcher: Dispatcher
  log: Logger
  /** First URL, which passed the allowed-origin check. */
  url: URL
  headers: Record<string, string>
  maxRedirects: number
  signal?: AbortSignal
  /** Receives each URL as it is requested, so a failure can name the hop that failed. */
  onHop?: (url: URL) => void
}

/**
 * Sends a GET and follows up to `maxRedirects` redirects. Returns the first
 * response that is not a redirect if its status is below 400. Throws
 * OriginStatusError for 4xx and 5xx (with up to 4 KiB of the body),
 * OriginUnreachableError for too many redirects, and OriginResponseError for a
 * redirect without a usable Location or a body with a Content-Encoding.
 */
export async function sendGet (options: ExchangeOptions): Promise<Exchange> {
  const { dispatcher, log, signal } = options
  let url = options.url

  for (let redirects = 0; ; redirects++) {
    // Credentials belong to the first origin. A registry redirects blob downloads to a
    // storage backend whose signed URL carries its own credentials, and the registry's
    // token must not leak to that backend.
    const headers = url.origin === options.url.origin ? options.headers : withoutCredentials(options.headers)

    options.onHop?.(url)
    log.debug({ method: 'GET', url: urlForLog(url), range: headers.range }, 'origin request')
    const response = await request(url, { dispatcher, method: 'GET', headers, signal })
    log.debug({ method: 'GET', url: urlForLog(url), status: response.statusCode }, 'origin response')

    if (REDIRECT_STATUSES.has(response.statusCode)) {
      const location = single(response.headers.location)
      await response.body.dump()

      if (redirects >= options.maxRedirects) {
        throw new OriginUnreachableError(`too many redirects fetching ${urlForLog(options.url)}: gave up after ${options.maxRedirects} at ${urlForLog(url)}. Check the URL or raise maxRedirects`)
      }
      url = resolveLocation(url, response.statusCode, location)
      continue
    }

    if (response.statusCode >= 400) {
      const text = await readErrorBody(response.body)
      throw new OriginStatusError(describeStatus(url, response.statusCode, 0), response.statusCode, text)
    }

    const encoding = single(response.headers['content-encoding'])?.trim().toLowerCase()
    if (encoding !== undefined && encoding !== '' && encoding !== 'identity') {
      discard(response.body)
      throw new OriginResponseError(`origin ${urlForLog(url)} sent a body with Content-Encoding "${encoding}" although the request asked for identity: configure the origin to serve the file unencoded`)
    }

    return { url, status: response.statusCode, headers: response.headers, body: response.body }
  }
}

/**
 * Destroys a body that will not be read, which closes its connection unless the
 * body had already ended. The error undici emits for it has no one to receive it.
 */
export function discard (body: Exchange['body']): void {
  body.on('error', ignoreError).destroy()
}

function ignoreError (): void {}

/**
 * Describes an error status in the words of an OriginStatusError message, with the
 * number of retries already made and what the reader can do next.
 */
export function describeStatus (url: URL, status: number, retries: number): string {
  const after = retries > 0 ? ` after ${retries} ${retries === 1 ? 'retry' : 'retries'}` : ''
  const base = `origin returned HTTP ${status} for GET ${urlForLog(url)}${after}`
  if (status === 401 || status === 403) return `${base}: check the credentials sent in the request headers`
  if (status === 404 || status === 410) return `${base}: check the URL`
  if (status === 416) return `${base}: the requested range starts past the end of the content`
  if (status >= 500) return `${base}: the origin failed, try again later`
  return base
}

function resolveLocation (from: URL, status: number, location: string | undefined): URL {
  if (location === undefined || location.trim() === '') {
    throw new OriginResponseError(`origin ${urlForLog(from)} returned redirect ${status} without a Location header`)
  }

  let target: URL
  try {
    target = new URL(location, from)
  } catch {
    throw new OriginResponseError(`origin ${urlForLog(from)} returned redirect ${status} to an invalid Location`)
  }
  if (target.protocol !== 'http:' && target.protocol !== 'https:') {
    throw new OriginResponseError(`origin ${urlForLog(from)} redirected to unsupported scheme "${target.protocol.replace(/:$/, '')}": only http and https are followed`)
  }
  return target
}

/** Reads up to STATUS_BODY_LIMIT bytes of an error body as text, then aborts the rest. */
async function readErrorBody (body: Dispatcher.ResponseData['body']): Promise<string> {
  const chunks: Buffer[] = []
  let length = 0
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      chunks.push(chunk)
      length += chunk.length
      if (length >= STATUS_BODY_LIMIT) break
    }
  } catch {
    // The status is the error to report, and a body that breaks off adds nothing to it.
  } finally {
    discard(body)
  }
  return Buffer.concat(chunks).subarray(0, STATUS_BODY_LIMIT).toString('utf8')
}
