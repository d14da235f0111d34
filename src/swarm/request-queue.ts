/**
 * Requests of one piece stream, read ahead of the one being served, so that
 * a cancel reaches a request before its piece is sent. The stream's reader
 * adds requests and cancels, and the server takes the requests in order.
 */
import type { CID } from 'multiformats/cid'
import { sameCid } from '../content/ids.ts'
import type { PieceRequest } from './wire.ts'

export type QueuedRequest = Exclude<PieceRequest, { t: 'cancel' }> & {
  /** Set when the client cancelled this request. Its response is then 'cancelled', or its piece ends early. */
  cancelled?: boolean
}

/** Maximum of requests read ahead. Beyond it, the reader waits for room. */
export const MAX_QUEUED_REQUESTS = 32

export class RequestQueue {
  private readonly items: QueuedRequest[] = []
  /** The request being served, until the next `take`. */
  private current?: QueuedRequest
  private ended = false
  private wakeTaker?: () => void
  private wakeReader?: () => void

  /** Adds a request, and resolves once there is room for the next. */
  async add (request: QueuedRequest): Promise<void> {
    this.items.push(request)
    this.wakeTaker?.()
    while (this.items.length >= MAX_QUEUED_REQUESTS && !this.ended) {
      await new Promise<void>(resolve => { this.wakeReader = resolve })
    }
  }

  /** Marks the queued or current request for piece `index` of `key` as cancelled. Returns false when there is none. */
  cancel (key: CID, index: number): boolean {
    const matches = (request: QueuedRequest | undefined): request is QueuedRequest =>
      request != null && request.t === 'get' && request.i === index && request.cancelled !== true && sameCid(request.key, key)
    const target = matches(this.current) ? this.current : this.items.find(matches)
    if (target == null) return false
    target.cancelled = true
    return true
  }

  /** Returns the next request, waiting for one, or undefined once the reader ended and nothing is left. */
  async take (): Promise<QueuedRequest | undefined> {
    this.current = undefined
    while (this.items.length === 0 && !this.ended) {
      await new Promise<void>(resolve => { this.wakeTaker = resolve })
    }
    this.wakeTaker = undefined
    const next = this.items.shift()
    this.current = next
    this.wakeReader?.()
    this.wakeReader = undefined
    return next
  }

  /** Tells the taker that no more requests come. */
  end (): void {
    this.ended = true
    this.wakeTaker?.()
    this.wakeReader?.()
  }
}
