/**
 * Serving of a blob GET from the blob source: authorization check with the
 * upstream, Range, streaming in order, and falling back to the upstream when
 * the blob source fails before or while the body is sent.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { once } from 'node:events'
import { VerificationError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { writeChunk } from '../write-chunk.ts'
import type { RequestRecord } from './access-log.ts'
import type { AuthorizationCheck } from './auth-check.ts'
import type { BlobHandle, BlobSource } from './blob-source.ts'
import { upstreamRequestHeaders } from './headers.ts'
import { passThrough } from './pass-through.ts'
import { parseRange } from './range.ts'
import type { BlobTarget } from './request-target.ts'
import { discardBody, type Upstream } from './upstream.ts'

export interface ServeBlobContext {
  upstream: Upstream
  blobSource: BlobSource
  authorization: AuthorizationCheck
  logger: Logger
}

/** Request headers that have no meaning for the blob source's own requests. */
const PER_REQUEST_HEADERS = new Set(['range', 'if-range', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'accept-encoding'])

/** Serves a GET of `blob` at `url`; resolves when the response has ended or failed. */
export async function serveBlob (context: ServeBlobContext, req: IncomingMessage, res: ServerResponse, url: URL, blob: BlobTarget, record: RequestRecord): Promise<void> {
  const controller = new AbortController()
  const abort = (): void => { if (!res.writableFinished) controller.abort() }
  res.once('close', abort)
  const signal = controller.signal
  const headers = upstreamRequestHeaders(req.headers)
  const where = { digest: blob.digest, url: `${url.origin}${url.pathname}` }

  // 1. Leave multi-range and conditional-range requests to the upstream.
  const rangeHeader = req.headers.range
  if (req.headers['if-range'] != null || (rangeHeader != null && parseRange(rangeHeader, Number.MAX_SAFE_INTEGER).kind === 'multiple')) {
    await passThrough(context, req, res, url, record)
    return
  }

  // 2. Confirm with the upstream that this client may read the blob. A denial
  //    goes back exactly as the upstream sends it, body and WWW-Authenticate included.
  let allowed: boolean
  try {
    allowed = (await context.authorization.check({ url, headers, blob, signal })).allowed
  } catch (err) {
    if (signal.aborted) return
    context.logger.warn({ err, ...where }, 'authorization check failed, forwarding the request')
    allowed = false
  }
  if (!allowed) {
    await passThrough(context, req, res, url, record)
    return
  }

  // 3. Open the blob; a failure here falls back to the upstream.
  const sourceHeaders: Record<string, string> = {}
  for (const [name, value] of Object.entries(headers)) {
    if (!PER_REQUEST_HEADERS.has(name)) sourceHeaders[name] = value
  }
  let handle: BlobHandle
  try {
    handle = await context.blobSource.open({ digest: blob.digest, url: url.href, headers: sourceHeaders, signal })
  } catch (err) {
    if (signal.aborted) return
    context.logger.warn({ err, ...where }, 'blob source could not open the blob, forwarding the request')
    await passThrough(context, req, res, url, record)
    return
  }

  try {
    await sendFromHandle(context, req, res, url, blob, handle, headers, record, signal)
  } finally {
    handle.close()
    res.off('close', abort)
  }
}

/** The reader of a response body and the byte range [start, end) it reads; `partial` for a 206. */
interface BodyRead {
  iterator: AsyncIterator<Uint8Array>
  start: number
  end: number
  partial: boolean
}

async function sendFromHandle (context: ServeBlobContext, req: IncomingMessage, res: ServerResponse, url: URL, blob: BlobTarget, handle: BlobHandle, headers: Record<string, string>, record: RequestRecord, signal: AbortSignal): Promise<void> {
  // 4. Apply the Range header to the blob's size.
  const range = parseRange(req.headers.range, handle.size)
  if (range.kind === 'unsatisfiable') {
    res.writeHead(416, { 'content-range': `bytes */${handle.size}`, 'content-length': 0 })
    res.end()
    return
  }
  const partial = range.kind === 'single'
  const start = partial ? range.start : 0
  const end = partial ? range.end : handle.size

  // 5. Wait for the first bytes before sending headers, so that a blob source
  //    failing at once still lets the upstream respond instead.
  const iterator = handle.read(start, end, signal)[Symbol.asyncIterator]()
  try {
    await sendBody(context, req, res, url, blob, handle, headers, record, signal, { iterator, start, end, partial })
  } finally {
    // Ends the reader, whichever way the response ended, so it closes its piece and releases its pin.
    await iterator.return?.()?.catch(() => {})
  }
}

async function sendBody (context: ServeBlobContext, req: IncomingMessage, res: ServerResponse, url: URL, blob: BlobTarget, handle: BlobHandle, headers: Record<string, string>, record: RequestRecord, signal: AbortSignal, body: BodyRead): Promise<void> {
  const { iterator, start, end, partial } = body
  const where = { digest: blob.digest, url: `${url.origin}${url.pathname}` }
  let first: Uint8Array | undefined
  if (end > start) {
    try {
      const step = await iterator.next()
      if (step.done !== true) first = step.value
    } catch (err) {
      if (signal.aborted) return
      context.logger.warn({ err, ...where }, 'blob source failed before the first byte, forwarding the request')
      await passThrough(context, req, res, url, record)
      return
    }
  }

  // 6. Send headers.
  record.route = handle.local === true ? 'local' : 'p2p'
  const responseHeaders: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'content-length': end - start,
    'docker-content-digest': blob.digest,
    etag: `"${blob.digest}"`,
    'accept-ranges': 'bytes'
  }
  if (partial) responseHeaders['content-range'] = `bytes ${start}-${end - 1}/${handle.size}`
  res.writeHead(partial ? 206 : 200, responseHeaders)

  // 7. Stream the body in order, and resume from the upstream if the blob source fails. Each
  //    write waits until the socket is done with the chunk, because the source reuses its buffer.
  let offset = start
  // A failed write means the client is gone, not that the blob source failed.
  let clientGone = false
  const send = async (chunk: Uint8Array): Promise<void> => {
    try {
      await writeChunk(res, chunk, signal)
    } catch (err) {
      clientGone = true
      throw err
    }
  }
  try {
    if (first != null) {
      await send(first)
      offset += first.length
      record.bytes += first.length
    }
    while (offset < end) {
      const step = await iterator.next()
      if (step.done === true) break
      await send(step.value)
      offset += step.value.length
      record.bytes += step.value.length
    }
  } catch (err) {
    if (signal.aborted) return
    if (clientGone) {
      res.destroy()
      return
    }
    if (err instanceof VerificationError) {
      context.logger.error({ err, ...where, offset }, 'blob failed verification, closing the response')
      res.destroy()
      return
    }
    context.logger.warn({ err, ...where, offset }, 'blob source failed mid-stream, resuming from the upstream')
    await resumeFromUpstream(context, res, url, headers, offset, end, record, signal)
    return
  }

  if (offset !== end) {
    context.logger.error({ ...where, offset, end }, 'blob source ended early, closing the response')
    res.destroy()
    return
  }
  res.end()
}

/** Fetches bytes [offset, end) from the upstream with a Range request and sends them on; closes the response on any mismatch. */
async function resumeFromUpstream (context: ServeBlobContext, res: ServerResponse, url: URL, headers: Record<string, string>, offset: number, end: number, record: RequestRecord, signal: AbortSignal): Promise<void> {
  const where = { url: `${url.origin}${url.pathname}`, offset }
  try {
    const rangeHeaders: Record<string, string> = {}
    for (const [name, value] of Object.entries(headers)) {
      if (!PER_REQUEST_HEADERS.has(name)) rangeHeaders[name] = value
    }
    rangeHeaders.range = `bytes=${offset}-${end - 1}`
    rangeHeaders['accept-encoding'] = 'identity'
    const { response } = await context.upstream.requestFollowing(url, { method: 'GET', headers: rangeHeaders, signal })
    const contentRange = response.headers['content-range']
    if (response.statusCode !== 206 || typeof contentRange !== 'string' || !contentRange.startsWith(`bytes ${offset}-`)) {
      discardBody(response.body)
      context.logger.error({ ...where, status: response.statusCode, contentRange }, 'upstream did not honour the resume range, closing the response')
      res.destroy()
      return
    }
    let position = offset
    for await (const chunk of response.body) {
      const bytes = chunk as Buffer
      const wanted = Math.min(bytes.length, end - position)
      // Each chunk from the upstream is a buffer of its own, so a full send buffer is enough to wait for.
      const part = wanted === bytes.length ? bytes : bytes.subarray(0, wanted)
      if (!res.write(part)) await once(res, 'drain', { signal })
      position += wanted
      record.bytes += wanted
      if (position >= end) break
    }
    if (position !== end) {
      context.logger.error({ ...where, position, end }, 'upstream resume ended early, closing the response')
      res.destroy()
      return
    }
    res.end()
  } catch (err) {
    if (signal.aborted) return
    context.logger.error({ err, ...where }, 'resume from the upstream failed, closing the response')
    res.destroy()
  }
}
