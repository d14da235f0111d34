/**
 * Forwarding of a request to its upstream untouched: method, headers
 * (hop-by-hop ones aside), body, and the upstream's status, headers and body
 * back, redirects included.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { pipeline } from 'node:stream/promises'
import type { Logger } from '../log.ts'
import { clientResponseHeaders, upstreamRequestHeaders } from './headers.ts'
import type { RequestRecord } from './access-log.ts'
import { sendError } from './responses.ts'
import type { Upstream } from './upstream.ts'

export interface PassThroughContext {
  upstream: Upstream
  logger: Logger
}

/** Forwards `req` to `url` and streams the answer back; resolves when the response ends or fails. */
export async function passThrough (context: PassThroughContext, req: IncomingMessage, res: ServerResponse, url: URL, record: RequestRecord): Promise<void> {
  record.route = 'direct'
  const controller = new AbortController()
  const abort = (): void => { if (!res.writableFinished) controller.abort() }
  res.once('close', abort)

  // 1. Send the request, with the client's body when it has one.
  const method = (req.method ?? 'GET').toUpperCase()
  const hasBody = method !== 'GET' && method !== 'HEAD' && (req.headers['content-length'] != null || req.headers['transfer-encoding'] != null)
  let response
  try {
    response = await context.upstream.request(url, {
      method,
      headers: upstreamRequestHeaders(req.headers),
      body: hasBody ? req : null,
      signal: controller.signal
    })
  } catch (err) {
    if (controller.signal.aborted) return
    const timedOut = (err as Error).cause instanceof Error && /Timeout/.test(((err as Error).cause as Error).name)
    context.logger.warn({ err, method, url: `${url.origin}${url.pathname}` }, 'upstream request failed')
    sendError(res, record, timedOut ? 504 : 502, 'UNAVAILABLE', `upstream ${url.host} did not answer ${method} ${url.pathname}: ${(err as Error).message}`)
    return
  }

  // 2. Relay status, headers and body.
  res.writeHead(response.statusCode, clientResponseHeaders(response.headers))
  response.body.on('data', (chunk: Buffer) => { record.bytes += chunk.length })
  try {
    await pipeline(response.body, res)
  } catch (err) {
    if (!controller.signal.aborted) context.logger.warn({ err, method, url: `${url.origin}${url.pathname}` }, 'upstream body broke off')
  } finally {
    res.off('close', abort)
  }
}
