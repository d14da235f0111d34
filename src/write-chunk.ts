/**
 * Writing a chunk whose buffer the writer reuses: the wait ends once the
 * stream is done with the bytes, not when its buffer has room.
 */

/** The part of a Writable or an http.ServerResponse that writeChunk uses. */
interface ChunkSink {
  write: (chunk: Uint8Array, callback: (err?: Error | null) => void) => boolean
}

/**
 * Writes `chunk` and resolves once the stream has passed it on, so the caller may then
 * overwrite it. Rejects with the stream's error, or with the reason of `signal` when it aborts
 * first: a client that stops reading never completes a write.
 */
export async function writeChunk (sink: ChunkSink, chunk: Uint8Array, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted()
  const { promise, resolve, reject } = Promise.withResolvers<void>()
  const aborted = (): void => { reject(signal?.reason) }
  signal?.addEventListener('abort', aborted, { once: true })
  try {
    sink.write(chunk, (err) => {
      if (err == null) resolve()
      else reject(err)
    })
    await promise
  } finally {
    signal?.removeEventListener('abort', aborted)
  }
}
