/**
 * Framed reading and writing on a libp2p stream: DAG-CBOR control frames and
 * raw data frames, each length-prefixed.
 */
import type { AbortOptions, Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import { writeDataFrames, type PieceChannel, type ReadPart, type WriteHooks } from './channel.ts'
import { MAX_FRAME_BYTES, encodeFrame } from './wire.ts'

/** Read buffer allowed per stream: pipelined pieces are bounded by the callers to well below it. */
const MAX_BUFFER_BYTES = 96 * 1024 * 1024

export class FramedStream implements PieceChannel {
  readonly stream: Stream
  private readonly lp: LengthPrefixedStream<Stream>

  constructor (stream: Stream) {
    this.stream = stream
    this.lp = lpStream(stream, { maxDataLength: MAX_FRAME_BYTES, maxBufferSize: MAX_BUFFER_BYTES })
  }

  /** Reads the next frame; resolves undefined when the remote closed cleanly between frames. */
  async read (options?: AbortOptions): Promise<Uint8Array | undefined> {
    try {
      const list = await this.lp.read(options)
      return list.subarray()
    } catch (err) {
      if ((err as Error).name === 'UnexpectedEOFError' && this.stream.readBufferLength === 0) return undefined
      throw err
    }
  }

  /** Writes one control frame. */
  async write (message: object, options?: AbortOptions): Promise<void> {
    await this.lp.write(encodeFrame(message), options)
  }

  /** Writes bytes as data frames of at most CHUNK_BYTES each, each after `beforeChunk` resolves. */
  async writeData (bytes: Uint8Array, options?: AbortOptions, beforeChunk?: (length: number) => Promise<void>): Promise<void> {
    await this.writeParts(bytes.byteLength, async (offset, length) => bytes.subarray(offset, offset + length), { ...(beforeChunk != null ? { beforeChunk } : {}) }, options)
  }

  /**
   * Writes `length` bytes as data frames of at most CHUNK_BYTES each. Each frame is read with
   * `readPart` just before it is sent, after `beforeChunk` resolves. When `stop` returns true
   * before a frame, an empty data frame ends the bytes early. Returns the bytes written.
   */
  async writeParts (length: number, readPart: ReadPart, hooks: WriteHooks = {}, options?: AbortOptions): Promise<number> {
    return await writeDataFrames(length, readPart, hooks, async (frame) => { await this.lp.write(frame, options) })
  }

  /**
   * Reads exactly `length` bytes sent with writeData or writeParts into one buffer, or returns
   * undefined when the sender ended them early with an empty data frame. The buffer is not
   * zeroed first: every byte of it is written before it is returned, and it is dropped otherwise.
   */
  async readData (length: number, onChunk?: (chunk: Uint8Array) => void, options?: AbortOptions): Promise<Uint8Array | undefined> {
    const unzeroed = Buffer.allocUnsafe(length)
    const out = new Uint8Array(unzeroed.buffer, unzeroed.byteOffset, length)
    let filled = 0
    while (filled < length) {
      const list = await this.lp.read(options)
      if (list.byteLength === 0) return undefined
      if (list.byteLength > length - filled) throw new RangeError(`data frame overruns the announced ${length} bytes`)
      let at = filled
      for (const part of list) {
        out.set(part, at)
        at += part.byteLength
      }
      onChunk?.(out.subarray(filled, filled + list.byteLength))
      filled += list.byteLength
    }
    return out
  }

  async close (): Promise<void> {
    try {
      await this.stream.close()
    } catch {
      this.stream.abort(new Error('close failed'))
    }
  }

  abort (err: Error): void {
    this.stream.abort(err)
  }
}
