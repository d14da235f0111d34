/**
 * Byte ranges: the Range header sent, and the check of the response against it.
 */
import { OriginResponseError } from '../errors.ts'
import type { IncomingHttpHeaders } from 'node:http'

/** A parsed `Content-Range: bytes first-last/total` header; `total` is undefined for `*`. */
export interface ContentRange {
  first: number
  last: number
  total?: number
}

/** Part of the content a request fetches: `start` inclusive, `end` exclusive, to the end when undefined. */
export interface ByteRange {
  start: number
  end?: number
}

/** How to cut the requested bytes out of one response body. */
export interface BodyPlan {
  /** Leading body bytes to drop (an origin that ignored Range sends the content from byte 0). */
  skip: number
  /** Bytes to yield after the skipped ones, or undefined when the body runs to an unknown end. */
  length?: number
  /** True when the body goes on past the requested bytes, so reading stops early and the rest is aborted. */
  truncate: boolean
  /** Total content size, if the response states it. */
  size?: number
}

/** Formats the Range header value for a byte range: `bytes=start-(end-1)` or `bytes=start-`. */
export function formatRange (range: ByteRange): string {
  return range.end === undefined ? `bytes=${range.start}-` : `bytes=${range.start}-${range.end - 1}`
}

/** Parses a Content-Range header of a 206 response; undefined when it is missing or invalid. */
export function parseContentRange (value: string | undefined): ContentRange | undefined {
  if (value === undefined) return undefined
  const match = /^bytes (\d{1,15})-(\d{1,15})\/(\d{1,15}|\*)$/i.exec(value.trim())
  if (match?.[1] == null || match[2] == null || match[3] == null) return undefined

  const first = Number(match[1])
  const last = Number(match[2])
  const total = match[3] === '*' ? undefined : Number(match[3])
  if (last < first || (total !== undefined && last >= total)) return undefined
  return total === undefined ? { first, last } : { first, last, total }
}

/** Parses a Content-Length header; undefined when it is missing or not a decimal number. */
export function parseContentLength (value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,15}$/.test(value.trim())) return undefined
  return Number(value)
}

/**
 * Checks a 200 or 206 response against the requested range and returns how to read its body.
 * A 206 must carry a Content-Range whose first and last byte match the request exactly.
 * A 200 carries the whole content, so the plan skips to `start` and stops at `end`.
 * `rangeSent` is true when the request carried a Range header.
 * `knownSize` is the size a previous attempt reported. A different size now means the
 * content changed at the origin, and the bytes already yielded would not match the rest.
 * Throws OriginResponseError naming the URL and both values when they do not fit.
 */
export function planBody (options: {
  status: number
  headers: IncomingHttpHeaders
  range: ByteRange
  rangeSent: boolean
  knownSize?: number
  url: string
}): BodyPlan {
  const { status, headers, range, url } = options
  const rangeHeader = formatRange(range)
  let plan: BodyPlan

  if (status === 206) {
    if (!options.rangeSent) {
      throw new OriginResponseError(`origin ${url} returned 206 Partial Content to a request without Range: it does not follow HTTP range semantics`)
    }
    const value = single(headers['content-range'])
    const received = parseContentRange(value)
    if (received === undefined) {
      throw new OriginResponseError(`origin ${url} returned 206 Partial Content with a missing or invalid Content-Range ${JSON.stringify(value ?? '')} for Range ${rangeHeader}`)
    }

    // An open-ended request must receive the bytes up to the end of the content.
    let expectedLast = received.last
    if (range.end !== undefined) expectedLast = range.end - 1
    else if (received.total !== undefined) expectedLast = received.total - 1

    if (received.first !== range.start || received.last !== expectedLast) {
      throw new OriginResponseError(`origin ${url} returned Content-Range bytes ${received.first}-${received.last}/${received.total ?? '*'} for Range ${rangeHeader}: the bytes do not match the request (the content may be shorter than the range end)`)
    }
    plan = { skip: 0, length: received.last - received.first + 1, truncate: false }
    if (received.total !== undefined) plan.size = received.total
  } else if (status === 200) {
    const size = parseContentLength(single(headers['content-length']))
    if (size !== undefined && (range.start > size || (range.end !== undefined && range.end > size))) {
      throw new OriginResponseError(`origin ${url} sent the whole content of ${size} bytes for Range ${rangeHeader}: the range reaches past the end of the content`)
    }

    const end = range.end ?? size
    plan = {
      skip: range.start,
      truncate: range.end !== undefined && (size === undefined || size > range.end)
    }
    if (end !== undefined) plan.length = end - range.start
    if (size !== undefined) plan.size = size
  } else {
    throw new OriginResponseError(`origin ${url} returned unexpected status ${status} to a GET: expected 200 or 206`)
  }

  if (options.knownSize !== undefined && plan.size !== undefined && plan.size !== options.knownSize) {
    throw new OriginResponseError(`content at ${url} changed size from ${options.knownSize} to ${plan.size} bytes between attempts: fetch it again from the start`)
  }
  return plan
}

/** Returns the single value of a response header, the first one if it was repeated. */
export function single (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}
