/**
 * One info line per request: method, URL without its query string (signed
 * URLs carry secrets there), route, status, body bytes sent, duration.
 */
import type { ServerResponse } from 'node:http'
import type { Logger } from '../log.ts'

/** Where a response came from: the blob source (`p2p`), this host's store (`local`), the upstream (`direct`), a CONNECT tunnel (`tunnel`), or the proxy itself (`proxy`, for its own errors). */
export type RouteLabel = 'p2p' | 'local' | 'direct' | 'tunnel' | 'proxy'

export interface RequestRecord {
  method: string
  /** URL or path without query string. */
  url: string
  mode: string
  route: RouteLabel
  /** Body bytes sent to the client. */
  bytes: number
  /** performance.now() at arrival. */
  startedAt: number
}

/**
 * Strips the query string and fragment from a URL or path, and the user name and password from
 * an absolute URL, so that it can be logged: signed URLs carry credentials in the query string.
 */
export function withoutQuery (url: string): string {
  const end = url.search(/[?#]/)
  const path = end >= 0 ? url.slice(0, end) : url
  // Up to the last @ of the authority, since a password may contain one.
  return path.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/]*@/i, '$1')
}

/** Creates the record of a request and writes its log line when the response closes. */
export function trackRequest (logger: Logger, res: ServerResponse, method: string, url: string, mode: string): RequestRecord {
  const record: RequestRecord = { method, url: withoutQuery(url), mode, route: 'proxy', bytes: 0, startedAt: performance.now() }
  res.once('close', () => {
    logger.info({
      method: record.method,
      url: record.url,
      mode: record.mode,
      route: record.route,
      status: res.statusCode,
      bytes: record.bytes,
      ms: Math.round(performance.now() - record.startedAt),
      ...(res.writableFinished ? {} : { aborted: true })
    }, 'request')
  })
  return record
}
