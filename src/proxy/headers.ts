/**
 * Header handling between client and upstream: hop-by-hop headers (RFC 9110
 * section 7.6.1) stay on their own connection, everything else passes on.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade'
])

/** Header names that a `Connection` header lists, lowercase. */
function connectionTokens (headers: IncomingHttpHeaders): Set<string> {
  const value = headers.connection
  const joined = Array.isArray(value) ? value.join(',') : value ?? ''
  return new Set(joined.split(',').map(token => token.trim().toLowerCase()).filter(token => token !== ''))
}

/**
 * Builds the headers of an upstream request from a client's request: hop-by-hop
 * headers, Host and Expect removed, repeated headers joined with commas.
 */
export function upstreamRequestHeaders (headers: IncomingHttpHeaders): Record<string, string> {
  const listed = connectionTokens(headers)
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    // Node answers `Expect: 100-continue` itself, and undici rejects the header.
    if (value == null || name === 'host' || name === 'expect' || HOP_BY_HOP.has(name) || listed.has(name)) continue
    out[name] = Array.isArray(value) ? value.join(', ') : value
  }
  return out
}

/** Builds the headers of a client response from an upstream response, hop-by-hop headers removed. */
export function clientResponseHeaders (headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = connectionTokens(headers)
  const out: OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(headers)) {
    if (value == null || HOP_BY_HOP.has(name) || listed.has(name)) continue
    out[name] = value
  }
  return out
}

/** Returns the first value of a header, or undefined. */
export function headerValue (headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name]
  return Array.isArray(value) ? value[0] : value
}
