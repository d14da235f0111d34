/**
 * The transport interface of the piece protocol: control frames, and piece
 * bytes sent as data frames that an empty frame ends early. A libp2p stream
 * (`FramedStream`) and a direct TLS connection (`SocketChannel`) implement it.
 */

import { CHUNK_BYTES } from './wire.ts'

export interface WriteHooks {
  /** Awaited before each data frame, with its length, for an upload limit. */
  beforeChunk?: (length: number) => Promise<void>
  /** Called before each data frame. When it returns true, the bytes end early. */
  stop?: () => boolean
}

/**
 * Reader of `length` bytes of a piece from `offset`. A channel that has finished with a frame
 * once its send resolves passes `into`, one buffer for all frames, to read into.
 */
export type ReadPart = (offset: number, length: number, into?: Uint8Array) => Promise<Uint8Array>

export interface PieceChannel {
  /** Reads the next control frame; resolves undefined when the remote closed cleanly between frames. */
  read: () => Promise<Uint8Array | undefined>
  /** Writes one control frame. */
  write: (message: object) => Promise<void>
  /**
   * Writes `length` bytes as data frames of at most CHUNK_BYTES each. Each frame is read with
   * `readPart` just before it is sent, after `beforeChunk` resolves. When `stop` returns true
   * before a frame, an empty data frame ends the bytes early. Returns the bytes written.
   */
  writeParts: (length: number, readPart: ReadPart, hooks?: WriteHooks) => Promise<number>
  /**
   * Reads exactly `length` bytes sent with writeParts into one buffer, or returns undefined
   * when the sender ended them early with an empty data frame. `onChunk` gets each data
   * frame's part of the buffer as soon as it is filled.
   */
  readData: (length: number, onChunk?: (chunk: Uint8Array) => void) => Promise<Uint8Array | undefined>
  close: () => Promise<void>
  abort: (err: Error) => void
}

/**
 * Writes `length` bytes as data frames of at most CHUNK_BYTES each with `sendFrame`, the
 * loop behind every channel's writeParts. Returns the bytes written. With `into`, every frame
 * is read into that buffer, so `sendFrame` must be done with a frame when it resolves.
 */
export async function writeDataFrames (length: number, readPart: ReadPart, hooks: WriteHooks, sendFrame: (frame: Uint8Array) => Promise<void>, into?: Uint8Array): Promise<number> {
  for (let offset = 0; offset < length; offset += CHUNK_BYTES) {
    if (hooks.stop?.() === true) {
      await sendFrame(new Uint8Array(0))
      return offset
    }
    const size = Math.min(CHUNK_BYTES, length - offset)
    await hooks.beforeChunk?.(size)
    await sendFrame(await readPart(offset, size, into))
  }
  return length
}
