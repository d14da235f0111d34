/**
 * Request headers sent to an origin: the caller's headers minus the ones the
 * client sets itself, plus identity encoding and the byte range.
 */
import { UsageError } from '../errors.ts'
import { formatRange, type ByteRange } from './range.ts'

/**
 * Headers the client controls or that would change what a GET returns: framing and
 * connection headers, the range, the encoding, and conditional headers whose 304 or
 * 412 responses the client does not handle.
 */
const RESERVED_HEADERS = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'upgrade',
  'content-length',
  'expect',
  'range',
  'if-range',
  'accept-encoding',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since'
])

/** Returns true for a header that the origin client sets or drops itself, whatever the caller passes. */
export function isReservedHeader (name: string): boolean {
  return RESERVED_HEADERS.has(name.toLowerCase())
}

/** Headers that carry credentials, sent only to the origin of the first URL. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie'])

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * Validates the caller's headers and returns them with lowercase names, reserved
 * headers dropped and `accept-encoding: identity` set. Throws UsageError naming
 * an invalid header. The message never contains a header value.
 */
export function buildHeaders (headers: Record<string, string> | undefined): Record<string, string> {
  const built: Record<string, string> = { 'user-agent': 'dfnode' }

  for (const [name, value] of Object.entries(headers ?? {})) {
    if (!TOKEN.test(name)) throw new UsageError(`invalid request header name ${JSON.stringify(name)}: use an HTTP token`)
    if (/[\r\n\0]/.test(value)) throw new UsageError(`invalid value for request header "${name}": it contains a line break or NUL`)

    const lower = name.toLowerCase()
    if (!RESERVED_HEADERS.has(lower)) built[lower] = value
  }

  built['accept-encoding'] = 'identity'
  return built
}

/** Returns the headers with a Range header for the requested bytes, or unchanged when the whole content is requested. */
export function withRange (headers: Record<string, string>, range: ByteRange | undefined): Record<string, string> {
  if (range === undefined) return headers
  return { ...headers, range: formatRange(range) }
}

/** Returns the headers without credentials, for a redirect target on another origin. */
export function withoutCredentials (headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !CREDENTIAL_HEADERS.has(name)))
}

/** Returns the names of the caller's headers that buildHeaders drops, for a debug line. */
export function droppedHeaderNames (headers: Record<string, string> | undefined): string[] {
  return Object.keys(headers ?? {}).filter(name => RESERVED_HEADERS.has(name.toLowerCase()))
}
