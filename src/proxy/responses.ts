/**
 * Error responses the proxy writes itself, in the registry's JSON error
 * format so container engines print the message.
 */
import type { ServerResponse } from 'node:http'
import type { RequestRecord } from './access-log.ts'

/** Sends `{"errors":[{code, message}]}` with `status`, or ends the connection when headers are already out. */
export function sendError (res: ServerResponse, record: RequestRecord | undefined, status: number, code: string, message: string): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = JSON.stringify({ errors: [{ code, message }] }) + '\n'
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  res.end(body)
  if (record != null) record.bytes += Buffer.byteLength(body)
}
