/**
 * Serves the control socket of a host daemon, so that `dfnode fetch` on the
 * same host downloads through the daemon's node and store.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { chmod, rm } from 'node:fs/promises'
import { DfnodeError, UsageError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { Engine } from '../swarm/engine.ts'
import { stripQuery } from '../supernode/seed-task.ts'
import { writeChunk } from '../write-chunk.ts'
import { RESULT_TRAILER, SIZE_HEADER, type ControlError, type ControlFetchRequest, type ControlFetchResult } from './control-protocol.ts'

/** Largest request body accepted, in bytes. */
const MAX_REQUEST_BYTES = 128 * 1024

export class ControlServer {
  private readonly engine: Engine
  private readonly logger: Logger
  private readonly path: string
  private server?: Server

  constructor (engine: Engine, logger: Logger, path: string) {
    this.engine = engine
    this.logger = logger
    this.path = path
  }

  async start (): Promise<void> {
    await rm(this.path, { force: true })
    this.server = createServer((req, res) => { void this.handle(req, res) })
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject)
      this.server!.listen(this.path, resolve)
    })
    await chmod(this.path, 0o600)
    this.logger.info({ socket: this.path }, 'control socket listening')
  }

  async stop (): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>(resolve => this.server?.close(() => { resolve() }) ?? resolve())
    await rm(this.path, { force: true })
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const controller = new AbortController()
    res.on('close', () => { if (!res.writableFinished) controller.abort(new Error('client went away')) })
    let request: ControlFetchRequest | undefined
    try {
      // 1. Parse the request.
      if (req.method !== 'POST' || req.url !== '/v1/fetch') {
        sendError(res, 404, { code: 'ERR_NOT_FOUND', message: `no such control endpoint ${req.method ?? ''} ${req.url ?? ''}` })
        return
      }
      request = await readJson(req)

      // 2. Open the download and send the size once known.
      const download = await this.engine.open({ url: request.url, ...(request.headers != null ? { headers: request.headers } : {}), ...(request.digest != null ? { digest: request.digest } : {}), ...(request.filter != null ? { filter: request.filter } : {}) })
      download.expectReader()
      const layout = await download.ready(controller.signal)
      res.writeHead(200, { 'content-type': 'application/octet-stream', [SIZE_HEADER]: String(layout.size), trailer: RESULT_TRAILER })

      // 3. Stream the content in order, then the outcome as a trailer.
      for await (const chunk of this.engine.readRange(download, 0, layout.size, controller.signal)) {
        // The reader reuses the chunk's buffer. A client that goes away never completes a
        // write: the signal ends the wait and the read.
        await writeChunk(res, chunk, controller.signal)
      }
      await download.done
      const result: ControlFetchResult = {
        key: download.key.toString(),
        digest: `sha256:${Buffer.from(download.content!.multihash.digest).toString('hex')}`,
        size: layout.size,
        ...download.stats
      }
      res.addTrailers({ [RESULT_TRAILER]: JSON.stringify(result) })
      res.end()
      this.logger.info({ url: stripQuery(request.url), key: result.key, bytes: result.size }, 'control fetch served')
    } catch (err) {
      const error = err instanceof DfnodeError ? err : undefined
      this.logger.warn({ url: request != null ? stripQuery(request.url) : undefined, code: error?.code, err: (err as Error).message }, 'control fetch failed')
      if (!res.headersSent) {
        sendError(res, error instanceof UsageError ? 400 : 502, { code: error?.code ?? 'ERR_INTERNAL', message: (err as Error).message, ...((error as { status?: number } | undefined)?.status != null ? { status: (error as unknown as { status: number }).status } : {}) })
      } else {
        // The body is already under way: the error travels in the trailer, and the client discards what it wrote.
        const trailer: { error: ControlError } = { error: { code: error?.code ?? 'ERR_INTERNAL', message: (err as Error).message } }
        res.addTrailers({ [RESULT_TRAILER]: JSON.stringify(trailer) })
        res.end()
      }
    }
  }
}

function sendError (res: ServerResponse, status: number, error: ControlError): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(error))
}

async function readJson (req: IncomingMessage): Promise<ControlFetchRequest> {
  let total = 0
  const parts: Buffer[] = []
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.byteLength
    if (total > MAX_REQUEST_BYTES) throw new UsageError(`control request over ${MAX_REQUEST_BYTES} bytes`)
    parts.push(chunk)
  }
  let value: unknown
  try {
    value = JSON.parse(Buffer.concat(parts).toString('utf8'))
  } catch {
    throw new UsageError('control request is not valid JSON')
  }
  const body = value as Partial<ControlFetchRequest>
  if (body == null || typeof body.url !== 'string') throw new UsageError('control request has no url')
  return body as ControlFetchRequest
}
