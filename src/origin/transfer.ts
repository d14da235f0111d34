/**
 * One transfer from an origin: connects with bounded retries, then yields the
 * requested bytes and resumes with a Range request where the body breaks off.
 */
import type { Dispatcher } from 'undici'
import { OriginResponseError, OriginStatusError, OriginUnreachableError, TimeoutError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { describeStatus, discard, sendGet, type Exchange } from './exchange.ts'
import { withRange } from './headers.ts'
import { planBody, single, type BodyPlan, type ByteRange } from './range.ts'
import { urlForLog } from './redact.ts'
import { backoffDelay, errorCode, isRetryable, TruncatedBodyError, waitBackoff } from './retry.ts'

/**
 * Body bytes a broken attempt must have delivered since the previous failure for the
 * retry count to start again, so a long transfer over a flaky link is not cut short
 * by a few breaks hours apart. Attempts stay bounded: at most retries + 1 per MiB of
 * content, plus retries + 1.
 */
export const PROGRESS_RESETS_RETRIES_BYTES = 1024 * 1024

export interface TransferOptions {
  dispatcher: Dispatcher
  log: Logger
  url: URL
  /** Request headers without Range; see buildHeaders. */
  headers: Record<string, string>
  /** Bytes requested, or the whole content when undefined. */
  range?: ByteRange
  maxRedirects: number
  retries: number
  backoffMs: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
  signal?: AbortSignal
}

/** Headers that name the version of a content. */
interface Validators {
  etag?: string
  lastModified?: string
}

/** A connected response with the plan for cutting the requested bytes out of it. */
export interface Segment {
  exchange: Exchange
  plan: BodyPlan
}

export class Transfer {
  readonly #options: TransferOptions
  /** Failed attempts since the retry count last started again. */
  #failures = 0
  /** Absolute offset the previous failure happened at. */
  #failedAt: number
  /** URL of the request in flight, for error messages. */
  #hop: URL
  /** Content size from the first response that stated it. */
  #size: number | undefined
  /** Body of the current segment, destroyed when the reader stops early. */
  #current: Exchange['body'] | undefined
  /** ETag and Last-Modified of the first response, which every resumed response must repeat. */
  #validators: Validators | undefined

  constructor (options: TransferOptions) {
    this.#options = options
    this.#failedAt = options.range?.start ?? 0
    this.#hop = options.url
  }

  /** Content size, if a response stated it. */
  get size (): number | undefined {
    return this.#size
  }

  /**
   * Sends the GET for the bytes from `offset` on, retrying 5xx responses and transient
   * network errors with back-off. Returns the connected segment, or throws the
   * error of the last attempt (see #recover).
   */
  async connect (offset: number): Promise<Segment> {
    const { range } = this.#options
    const requested: ByteRange = range?.end === undefined ? { start: offset } : { start: offset, end: range.end }
    const rangeSent = range !== undefined || offset > 0
    let headers = rangeSent ? withRange(this.#options.headers, requested) : this.#options.headers
    // A resumed request is for the rest of the same version only. An origin whose content
    // changed then sends all of the new one, which #checkVersion rejects.
    const etag = this.#validators?.etag
    if (etag !== undefined && rangeSent && !etag.startsWith('W/')) headers = { ...headers, 'if-range': etag }

    for (;;) {
      try {
        const exchange = await sendGet({
          dispatcher: this.#options.dispatcher,
          log: this.#options.log,
          url: this.#options.url,
          headers,
          maxRedirects: this.#options.maxRedirects,
          ...(this.#options.signal === undefined ? {} : { signal: this.#options.signal }),
          onHop: url => { this.#hop = url }
        })
        const plan = this.#plan(exchange, requested, rangeSent)
        this.#current = exchange.body
        return { exchange, plan }
      } catch (err) {
        await this.#recover(err, offset)
      }
    }
  }

  /** Yields the requested bytes of `first` and of the segments that resume it, each byte once. */
  async * read (first: Segment): AsyncGenerator<Uint8Array, void, undefined> {
    let segment = first
    let position = this.#options.range?.start ?? 0
    const startedAt = position

    try {
      for (;;) {
        try {
          for await (const piece of cut(segment)) {
            position += piece.byteLength
            yield piece
          }
          this.#options.log.debug({ url: urlForLog(segment.exchange.url), bytes: position - startedAt, retries: this.#failures }, 'origin body complete')
          return
        } catch (err) {
          // A connection that breaks after the last requested byte has delivered everything,
          // unless the origin sent bytes it had not announced.
          const end = this.#options.range?.end ?? this.#size
          const delivered = end !== undefined && position >= end
          if (delivered && !(err instanceof OriginResponseError) && this.#options.signal?.aborted !== true) return
          segment = await this.#resume(err, position)
        }
      }
    } finally {
      if (this.#current !== undefined) discard(this.#current)
    }
  }

  /** Aborts the body being read, for a reader that stops before reading it all. */
  cancel (): void {
    if (this.#current !== undefined) discard(this.#current)
  }

  async #resume (err: unknown, position: number): Promise<Segment> {
    await this.#recover(err, position)
    this.#options.log.info({ url: urlForLog(this.#options.url), offset: position }, 'resuming origin body')
    return await this.connect(position)
  }

  #plan (exchange: Exchange, requested: ByteRange, rangeSent: boolean): BodyPlan {
    try {
      const plan = planBody({
        status: exchange.status,
        headers: exchange.headers,
        range: requested,
        rangeSent,
        url: urlForLog(exchange.url),
        ...(this.#size === undefined ? {} : { knownSize: this.#size })
      })
      this.#size ??= plan.size
      this.#checkVersion(exchange)
      return plan
    } catch (err) {
      discard(exchange.body)
      throw err
    }
  }

  /**
   * Records the first response's ETag and Last-Modified, and throws OriginResponseError when a later
   * response names another version, so that no body joins the bytes of two versions.
   */
  #checkVersion (exchange: Exchange): void {
    const seen: Validators = {}
    const etag = single(exchange.headers.etag)
    const lastModified = single(exchange.headers['last-modified'])
    if (etag !== undefined) seen.etag = etag
    if (lastModified !== undefined) seen.lastModified = lastModified
    const first = this.#validators
    if (first === undefined) {
      this.#validators = seen
      return
    }
    const changed = first.etag !== undefined && seen.etag !== undefined
      ? first.etag !== seen.etag
      : first.lastModified !== undefined && seen.lastModified !== undefined && first.lastModified !== seen.lastModified
    if (changed) {
      const before = first.etag ?? first.lastModified ?? ''
      const after = seen.etag ?? seen.lastModified ?? ''
      throw new OriginResponseError(`content at ${urlForLog(exchange.url)} changed between attempts (${before}, then ${after}): fetch it again from the start`)
    }
  }

  /**
   * Decides what follows a failed attempt at `offset`. Returns after the back-off
   * delay when another attempt is due, and throws otherwise. It throws the signal's
   * reason when the signal aborted, and TimeoutError for a timeout. A 5xx that stays
   * throws its OriginStatusError, and a network failure OriginUnreachableError.
   * OriginResponseError passes unchanged.
   */
  async #recover (err: unknown, offset: number): Promise<void> {
    const { signal, retries, backoffMs } = this.#options
    if (signal?.aborted === true) throw signal.reason

    const timeout = this.#timeoutError(err, offset)
    if (timeout !== undefined) throw timeout
    if (!isRetryable(err)) throw this.#finalError(err, 0)

    if (offset - this.#failedAt >= PROGRESS_RESETS_RETRIES_BYTES) this.#failures = 0
    this.#failedAt = offset
    if (this.#failures >= retries) throw this.#finalError(err, this.#failures)

    this.#failures++
    const delayMs = backoffDelay(backoffMs, this.#failures)
    this.#options.log.warn({
      url: urlForLog(this.#hop),
      retry: this.#failures,
      of: retries,
      delayMs,
      offset,
      err: describeFailure(err)
    }, 'origin request failed, retrying')
    await waitBackoff(delayMs, signal)
  }

  #timeoutError (err: unknown, offset: number): TimeoutError | undefined {
    const code = errorCode(err)
    const url = urlForLog(this.#hop)
    if (code === 'UND_ERR_HEADERS_TIMEOUT') {
      return new TimeoutError(`origin ${url} sent no response headers within ${this.#options.headersTimeoutMs} ms: check that it is up, or raise headersTimeoutMs`, { cause: err })
    }
    if (code === 'UND_ERR_BODY_TIMEOUT') {
      return new TimeoutError(`origin ${url} sent no body bytes for ${this.#options.bodyTimeoutMs} ms at byte ${offset}: check that it is up, or raise bodyTimeoutMs`, { cause: err })
    }
    return undefined
  }

  #finalError (err: unknown, retried: number): unknown {
    if (err instanceof OriginStatusError) {
      return retried === 0 ? err : new OriginStatusError(describeStatus(this.#hop, err.status, retried), err.status, err.body, { cause: err })
    }
    if (err instanceof OriginResponseError || err instanceof OriginUnreachableError) return err

    const after = retried > 0 ? ` after ${retried} ${retried === 1 ? 'retry' : 'retries'}` : ''
    return new OriginUnreachableError(`could not fetch ${urlForLog(this.#hop)}${after}: ${describeFailure(err)}. Check that the origin is reachable from this host`, { cause: err })
  }
}

/** Yields the planned bytes of one segment; throws TruncatedBodyError when its body ends early. */
async function * cut (segment: Segment): AsyncGenerator<Uint8Array, void, undefined> {
  const { exchange, plan } = segment
  let skip = plan.skip
  let remaining = plan.length

  for await (const chunk of exchange.body as AsyncIterable<Buffer>) {
    let piece: Uint8Array = chunk
    if (skip > 0) {
      const skipped = Math.min(skip, piece.byteLength)
      skip -= skipped
      piece = piece.subarray(skipped)
    }

    if (remaining !== undefined && piece.byteLength > remaining) {
      if (!plan.truncate) {
        throw new OriginResponseError(`origin ${urlForLog(exchange.url)} sent more body bytes than its Content-Range or Content-Length announced`)
      }
      piece = piece.subarray(0, remaining)
    }

    if (piece.byteLength > 0) {
      if (remaining !== undefined) remaining -= piece.byteLength
      yield piece
    }

    // An origin that ignored the Range header goes on past the requested bytes: stop reading
    // here, and leaving the loop destroys the body, which aborts the rest of the download.
    if (remaining === 0 && plan.truncate) return
  }

  if (skip > 0 || (remaining !== undefined && remaining > 0)) {
    const missing = skip + (remaining ?? 0)
    throw new TruncatedBodyError(`body of ${urlForLog(exchange.url)} ended ${missing} bytes early`)
  }
}

/** Describes a failure in one line: its message, and its code when the message lacks it. */
function describeFailure (err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const code = errorCode(err)
  const message = err.message !== '' ? err.message : err.name
  return code !== undefined && !message.includes(code) ? `${message} (${code})` : message
}

