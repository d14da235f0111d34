/**
 * Retry policy: which failures are worth another attempt, and the back-off between attempts.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { OriginStatusError } from '../errors.ts'

/** Maximum back-off delay, so a large retry count cannot wait for hours. */
export const MAX_BACKOFF_MS = 60_000

/**
 * Network error codes after which a new attempt may succeed: refused or reset
 * connections, unreachable networks, temporary DNS failures, and a response whose
 * body ended before its announced length.
 */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'HPE_INVALID_EOF_STATE'
])

/** A body that ended before all the bytes its response announced. The transfer resumes after it. */
export class TruncatedBodyError extends Error {
  override name = 'TruncatedBodyError'
  readonly code = 'ERR_TRUNCATED_BODY'
}

/** Returns whether a failed attempt may succeed when repeated: a 5xx, a transient network error or a truncated body. */
export function isRetryable (err: unknown): boolean {
  if (err instanceof OriginStatusError) return err.status >= 500
  if (err instanceof TruncatedBodyError) return true
  return TRANSIENT_CODES.has(errorCode(err) ?? '')
}

/** Returns the `code` property of an error, or of the error it wraps. */
export function errorCode (err: unknown): string | undefined {
  for (let current = err, depth = 0; current instanceof Error && depth < 4; current = current.cause, depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string') return code
  }
  return undefined
}

/** Returns the back-off delay before retry number `retry` (1-based): `backoffMs` doubled each retry, at most MAX_BACKOFF_MS. */
export function backoffDelay (backoffMs: number, retry: number): number {
  return Math.min(backoffMs * 2 ** (retry - 1), MAX_BACKOFF_MS)
}

/** Waits `ms` milliseconds. An aborted signal ends the wait by throwing its reason. */
export async function waitBackoff (ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await sleep(ms, undefined, signal === undefined ? {} : { signal })
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    throw err
  }
}
