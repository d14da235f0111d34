/**
 * A piece opened for sending, from memory or from a range of a file on disk.
 */
import type { FileHandle } from 'node:fs/promises'
import { VerificationError } from '../errors.ts'

/** A piece opened for sending: its size and its bytes by range. */
export interface PieceReader {
  readonly size: number
  /**
   * Reads `length` bytes from `offset`. The range must lie within the piece. A reader of a file
   * reads into `into` when it is given and has room for `length` bytes, and returns a view of it.
   */
  read: (offset: number, length: number, into?: Uint8Array) => Promise<Uint8Array>
  /** Releases the file and the pin. Calling it again does nothing. */
  close: () => Promise<void>
}

/** Serves a piece held in memory. */
export function memoryReader (bytes: Uint8Array, release: () => void): PieceReader {
  let open = true
  return {
    size: bytes.byteLength,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
    close: async () => {
      if (!open) return
      open = false
      release()
    }
  }
}

/** Reads `size` bytes of a file from `start` on. Closing the reader closes the file. */
export function fileReader (handle: FileHandle, size: number, release: () => void, start = 0): PieceReader {
  let open = true
  return {
    size,
    read: async (offset, length, into) => {
      const buffer = into != null && into.byteLength >= length ? into : Buffer.allocUnsafe(length)
      let filled = 0
      while (filled < length) {
        const { bytesRead } = await handle.read(buffer, filled, length - filled, start + offset + filled)
        if (bytesRead === 0) throw new VerificationError(`piece file ended at ${offset + filled} of ${size} bytes while it was sent`)
        filled += bytesRead
      }
      return new Uint8Array(buffer.buffer, buffer.byteOffset, length)
    },
    close: async () => {
      if (!open) return
      open = false
      try {
        await handle.close()
      } finally {
        release()
      }
    }
  }
}
