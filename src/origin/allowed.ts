/**
 * The list of hosts a client may fetch from: "host", "host:port", "[ipv6]",
 * "[ipv6]:port", "*.domain" for any subdomain of domain, or "*" for any host.
 */
import { ConfigError } from '../errors.ts'

/** One parsed entry of the allowed-origin list. */
interface AllowedOrigin {
  /** Lowercase host name, bracketed IPv6 address, or a domain suffix when `subdomains` is set. */
  host: string
  /** Match subdomains of `host` instead of `host` itself. */
  subdomains: boolean
  /** Port the entry is limited to, or any port when undefined. */
  port?: string
}

/** A parsed allowed-origin list. */
export interface AllowedOrigins {
  /** Entries as the configuration spelled them, for error messages. */
  readonly spelled: readonly string[]
  /** True when every host is allowed: the list was undefined or contained "*". */
  readonly any: boolean
  readonly entries: readonly AllowedOrigin[]
}

/** Parses allowed-origin entries, throwing ConfigError that names an invalid entry. */
export function parseAllowedOrigins (list: readonly string[] | undefined): AllowedOrigins {
  if (list === undefined) return { spelled: ['*'], any: true, entries: [] }

  const entries: AllowedOrigin[] = []
  let any = false
  for (const spelled of list) {
    const entry = spelled.trim()
    if (entry === '*') {
      any = true
      continue
    }
    entries.push(parseEntry(entry, spelled))
  }
  return { spelled: [...list], any, entries }
}

/** Returns whether the URL's host (and port, where an entry names one) is allowed. */
export function isAllowed (allowed: AllowedOrigins, url: URL): boolean {
  if (allowed.any) return true

  let port = url.port
  if (port === '') port = url.protocol === 'https:' ? '443' : '80'

  return allowed.entries.some(entry => {
    if (entry.port !== undefined && entry.port !== port) return false
    if (entry.subdomains) return url.hostname.endsWith(`.${entry.host}`)
    return url.hostname === entry.host
  })
}

function parseEntry (entry: string, spelled: string): AllowedOrigin {
  // A bare IPv6 address has several colons and no port. Every other form has at most one colon.
  const colons = entry.split(':').length - 1
  const hostAndPort = !entry.startsWith('[') && colons > 1
    ? { host: `[${entry}]`, port: undefined }
    : splitPort(entry)
  if (hostAndPort === undefined) throw invalidEntry(spelled)

  let host = hostAndPort.host
  const subdomains = host.startsWith('*.')
  if (subdomains) host = host.slice(2)

  let normalised: URL
  try {
    normalised = new URL(`http://${host}/`)
  } catch {
    throw invalidEntry(spelled)
  }
  if (host === '' || normalised.port !== '' || normalised.pathname !== '/' || normalised.username !== '') {
    throw invalidEntry(spelled)
  }

  const port = hostAndPort.port
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw invalidEntry(spelled)
  return port === undefined
    ? { host: normalised.hostname, subdomains }
    : { host: normalised.hostname, subdomains, port: String(Number(port)) }
}

function splitPort (entry: string): { host: string, port?: string } | undefined {
  const match = /^(\[[^\]]*\]|[^:[\]]*)(?::(\d{1,5}))?$/.exec(entry)
  if (match?.[1] == null) return undefined
  return match[2] === undefined ? { host: match[1] } : { host: match[1], port: match[2] }
}

function invalidEntry (spelled: string): ConfigError {
  return new ConfigError(`invalid allowed origin "${spelled}": expected "*", "host", "host:port", "[ipv6]:port" or "*.domain"`)
}
