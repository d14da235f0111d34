/**
 * Client of a host daemon's control socket, used by `dfnode fetch`.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { errorFromCode, ProtocolError } from '../errors.ts'
import { RESULT_TRAILER, SIZE_HEADER, type ControlFetchRequest, type ControlFetchResult } from './control-protocol.ts'

export interface ControlFetch {
  size: number
  /** Content bytes in order; throws if the daemon breaks off. */
  body: AsyncIterable<Uint8Array>
  /** Outcome, readable after the body is consumed. */
  result: () => ControlFetchResult
}

/**
 * Sends a fetch to the daemon listening on `socketPath`. Resolves undefined
 * when no daemon listens there, so the caller runs its own node.
 */
export async function fetchThroughDaemon (socketPath: string, body: ControlFetchRequest, signal?: AbortSignal): Promise<ControlFetch | undefined> {
  let response: IncomingMessage
  try {
    response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = httpRequest({ socketPath, method: 'POST', path: '/v1/fetch', headers: { 'content-type': 'application/json' }, ...(signal != null ? { signal } : {}) }, resolve)
      req.on('error', reject)
      req.end(JSON.stringify(body))
    })
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ENOTSOCK') return undefined
    throw err
  }

  if (response.statusCode !== 200) {
    const text = await readText(response)
    let error: { code?: string, message?: string, status?: number } = {}
    try {
      error = JSON.parse(text)
    } catch {}
    throw errorFromCode(error.code ?? 'ERR_DAEMON', error.message ?? `daemon responded ${response.statusCode ?? '?'}: ${text.slice(0, 200)}`, error.status)
  }
  const size = Number(response.headers[SIZE_HEADER])
  if (!Number.isSafeInteger(size) || size < 0) throw new ProtocolError(`daemon sent an invalid size "${String(response.headers[SIZE_HEADER])}"`)

  return {
    size,
    body: response,
    result: () => {
      const trailer = response.trailers[RESULT_TRAILER]
      if (trailer == null) throw new ProtocolError('daemon ended the transfer without a result; the download failed there, see its log')
      const outcome = JSON.parse(trailer) as ControlFetchResult | { error: { code: string, message: string, status?: number } }
      if ('error' in outcome) throw errorFromCode(outcome.error.code, outcome.error.message, outcome.error.status)
      return outcome
    }
  }
}

async function readText (response: IncomingMessage): Promise<string> {
  const parts: Buffer[] = []
  let total = 0
  for await (const chunk of response as AsyncIterable<Buffer>) {
    total += chunk.byteLength
    if (total <= 64 * 1024) parts.push(chunk)
  }
  return Buffer.concat(parts).toString('utf8')
}
