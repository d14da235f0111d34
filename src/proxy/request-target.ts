/**
 * Works out where a client request goes: the upstream URL, whether it names a
 * blob by digest, and whether its path is malformed. Pure functions, no I/O.
 */
import { digestFromBlobPath } from '../content/url.ts'
import type { ProxyOptions, RegistryEntry } from './options.ts'

/** How the request reached the proxy. */
export type RequestMode = 'mirror' | 'forward' | 'intercept'

/** A blob named by digest in a request path. */
export interface BlobTarget {
  digest: string
  /** `api` for `/v2/<name>/blobs/<digest>`, `storage` for a storage-backend path. */
  kind: 'api' | 'storage'
  /** Repository name of an `api` path. */
  repository?: string
}

export interface RequestTarget {
  mode: RequestMode
  /** URL the request is forwarded to, `?ns=` removed. */
  upstreamUrl: URL
  /** Registry the request was mirrored to, in mirror mode. */
  registry?: RegistryEntry
  /** Present when the path names a blob by a valid digest. */
  blob?: BlobTarget
}

/** A request the proxy rejects, with the status and registry error code to send. */
export interface TargetError {
  status: number
  code: string
  message: string
}

const DIGEST_REF = /^sha256:[0-9a-f]{64}$/
const API_REFERENCE = /^\/v2\/(.+)\/(blobs|manifests)\/([^/]+)$/
const STORAGE_SHAPE = /\/docker\/registry\/v2\/blobs\/sha256\/([^/]*)\/([^/]*)\/data$/

/**
 * Checks a raw request path (as sent, before any URL normalisation) for dot
 * segments, backslashes, NUL bytes and malformed sha256 digests.
 */
export function checkPath (rawPath: string): TargetError | undefined {
  // A malformed digest reference is reported as such, even when it is also badly percent-encoded.
  const api = API_REFERENCE.exec(rawPath)
  const reference = api?.[3]
  if (reference != null && reference.toLowerCase().startsWith('sha256:') && !DIGEST_REF.test(reference)) {
    return { status: 400, code: 'DIGEST_INVALID', message: `invalid digest "${reference}": expected sha256: followed by 64 lowercase hex characters` }
  }

  // URL parsing reads a backslash as a slash, which would let `\..\` escape the checks below.
  if (rawPath.includes('\\')) {
    return { status: 400, code: 'NAME_INVALID', message: `invalid path "${rawPath.slice(0, 200)}": a backslash is not allowed in a request path` }
  }
  for (const segment of rawPath.split('/')) {
    let decoded: string
    try {
      decoded = decodeURIComponent(segment)
    } catch {
      return { status: 400, code: 'NAME_INVALID', message: `invalid percent-encoding in path segment "${segment}"` }
    }
    if (decoded === '.' || decoded === '..' || decoded.includes('\0')) {
      return { status: 400, code: 'NAME_INVALID', message: `invalid path segment "${segment}": dot segments and NUL bytes are not allowed` }
    }
  }

  const storage = STORAGE_SHAPE.exec(rawPath)
  if (storage != null && digestFromBlobPath(rawPath) == null) {
    return { status: 400, code: 'DIGEST_INVALID', message: `invalid storage path digest "${storage[1] ?? ''}/${storage[2] ?? ''}": expected <first two hex characters>/<64 lowercase hex characters>` }
  }
  return undefined
}

/** Finds the blob a path names, if any. Call checkPath first. */
export function blobOfPath (pathname: string): BlobTarget | undefined {
  const digest = digestFromBlobPath(pathname)
  if (digest == null) return undefined
  const api = API_REFERENCE.exec(pathname)
  if (api?.[2] === 'blobs' && api[1] != null) return { digest, kind: 'api', repository: api[1] }
  return { digest, kind: 'storage' }
}

/** Splits a raw request target into path and query (`?` included), leaving both undecoded. */
export function splitRawTarget (raw: string): { path: string, query: string } {
  const hash = raw.indexOf('#')
  const target = hash >= 0 ? raw.slice(0, hash) : raw
  const question = target.indexOf('?')
  return question >= 0 ? { path: target.slice(0, question), query: target.slice(question) } : { path: target, query: '' }
}

/**
 * Resolves a registry-mirror request (`/v2/…` on the proxy): the registry is
 * the one `?ns=` names, or the default registry when there is no `ns`.
 */
export function resolveMirrorTarget (rawUrl: string, options: ProxyOptions): RequestTarget | TargetError {
  const { path, query } = splitRawTarget(rawUrl)
  const pathError = checkPath(path)
  if (pathError != null) return pathError

  const params = new URLSearchParams(query)
  const ns = params.get('ns')

  let registry: RegistryEntry | undefined
  if (ns != null) {
    registry = options.registries.find(entry => entry.host === ns.toLowerCase())
    if (registry == null) {
      const known = options.registries.map(entry => entry.host).join(', ')
      return { status: 403, code: 'DENIED', message: `registry "${ns}" named by ?ns= is not configured on this proxy (configured: ${known === '' ? 'none' : known}): add it to proxy.registries` }
    }
  } else {
    registry = options.registry
    if (registry == null) {
      return { status: 404, code: 'NAME_UNKNOWN', message: 'no default registry is configured on this proxy: start it with --registry URL or send ?ns=HOST' }
    }
  }

  const search = withoutParameter(query, 'ns')
  const upstreamUrl = new URL(`${registry.url.origin}${path}${search}`)
  const target: RequestTarget = { mode: 'mirror', upstreamUrl, registry }
  const blob = blobOfPath(path)
  if (blob != null) target.blob = blob
  return target
}

/**
 * Removes every `name=…` parameter from a raw query string (`?` included) and keeps the others
 * byte for byte, since a signed query may be checked as it was sent.
 */
function withoutParameter (query: string, name: string): string {
  if (query === '') return ''
  const remaining = query.slice(1).split('&').filter(part => {
    const key = part.split('=')[0] ?? ''
    try {
      return decodeURIComponent(key.replaceAll('+', ' ')) !== name
    } catch {
      return true
    }
  })
  return remaining.length === 0 ? '' : `?${remaining.join('&')}`
}

/** Resolves an absolute-URI request (forward-proxy mode). */
export function resolveForwardTarget (rawUrl: string): RequestTarget | TargetError {
  const match = /^(https?):\/\/([^/?#]+)(.*)$/i.exec(rawUrl)
  if (match?.[1] == null || match[2] == null) {
    return { status: 400, code: 'UNSUPPORTED', message: `invalid request target "${rawUrl.slice(0, 200)}": expected an absolute http:// or https:// URL` }
  }
  const rest = match[3] === '' || match[3] == null ? '/' : match[3]
  return resolveOriginTarget('forward', `${match[1].toLowerCase()}://${match[2]}`, rest)
}

/** Resolves an origin-form request inside an intercepted tunnel to `origin`. */
export function resolveOriginTarget (mode: RequestMode, origin: string, rawPathAndQuery: string): RequestTarget | TargetError {
  const { path, query } = splitRawTarget(rawPathAndQuery)
  const pathError = checkPath(path)
  if (pathError != null) return pathError

  let upstreamUrl: URL
  try {
    upstreamUrl = new URL(`${origin}${path}${query}`)
  } catch {
    return { status: 400, code: 'UNSUPPORTED', message: `invalid request URL "${origin}${path}"` }
  }
  if (upstreamUrl.username !== '' || upstreamUrl.password !== '') {
    return { status: 400, code: 'UNSUPPORTED', message: `request URL for ${upstreamUrl.host} carries credentials: send them in an Authorization header` }
  }
  const target: RequestTarget = { mode, upstreamUrl }
  const blob = blobOfPath(path)
  if (blob != null) target.blob = blob
  return target
}

export function isTargetError (value: RequestTarget | TargetError): value is TargetError {
  return 'status' in value
}
