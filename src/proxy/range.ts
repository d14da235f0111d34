/**
 * Parsing of a request's Range header against a known size (RFC 9110 section 14).
 */

export type ByteRange =
  /** No usable Range header: serve the whole blob. Invalid headers are ignored, as the RFC allows. */
  | { kind: 'none' }
  /** One range, `end` exclusive. */
  | { kind: 'single', start: number, end: number }
  /** Several ranges; the proxy leaves these to the upstream. */
  | { kind: 'multiple' }
  /** No requested byte exists: answer 416. */
  | { kind: 'unsatisfiable' }

/** Parses `bytes=…` for a resource of `size` bytes. */
export function parseRange (header: string | undefined, size: number): ByteRange {
  if (header == null) return { kind: 'none' }
  const match = /^\s*bytes\s*=\s*(.+)$/i.exec(header)
  if (match?.[1] == null) return { kind: 'none' }
  const specs = match[1].split(',').map(spec => spec.trim()).filter(spec => spec !== '')
  if (specs.length === 0) return { kind: 'none' }
  if (specs.length > 1) return { kind: 'multiple' }

  const spec = /^(\d*)-(\d*)$/.exec(specs[0] ?? '')
  if (spec == null || (spec[1] === '' && spec[2] === '')) return { kind: 'none' }
  const first = spec[1] === '' ? undefined : Number(spec[1])
  const last = spec[2] === '' ? undefined : Number(spec[2])

  if (first == null) {
    // Suffix range: the last `last` bytes.
    if (last === 0 || last == null || size === 0) return { kind: 'unsatisfiable' }
    return { kind: 'single', start: Math.max(0, size - last), end: size }
  }
  if (last != null && last < first) return { kind: 'none' }
  if (first >= size) return { kind: 'unsatisfiable' }
  return { kind: 'single', start: first, end: last == null ? size : Math.min(last + 1, size) }
}
