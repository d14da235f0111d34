/**
 * Options of `dfnode proxy`, their defaults, and validation into the form the
 * proxy runs with. Validation does no I/O: files named here are read at start.
 */
import { ConfigError } from '../errors.ts'

/** Where a blob GET is served from: the blob source (swarm) or the upstream directly. */
export type Route = 'swarm' | 'direct'

/** A registry the mirror may forward to, as written in a config file. */
export interface RegistryInput {
  /** Name containerd sends in `?ns=`, such as `docker.io` or `registry.example.com:5000`. */
  host: string
  /** Base URL the registry is reached at, such as `https://registry-1.docker.io`; default `https://<host>`. */
  url?: string
  /** PEM file of CA certificates that sign the registry's certificate; default the system store. */
  ca?: string
  /** Skip verification of the registry's TLS certificate; default false. */
  insecure?: boolean
}

/** A routing rule for blob GETs, as written in a config file. */
export interface RuleInput {
  /** Regular expression tested against the upstream URL, query string included. */
  match: string
  /** Route of a blob GET whose URL matches. */
  route: Route
}

/** A host pattern whose HTTPS CONNECT tunnels are intercepted, as written in a config file. */
export interface InterceptInput {
  /** Regular expression tested against `host:port` of the CONNECT request. */
  host: string
  /** PEM file of CA certificates that sign the upstream's certificate; default the system store. */
  ca?: string
  /** Skip verification of the upstream's TLS certificate; default false. */
  insecure?: boolean
}

/** Options of the proxy; every field is optional and has the default given. */
export interface ProxyOptionsInput {
  /** Address to listen on; default 127.0.0.1. */
  host?: string
  /** TCP port to listen on; default 65001. 0 picks a free port. */
  port?: number
  /** Default upstream registry URL for `/v2/` requests without `?ns=`; none by default. */
  registry?: string
  /** Further registries that `?ns=` may name; default none. */
  registries?: RegistryInput[]
  /** Routing rules for blob GETs, first match wins; default: every blob GET goes through the swarm. */
  rules?: RuleInput[]
  /** Intercept HTTPS CONNECT tunnels to matching hosts; default false (plain tunnels). */
  hijackHttps?: boolean
  /** Hosts to intercept when hijackHttps is on; default: the hosts of the configured registries. */
  hijack?: InterceptInput[]
  /** PEM certificate of the CA that signs intercepted hosts' certificates (see `dfnode gen-ca`). */
  caCert?: string
  /** PEM private key of that CA. */
  caKey?: string
  /** How long an allowed blob authorization check is reused, in milliseconds; default 30000. 0 disables reuse. */
  authCacheTtlMs?: number
  /** Maximum size of a request's header block in bytes; larger requests get 431. Default 16384. */
  maxHeaderSize?: number
  /**
   * Time allowed for a client's request headers (and TLS handshake, when intercepted) and for the
   * upstream's response headers, in milliseconds; default 60000.
   */
  headersTimeoutMs?: number
  /** Time allowed between two chunks of an upstream body, in milliseconds; default 60000. */
  bodyTimeoutMs?: number
}

export interface RegistryEntry {
  /** Name as containerd sends it in `?ns=`, lowercase. */
  host: string
  url: URL
  ca?: string
  insecure: boolean
}

export interface RouteRule {
  match: RegExp
  route: Route
}

export interface InterceptEntry {
  host: RegExp
  ca?: string
  insecure: boolean
}

/** Validated options. */
export interface ProxyOptions {
  host: string
  port: number
  /** Default upstream, when configured. */
  registry?: RegistryEntry
  /** Every registry `?ns=` may name, the default one included. */
  registries: RegistryEntry[]
  rules: RouteRule[]
  hijackHttps: boolean
  hijack: InterceptEntry[]
  caCert?: string
  caKey?: string
  authCacheTtlMs: number
  maxHeaderSize: number
  headersTimeoutMs: number
  bodyTimeoutMs: number
}

export const PROXY_DEFAULTS = {
  host: '127.0.0.1',
  port: 65001,
  authCacheTtlMs: 30_000,
  maxHeaderSize: 16 * 1024,
  headersTimeoutMs: 60_000,
  bodyTimeoutMs: 60_000
} as const

/**
 * Names a setting and its value for a message, as the user wrote them: `--port 70000`, or
 * `registries[0].host "x" in FILE`. `key` is the path in ProxyOptionsInput, such as `hijack[0].host`.
 */
export type SettingNamer = (key: string, value: unknown) => string

/** Names settings by their path under `proxy`, for options that come from code. */
const namePath: SettingNamer = (key, value) => `proxy.${key} ${JSON.stringify(value)}`

/** Validates proxy options, throwing ConfigError that names the setting with `name` and its value. */
export function resolveProxyOptions (input: ProxyOptionsInput, name: SettingNamer = namePath): ProxyOptions {
  const port = input.port ?? PROXY_DEFAULTS.port
  checkInteger(name, 'port', port, 0, 65535)
  const host = input.host ?? PROXY_DEFAULTS.host
  if (typeof host !== 'string' || host === '') throw new ConfigError(`invalid ${name('host', host)}: expected an address such as 127.0.0.1`)

  const registries: RegistryEntry[] = []
  let registry: RegistryEntry | undefined
  if (input.registry != null) {
    const url = parseRegistryUrl(name, 'registry', input.registry)
    registry = { host: url.host, url, insecure: false }
    registries.push(registry)
  }
  for (const [i, entry] of (input.registries ?? []).entries()) {
    const resolved = resolveRegistry(name, `registries[${i}]`, entry)
    const existing = registries.findIndex(r => r.host === resolved.host)
    if (existing >= 0) {
      // A listed entry refines the default registry of the same host (CA, insecure).
      if (registry?.host === resolved.host) registry = resolved
      registries[existing] = resolved
    } else {
      registries.push(resolved)
    }
  }

  const rules = (input.rules ?? []).map((rule, i) => resolveRule(name, `rules[${i}]`, rule))
  const hijack = (input.hijack ?? []).map((entry, i) => resolveIntercept(name, `hijack[${i}]`, entry))
  const hijackHttps = input.hijackHttps ?? false
  if (hijackHttps && (input.caCert == null || input.caKey == null)) {
    throw new ConfigError('HTTPS interception is on but the CA certificate or key is missing: create a pair with `dfnode gen-ca --out DIR` and pass --ca-cert DIR/ca.crt --ca-key DIR/ca.key')
  }

  const authCacheTtlMs = input.authCacheTtlMs ?? PROXY_DEFAULTS.authCacheTtlMs
  checkInteger(name, 'authCacheTtlMs', authCacheTtlMs, 0, 3_600_000)
  const maxHeaderSize = input.maxHeaderSize ?? PROXY_DEFAULTS.maxHeaderSize
  checkInteger(name, 'maxHeaderSize', maxHeaderSize, 1024, 1024 * 1024)
  const headersTimeoutMs = input.headersTimeoutMs ?? PROXY_DEFAULTS.headersTimeoutMs
  checkInteger(name, 'headersTimeoutMs', headersTimeoutMs, 1, 3_600_000)
  const bodyTimeoutMs = input.bodyTimeoutMs ?? PROXY_DEFAULTS.bodyTimeoutMs
  checkInteger(name, 'bodyTimeoutMs', bodyTimeoutMs, 1, 3_600_000)

  const options: ProxyOptions = { host, port, registries, rules, hijackHttps, hijack, authCacheTtlMs, maxHeaderSize, headersTimeoutMs, bodyTimeoutMs }
  if (registry != null) options.registry = registry
  if (input.caCert != null) options.caCert = input.caCert
  if (input.caKey != null) options.caKey = input.caKey
  return options
}

function resolveRegistry (name: SettingNamer, key: string, entry: RegistryInput): RegistryEntry {
  if (entry == null || typeof entry.host !== 'string' || !/^[a-z0-9.-]+(?::[0-9]{1,5})?$/i.test(entry.host)) {
    throw new ConfigError(`invalid ${name(`${key}.host`, entry?.host)}: expected a registry name such as docker.io or registry.example.com:5000`)
  }
  const host = entry.host.toLowerCase()
  const url = parseRegistryUrl(name, `${key}.url`, entry.url ?? (host === 'docker.io' ? 'https://registry-1.docker.io' : `https://${host}`))
  if (entry.insecure != null && typeof entry.insecure !== 'boolean') throw new ConfigError(`invalid ${name(`${key}.insecure`, entry.insecure)}: expected true or false`)
  const resolved: RegistryEntry = { host, url, insecure: entry.insecure ?? false }
  if (entry.ca != null) resolved.ca = entry.ca
  return resolved
}

function resolveRule (name: SettingNamer, key: string, rule: RuleInput): RouteRule {
  if (rule?.route !== 'swarm' && rule?.route !== 'direct') {
    throw new ConfigError(`invalid ${name(`${key}.route`, rule?.route)}: expected "swarm" or "direct"`)
  }
  return { match: compilePattern(name, `${key}.match`, rule.match), route: rule.route }
}

function resolveIntercept (name: SettingNamer, key: string, entry: InterceptInput): InterceptEntry {
  const resolved: InterceptEntry = { host: compilePattern(name, `${key}.host`, entry?.host), insecure: entry.insecure ?? false }
  if (entry.ca != null) resolved.ca = entry.ca
  return resolved
}

function compilePattern (name: SettingNamer, key: string, value: unknown): RegExp {
  if (typeof value !== 'string' || value === '') throw new ConfigError(`invalid ${name(key, value)}: expected a regular expression`)
  try {
    return new RegExp(value)
  } catch (err) {
    throw new ConfigError(`invalid ${name(key, value)}: expected a regular expression (${(err as Error).message})`, { cause: err })
  }
}

function parseRegistryUrl (name: SettingNamer, key: string, value: unknown): URL {
  let url: URL | undefined
  try {
    url = new URL(String(value))
  } catch {}
  if (url == null || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') {
    throw new ConfigError(`invalid ${name(key, value)}: expected an http:// or https:// URL without credentials, such as https://registry.example.com`)
  }
  if (url.pathname !== '/' || url.search !== '') {
    throw new ConfigError(`invalid ${name(key, value)}: give the registry's base URL only, without a path or query`)
  }
  return url
}

function checkInteger (name: SettingNamer, key: string, value: unknown, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`invalid ${name(key, value)}: expected an integer from ${min} to ${max}`)
  }
}
