/**
 * URL normalisation for task keys: the same resource under a different signed
 * query string maps to the same key.
 */
import { UsageError } from '../errors.ts'

/** Query parameters dropped from a URL before it is keyed: signatures and expiry times. */
export const DEFAULT_QUERY_FILTER: readonly string[] = [
  'Expires',
  'Signature',
  'OSSAccessKeyId',
  'X-Amz-Algorithm',
  'X-Amz-Credential',
  'X-Amz-Date',
  'X-Amz-Expires',
  'X-Amz-Signature',
  'X-Amz-Security-Token',
  'ns'
]

/** Parses an http or https URL, throwing UsageError that names the value otherwise. */
export function parseHttpUrl (value: string): URL {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    // The parser rejects a port above 65535 like any other fault, so that case is named here.
    const port = /^[a-z][a-z0-9+.-]*:\/\/(?:\[[^\]]*\]|[^/?#:@]*):(\d+)(?:[/?#]|$)/i.exec(value)?.[1]
    if (port != null && Number(port) > 65535) {
      throw new UsageError(`invalid port ${port} in URL "${value}": use a port from 1 to 65535`)
    }
    throw new UsageError(`invalid URL "${value}": expected an absolute http:// or https:// URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`unsupported URL scheme "${url.protocol.replace(/:$/, '')}" in "${value}": use http or https`)
  }
  // The URL parser skips extra slashes, so "http:///x" would name the host x.
  if (!/^https?:\/\/[^/\\]/i.test(value.trim())) {
    throw new UsageError(`missing host in URL "${value}": expected http://HOST/PATH or https://HOST/PATH`)
  }
  if (url.username !== '' || url.password !== '') {
    throw new UsageError(`URL "${url.protocol}//${url.host}${url.pathname}" carries credentials: pass them with -H 'Authorization: …' instead`)
  }
  return url
}

/**
 * Normalises a URL for keying: lowercase scheme and host, default port removed,
 * fragment removed, filtered query parameters removed, remaining parameters sorted.
 * Filter names are compared case-insensitively. A name that ends in `*` is a prefix:
 * `X-Amz-*` drops every parameter whose name starts with `X-Amz-`, and `*` drops them all.
 */
export function normaliseUrl (value: string | URL, filter: readonly string[] = DEFAULT_QUERY_FILTER): string {
  const url = new URL(typeof value === 'string' ? parseHttpUrl(value).href : value.href)
  const exact = new Set(filter.filter(name => !name.endsWith('*')).map(name => name.toLowerCase()))
  const prefixes = filter.filter(name => name.endsWith('*')).map(name => name.slice(0, -1).toLowerCase())
  const dropped = (name: string): boolean => {
    const lower = name.toLowerCase()
    return exact.has(lower) || prefixes.some(prefix => lower.startsWith(prefix))
  }

  url.hash = ''
  const kept = [...url.searchParams.entries()].filter(([name]) => !dropped(name))
  kept.sort(([a, av], [b, bv]) => compareStrings(a, b) || compareStrings(av, bv))
  url.search = ''
  for (const [name, paramValue] of kept) url.searchParams.append(name, paramValue)

  return url.href
}

/** Orders strings by code unit, the same in every locale. */
function compareStrings (a: string, b: string): number {
  if (a < b) return -1
  if (a > b) return 1
  return 0
}

/**
 * Extracts the digest from a registry blob URL: `/v2/<name>/blobs/sha256:<hex>`,
 * or a storage-backend path `…/blobs/sha256/<ab>/<hex>/data`. Returns undefined otherwise.
 */
export function digestFromBlobPath (pathname: string): string | undefined {
  const api = /^\/v2\/(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\/)*[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\/blobs\/(sha256:[0-9a-f]{64})$/.exec(pathname)
  if (api?.[1] != null) return api[1]
  const storage = /\/blobs\/sha256\/([0-9a-f]{2})\/([0-9a-f]{64})\/data$/.exec(pathname)
  if (storage?.[1] != null && storage[2] != null && storage[2].startsWith(storage[1])) return `sha256:${storage[2]}`
  return undefined
}
