/**
 * A real HTTP origin for tests: serves files from memory or disk, supports
 * Range, counts the bytes it sends, and misbehaves on request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface OriginFile {
  body: Buffer
  /** Status sent instead of the file. */
  status?: number
  /** Ignore Range headers and always send the whole file. */
  ignoreRange?: boolean
  /** Send no response at all (a hung origin). */
  hang?: boolean
  /** Send at most this many bytes per second. */
  bytesPerSecond?: number
}

export class TestOrigin {
  readonly files = new Map<string, OriginFile>()
  /** Body bytes sent, per path. */
  readonly served = new Map<string, number>()
  /** Requests received, per path. */
  readonly requests = new Map<string, number>()
  private server?: Server
  private readonly sockets = new Set<import('node:net').Socket>()

  get totalServed (): number {
    let total = 0
    for (const bytes of this.served.values()) total += bytes
    return total
  }

  async start (): Promise<string> {
    this.server = createServer((req, res) => { this.handle(req, res) })
    this.server.on('connection', socket => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    await new Promise<void>(resolve => this.server!.listen(0, '127.0.0.1', resolve))
    const { port } = this.server.address() as AddressInfo
    return `http://127.0.0.1:${port}`
  }

  async stop (): Promise<void> {
    for (const socket of this.sockets) socket.destroy()
    await new Promise<void>(resolve => this.server?.close(() => { resolve() }) ?? resolve())
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!
    this.requests.set(path, (this.requests.get(path) ?? 0) + 1)
    const file = this.files.get(path)
    if (file == null) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no such file ${path}\n`)
      return
    }
    if (file.hang === true) return
    if (file.status != null) {
      res.writeHead(file.status, { 'content-type': 'text/plain' }).end(`status ${file.status}\n`)
      return
    }

    let start = 0
    let end = file.body.byteLength
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    if (range != null && file.ignoreRange !== true) {
      start = Number(range[1])
      end = range[2] !== '' ? Math.min(Number(range[2]) + 1, end) : end
      if (start >= file.body.byteLength) {
        res.writeHead(416, { 'content-range': `bytes */${file.body.byteLength}` }).end()
        return
      }
      res.writeHead(206, { 'content-length': end - start, 'content-range': `bytes ${start}-${end - 1}/${file.body.byteLength}`, 'content-type': 'application/octet-stream' })
    } else {
      res.writeHead(200, { 'content-length': file.body.byteLength, 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' })
    }
    if (req.method === 'HEAD') {
      res.end()
      return
    }
    this.send(path, file, res, start, end)
  }

  private send (path: string, file: OriginFile, res: ServerResponse, start: number, end: number): void {
    const chunk = 64 * 1024
    let offset = start
    const perTick = file.bytesPerSecond != null ? Math.max(1, Math.floor(file.bytesPerSecond / 20)) : Infinity
    // Only the 50 ms timer refills the budget: a 'drain' resumes with what is left of it.
    let budget = perTick
    const pump = (): void => {
      while (offset < end && budget > 0) {
        const take = Math.min(chunk, end - offset, budget)
        const ok = res.write(file.body.subarray(offset, offset + take))
        offset += take
        budget -= take
        this.served.set(path, (this.served.get(path) ?? 0) + take)
        if (!ok) {
          res.once('drain', pump)
          return
        }
      }
      if (offset >= end) {
        res.end()
        return
      }
      setTimeout(() => {
        budget = perTick
        pump()
      }, 50)
    }
    res.on('close', () => { offset = end })
    pump()
  }
}
