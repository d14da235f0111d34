/**
 * Reading a small body into memory, with a size limit.
 */
import { OriginResponseError } from '../errors.ts'

/**
 * Reads a body into one Buffer. Throws OriginResponseError as soon as the body
 * exceeds `limit` bytes, and leaving the loop then closes the body.
 */
export async function readAll (body: AsyncIterable<Uint8Array>, limit: number): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  let length = 0

  for await (const chunk of body) {
    length += chunk.byteLength
    if (length > limit) {
      throw new OriginResponseError(`response body exceeds the limit of ${limit} bytes: it is too large to read into memory, so stream it instead`)
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, length)
}
