/**
 * The piece protocol's frames on a direct TLS connection between two peers.
 * Each frame is a 4-byte big-endian length and its bytes: control frames are
 * DAG-CBOR, piece bytes go in data frames of at most CHUNK_BYTES, and an
 * empty data frame ends a piece early, as on a libp2p stream.
 */
import type { Socket } from 'node:net'
import { ProtocolError } from '../errors.ts'
import { writeDataFrames, type PieceChannel, type ReadPart, type WriteHooks } from './channel.ts'
import { CHUNK_BYTES, MAX_FRAME_BYTES, encodeFrame } from './wire.ts'

const HEADER_BYTES = 4

/** Unread bytes at which the socket stops reading until the reader catches up. */
const PAUSE_BYTES = 8 * 1024 * 1024

/** Time a closing connection gets to finish sending before it is destroyed, in ms. */
const CLOSE_GRACE_MS = 10_000

export class SocketChannel implements PieceChannel {
  readonly socket: Socket
  /** Received bytes not read yet: `chunks[0]` from `head` on, then the rest. */
  private readonly chunks: Buffer[] = []
  private head = 0
  private buffered = 0
  private ended = false
  private failure?: Error
  private wake?: () => void
  /** The buffer that the next piece sent reads its data frames into; undefined while one uses it. */
  private frameBuffer?: Buffer

  constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.buffered += chunk.byteLength
      if (this.buffered >= PAUSE_BYTES) socket.pause()
      this.notify()
    })
    socket.on('end', () => { this.ended = true; this.notify() })
    socket.on('error', (err) => { this.failure ??= err; this.notify() })
    socket.on('close', () => { this.ended = true; this.notify() })
  }

  async read (): Promise<Uint8Array | undefined> {
    if (!await this.fill(HEADER_BYTES)) {
      if (this.buffered === 0) return undefined
      throw new ProtocolError('peer closed the direct link in the middle of a frame header')
    }
    const length = this.takeLength()
    if (length > MAX_FRAME_BYTES) throw new ProtocolError(`peer sent a frame of ${length} bytes, over the limit of ${MAX_FRAME_BYTES}`)
    const out = Buffer.allocUnsafe(length)
    await this.copyInto(out, 0, length)
    return out
  }

  async write (message: object): Promise<void> {
    await this.send(encodeFrame(message))
  }

  /**
   * Reads the data frames into one buffer that the channel keeps for its next piece. send()
   * resolves only once the socket is done with a frame, so the next read may overwrite it. A
   * piece sent while another is being sent gets a buffer of its own.
   */
  async writeParts (length: number, readPart: ReadPart, hooks: WriteHooks = {}): Promise<number> {
    const into = this.frameBuffer ?? Buffer.allocUnsafe(CHUNK_BYTES)
    this.frameBuffer = undefined
    try {
      return await writeDataFrames(length, readPart, hooks, async (frame) => { await this.send(frame, frame.buffer === into.buffer) }, into)
    } finally {
      this.frameBuffer = into
    }
  }

  /** The buffer is not zeroed first: every byte of it is written before it is returned. */
  async readData (length: number, onChunk?: (chunk: Uint8Array) => void): Promise<Uint8Array | undefined> {
    const unzeroed = Buffer.allocUnsafe(length)
    const out = new Uint8Array(unzeroed.buffer, unzeroed.byteOffset, length)
    let filled = 0
    while (filled < length) {
      if (!await this.fill(HEADER_BYTES)) throw new ProtocolError('peer closed the direct link in the middle of a piece')
      const frame = this.takeLength()
      if (frame === 0) return undefined
      if (frame > length - filled) throw new RangeError(`data frame overruns the announced ${length} bytes`)
      await this.copyInto(out, filled, frame)
      onChunk?.(out.subarray(filled, filled + frame))
      filled += frame
    }
    return out
  }

  async close (): Promise<void> {
    if (this.socket.destroyed) return
    this.socket.end()
    setTimeout(() => { this.socket.destroy() }, CLOSE_GRACE_MS).unref()
  }

  abort (err: Error): void {
    this.failure ??= err
    this.socket.destroy()
    this.notify()
  }

  /**
   * Writes one frame. A control frame waits only while the socket's send buffer is full. A data
   * frame (`reused`) waits until the socket has written it, since its buffer is read into again.
   */
  private async send (payload: Uint8Array, reused = false): Promise<void> {
    if (this.failure != null) throw this.failure
    if (this.socket.destroyed || this.socket.writableEnded) throw new ProtocolError('the direct connection is closed')
    const header = Buffer.allocUnsafe(HEADER_BYTES)
    header.writeUInt32BE(payload.byteLength)
    let written: Promise<void> | undefined
    // Corked, so the two writes leave together and no other frame comes between them.
    this.socket.cork()
    this.socket.write(header)
    if (payload.byteLength > 0) {
      if (reused) {
        written = new Promise<void>((resolve, reject) => {
          this.socket.write(payload, (err?: Error | null) => {
            if (err == null) resolve()
            else reject(this.failure ?? new ProtocolError('the direct connection closed while sending', { cause: err }))
          })
        })
      } else {
        this.socket.write(payload)
      }
    }
    this.socket.uncork()
    if (written != null) {
      await written
      return
    }
    if (!this.socket.writableNeedDrain) return
    await new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.socket.off('close', closed)
        resolve()
      }
      const closed = (): void => {
        this.socket.off('drain', done)
        reject(this.failure ?? new ProtocolError('the direct connection closed while sending'))
      }
      this.socket.once('drain', done)
      this.socket.once('close', closed)
    })
  }

  /** Waits until `bytes` bytes are buffered; resolves false when the connection ended first. */
  private async fill (bytes: number): Promise<boolean> {
    while (this.buffered < bytes) {
      if (this.failure != null) throw this.failure
      if (this.ended) return false
      if (this.socket.isPaused()) this.socket.resume()
      await new Promise<void>(resolve => { this.wake = resolve })
    }
    return true
  }

  private takeLength (): number {
    const header = Buffer.allocUnsafe(HEADER_BYTES)
    this.take(header, 0, HEADER_BYTES)
    return header.readUInt32BE(0)
  }

  /** Copies the next `length` bytes into `out` at `at` as they arrive. */
  private async copyInto (out: Uint8Array, at: number, length: number): Promise<void> {
    let copied = 0
    while (copied < length) {
      if (!await this.fill(1)) throw new ProtocolError('peer closed the direct link in the middle of a frame')
      const count = Math.min(this.buffered, length - copied)
      this.take(out, at + copied, count)
      copied += count
    }
  }

  /** Moves `length` buffered bytes into `out` at `at`; `length` must not exceed `buffered`. */
  private take (out: Uint8Array, at: number, length: number): void {
    let done = 0
    while (done < length) {
      const chunk = this.chunks[0]!
      const count = Math.min(chunk.byteLength - this.head, length - done)
      out.set(chunk.subarray(this.head, this.head + count), at + done)
      done += count
      this.head += count
      if (this.head === chunk.byteLength) {
        this.chunks.shift()
        this.head = 0
      }
    }
    this.buffered -= length
    if (this.socket.isPaused() && this.buffered < PAUSE_BYTES / 2) this.socket.resume()
  }

  private notify (): void {
    const wake = this.wake
    this.wake = undefined
    wake?.()
  }
}
