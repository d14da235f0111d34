/** Random test files and their SHA-256 digests. */
import { createHash, randomFillSync } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open } from 'node:fs/promises'

const CHUNK_BYTES = 4 << 20

/** Writes `size` random bytes to `path` and returns their SHA-256 as hex. */
export async function writeRandomFile (path: string, size: number): Promise<string> {
  const hash = createHash('sha256')
  const handle = await open(path, 'w')
  try {
    const buffer = Buffer.allocUnsafe(CHUNK_BYTES)
    for (let written = 0; written < size;) {
      const chunk = buffer.subarray(0, Math.min(CHUNK_BYTES, size - written))
      randomFillSync(chunk)
      hash.update(chunk)
      await handle.write(chunk)
      written += chunk.length
    }
  } finally {
    await handle.close()
  }
  return hash.digest('hex')
}

/** Returns the SHA-256 of the file at `path` as hex. */
export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES })) hash.update(chunk as Buffer)
  return hash.digest('hex')
}
