/**
 * Client side of PIECE_PROTOCOL on one libp2p stream or direct link to one peer,
 * for any number of contents: pipelined requests,
 * responses matched in order, a stall timer per request, and cancels of
 * piece requests that another holder has served.
 */
import { createHash } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { ProtocolError, TimeoutError } from '../errors.ts'
import { MAX_PIECE_SIZE } from '../content/pieces.ts'
import { cidOfSha256, sameCid } from '../content/ids.ts'
import type { PieceChannel } from './channel.ts'
import type { Ticket } from './direct-link.ts'
import { decodePieceResponse, type PieceResponse } from './wire.ts'

type HaveResponse = Extract<PieceResponse, { t: 'have' }>
type Answer = PieceResult | HaveResponse | Ticket | undefined

/** Bytes of a piece, with the CID they hash to. */
export interface ReceivedPiece {
  bytes: Uint8Array
  /** CIDv1(raw, sha2-256) of `bytes`, hashed frame by frame as they arrived. */
  cid: CID
}

/** Result of a piece request: the piece, or why there is none. */
export type PieceResult = ReceivedPiece | 'missing' | 'busy' | 'cancelled'

interface Pending {
  kind: 'have' | 'get' | 'direct'
  index: number
  /** Content of a piece request. */
  key?: CID
  resolve: (value: Answer) => void
  reject: (err: Error) => void
  onBytes?: (bytes: number) => void
  /** Set once a cancel for this request was sent. */
  cancelled?: boolean
}

export interface PieceClientInit {
  /** A request whose response makes no progress for this long aborts the stream, in ms. */
  stallMs: number
}

export class PieceClient {
  private readonly framed: PieceChannel
  private readonly pending: Pending[] = []
  private readonly stallMs: number
  private stallTimer?: NodeJS.Timeout
  private lastProgress = Date.now()
  private failure?: Error
  private reading = false
  /** Closing flag, set by closeWhenIdle. */
  private closing = false

  constructor (channel: PieceChannel, init: PieceClientInit) {
    this.framed = channel
    this.stallMs = init.stallMs
  }

  /** Requests in flight on this stream. */
  get inflight (): number {
    return this.pending.length
  }

  /** True once the client takes no new requests. */
  get closed (): boolean {
    return this.failure != null || this.closing
  }

  /** Asks for the peer's bitfield of content `key` (and its manifest when complete). */
  async have (key: CID): Promise<HaveResponse> {
    return await this.request({ t: 'have', key }, 'have', -1) as HaveResponse
  }

  /** Asks for a ticket to a direct link; resolves undefined when the peer offers none. */
  async direct (): Promise<Ticket | undefined> {
    return await this.request({ t: 'direct' }, 'direct', -1) as Ticket | undefined
  }

  /**
   * Fetches piece `index` of content `key`. Resolves 'missing' when the peer no longer has it,
   * and 'busy' when it wants the piece fetched from others first. After
   * `cancel`, resolves 'cancelled', or the bytes if they had all arrived.
   */
  async get (key: CID, index: number, onBytes?: (bytes: number) => void): Promise<PieceResult> {
    return await this.request({ t: 'get', key, i: index }, 'get', index, onBytes, key) as PieceResult
  }

  /** Withdraws the request for piece `index` of `key`. Returns false when none is in flight. */
  cancel (key: CID, index: number): boolean {
    if (this.failure != null) return false
    const entry = this.pending.find(pending => pending.kind === 'get' && pending.index === index && pending.cancelled !== true && pending.key != null && sameCid(pending.key, key))
    if (entry == null) return false
    entry.cancelled = true
    this.framed.write({ t: 'cancel', key, i: index }).catch((err: Error) => { this.abort(err) })
    return true
  }

  /** Rejects new requests, and closes the stream once the peer has responded to those in flight. */
  closeWhenIdle (): void {
    this.closing = true
    if (this.pending.length === 0) void this.close()
  }

  /** Fails every request in flight and closes the stream. */
  abort (err: Error): void {
    if (this.failure != null) return
    this.failure = err
    clearInterval(this.stallTimer)
    for (const entry of this.pending.splice(0)) entry.reject(err)
    this.framed.abort(err)
  }

  async close (): Promise<void> {
    if (this.failure != null) return
    this.failure = new Error('piece client closed')
    clearInterval(this.stallTimer)
    for (const entry of this.pending.splice(0)) entry.reject(this.failure)
    await this.framed.close()
  }

  private async request (message: object, kind: Pending['kind'], index: number, onBytes?: (bytes: number) => void, key?: CID): Promise<Answer> {
    if (this.failure != null) throw this.failure
    if (this.closing) throw new ProtocolError('the piece stream is closing because a direct link replaced it')
    const { promise, resolve, reject } = Promise.withResolvers<Answer>()
    // close() or abort() may reject it while the write below is pending. The await at the end still receives that rejection.
    promise.catch(() => {})
    const entry: Pending = { kind, index, resolve, reject }
    if (key != null) entry.key = key
    if (onBytes != null) entry.onBytes = onBytes
    if (this.pending.length === 0) this.lastProgress = Date.now()
    this.pending.push(entry)
    this.ensureReader()
    try {
      await this.framed.write(message)
    } catch (err) {
      this.abort(err as Error)
    }
    return await promise
  }

  private ensureReader (): void {
    if (this.reading) return
    this.reading = true
    this.stallTimer = setInterval(() => {
      if (this.pending.length > 0 && Date.now() - this.lastProgress > this.stallMs) {
        this.abort(new TimeoutError(`peer sent nothing for ${this.stallMs} ms`))
      }
    }, Math.max(100, Math.floor(this.stallMs / 4)))
    this.stallTimer.unref()
    void this.readLoop()
  }

  private async readLoop (): Promise<void> {
    try {
      while (this.failure == null) {
        if (this.closing && this.pending.length === 0) {
          await this.close()
          return
        }
        const frame = await this.framed.read()
        if (frame == null) throw new ProtocolError('peer closed the piece stream')
        this.lastProgress = Date.now()
        const response = decodePieceResponse(frame)
        const entry = this.pending[0]
        if (entry == null) throw new ProtocolError('peer sent a response to no request')

        if (response.t === 'have') {
          if (entry.kind !== 'have') throw new ProtocolError('peer responded to a piece request with a bitfield')
          this.pending.shift()
          entry.resolve(response)
          continue
        }
        if (response.t === 'direct') {
          if (entry.kind !== 'direct') throw new ProtocolError('peer sent a direct-link ticket to another request')
          this.pending.shift()
          entry.resolve(response.port != null && response.id != null && response.psk != null ? { port: response.port, id: response.id, psk: response.psk } : undefined)
          continue
        }
        if (entry.kind !== 'get' || response.i !== entry.index) throw new ProtocolError(`peer sent piece ${response.i} out of order`)
        if (response.t === 'missing' || response.t === 'busy') {
          this.pending.shift()
          entry.resolve(response.t)
          continue
        }
        if (response.t === 'cancelled') {
          if (entry.cancelled !== true) throw new ProtocolError(`peer cancelled piece ${response.i}, which was not cancelled`)
          this.pending.shift()
          entry.resolve('cancelled')
          continue
        }
        if (response.n > MAX_PIECE_SIZE) throw new ProtocolError(`peer announced a piece of ${response.n} bytes`)
        // Each frame is hashed on arrival, so the piece's CID is ready with its last byte.
        const hash = createHash('sha256')
        const bytes = await this.framed.readData(response.n, (chunk) => {
          this.lastProgress = Date.now()
          hash.update(chunk)
          entry.onBytes?.(chunk.byteLength)
        })
        if (bytes == null && entry.cancelled !== true) throw new ProtocolError(`peer ended piece ${response.i} early, which was not cancelled`)
        this.pending.shift()
        entry.resolve(bytes != null ? { bytes, cid: cidOfSha256(hash.digest()) } : 'cancelled')
      }
    } catch (err) {
      this.abort(err as Error)
    }
  }
}
