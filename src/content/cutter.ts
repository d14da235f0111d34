/**
 * Cuts a byte stream into pieces as the bytes arrive, hashing each piece and
 * the whole content on the way.
 */
import { createHash } from 'node:crypto'
import type { CID } from 'multiformats/cid'
import { cidOfBytes, cidOfSha256 } from './ids.ts'

export interface CutPiece {
  index: number
  cid: CID
  bytes: Uint8Array
}

export interface CutResult {
  /** CID of the whole content. */
  content: CID
  /** Bytes read. */
  size: number
}

/**
 * Reads `body` and yields each complete piece in order. The generator's return
 * value is the whole-content CID and size. Holds at most one piece in memory.
 */
export async function * cutPieces (body: AsyncIterable<Uint8Array>, pieceSize: number, firstIndex = 0): AsyncGenerator<CutPiece, CutResult> {
  const whole = createHash('sha256')
  let buffer = new Uint8Array(pieceSize)
  let filled = 0
  let index = firstIndex
  let size = 0

  for await (const chunk of body) {
    let offset = 0
    whole.update(chunk)
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
  return { content: cidOfSha256(whole.digest()), size }
}
