/**
 * Checks of the `fetch` arguments that run before anything starts: digest,
 * request headers and output path.
 */
import { stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { isDigest } from '../content/ids.ts'
import { UsageError } from '../errors.ts'
import { isReservedHeader } from '../origin/headers.ts'

/** Characters of an HTTP field name (RFC 9110 section 5.6.2, token). */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** Throws UsageError, naming --digest, unless `value` is `sha256:` and 64 lowercase hex characters. */
export function checkDigest (value: string): void {
  if (!isDigest(value)) {
    throw new UsageError(`invalid --digest "${value}": expected sha256: followed by 64 lowercase hex characters`)
  }
}

/**
 * Parses `Name: value` headers. Repeated names (compared case-insensitively) are joined with
 * ", " under the first spelling, as HTTP combines list fields. Throws UsageError on any other form.
 */
export function parseHeaders (values: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {}
  const spelling = new Map<string, string>()

  for (const text of values) {
    const colon = text.indexOf(':')
    const name = colon === -1 ? '' : text.slice(0, colon).trim()
    if (!HEADER_NAME.test(name)) {
      throw new UsageError(`invalid header ${describeHeader(text)}: expected "Name: value" with a name of letters, digits and !#$%&'*+-.^_\`|~`)
    }
    if (isReservedHeader(name)) {
      throw new UsageError(`header ${name} cannot be given with -H: dfnode sets it itself or leaves it out, because it changes the origin's response`)
    }
    const value = text.slice(colon + 1).trim()
    if (/[\r\n\0]/.test(value)) {
      throw new UsageError(`invalid header ${name}: its value contains a line break or NUL character`)
    }

    const key = spelling.get(name.toLowerCase()) ?? name
    spelling.set(name.toLowerCase(), key)
    headers[key] = headers[key] != null ? `${headers[key]}, ${value}` : value
  }
  return headers
}

/**
 * Resolves the output file: `output` when given, else the last segment of the URL path,
 * both against `cwd`. Throws UsageError when no file name can be derived, when the path
 * is an existing directory, or when its directory does not exist.
 */
export async function resolveOutput (output: string | undefined, url: URL, cwd: string): Promise<string> {
  const path = resolve(cwd, output ?? fileNameOf(url))

  const existing = await stat(path).catch(() => undefined)
  if (existing?.isDirectory() === true) {
    throw new UsageError(`output path ${path} is a directory: pass a file path with -o, such as -o ${join(path, safeFileNameOf(url) ?? 'download')}`)
  }

  const parent = await stat(dirname(path)).catch(() => undefined)
  if (parent == null) {
    throw new UsageError(`cannot write ${path}: directory ${dirname(path)} does not exist: create it first or pass another path with -o`)
  }
  if (!parent.isDirectory()) {
    throw new UsageError(`cannot write ${path}: ${dirname(path)} is a file, not a directory: pass another path with -o`)
  }
  return path
}

/** Returns the last URL path segment as a file name; throws UsageError when there is no usable one. */
function fileNameOf (url: URL): string {
  const name = safeFileNameOf(url)
  if (name == null) {
    throw new UsageError(`cannot derive a file name from URL ${url.origin}${url.pathname}: pass the output file with -o`)
  }
  return name
}

function safeFileNameOf (url: URL): string | undefined {
  const segment = url.pathname.split('/').pop() ?? ''
  let name: string
  try {
    name = decodeURIComponent(segment)
  } catch {
    name = segment
  }
  // A decoded %2F or %00 must not turn the name into a path.
  if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) return undefined
  return name
}

/** Names a malformed header by its first word only, because the rest may be a credential. */
function describeHeader (text: string): string {
  const firstWord = text.trim().split(/[:\s]/)[0] ?? ''
  if (firstWord === '') return 'with an empty name'
  return `starting "${firstWord.length > 40 ? `${firstWord.slice(0, 40)}…` : firstWord}"`
}
