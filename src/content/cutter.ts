/**
 * Cuts a byte stream into pieces as the bytes arrive, hashing each piece on
 * the way. The hash of the whole content is left to the caller, which runs it
 * on the hash thread (src/swarm/content-hasher.ts).
 */
import type { CID } from 'multiformats/cid'
import { cidOfBytes } from './ids.ts'

export interface CutPiece {
  index: number
  cid: CID
  bytes: Uint8Array
}

export interface CutResult {
  /** Bytes read. */
  size: number
}

/**
 * Reads `body` and yields each complete piece in order. The generator's return
 * value is the number of bytes read. Holds at most one piece in memory.
 */
export async function * cutPieces (body: AsyncIterable<Uint8Array>, pieceSize: number, firstIndex = 0): AsyncGenerator<CutPiece, CutResult> {
  let buffer = new Uint8Array(pieceSize)
  let filled = 0
  let index = firstIndex
  let size = 0

  for await (const chunk of body) {
    let offset = 0
    size += chunk.byteLength
    while (offset < chunk.byteLength) {
      const take = Math.min(pieceSize - filled, chunk.byteLength - offset)
      buffer.set(chunk.subarray(offset, offset + take), filled)
      filled += take
      offset += take
      if (filled === pieceSize) {
        yield { index, cid: await cidOfBytes(buffer), bytes: buffer }
        index++
        buffer = new Uint8Array(pieceSize)
        filled = 0
      }
    }
  }
  if (filled > 0) {
    const last = buffer.subarray(0, filled)
    yield { index, cid: await cidOfBytes(last), bytes: last }
  }
  return { size }
}
