/**
 * The body of the thread that computes content hashes. It reads each stored piece back from its
 * file, in order, and feeds it to a SHA-256 per session, so the main thread spends no time on the
 * content hash. It runs from its own source text (`HASH_WORKER_SOURCE`), so it uses built-in
 * modules only and nothing from the rest of dfnode.
 */
import type { Hash } from 'node:crypto'

/** Messages from the main thread. Each session's messages are handled in the order sent. */
export type HashRequest =
  | { op: 'add', session: number, path: string, offset: number, length: number }
  | { op: 'digest', session: number }
  | { op: 'drop', session: number }

/** Reply to a 'digest' request: the 32-byte SHA-256 of everything added, or why there is none. */
export type HashReply =
  | { session: number, digest: Uint8Array }
  | { session: number, error: string }

/** Bytes read from a file at a time. */
const READ_BYTES = 1024 * 1024

function hashWorkerMain (readBytes: number): void {
  const { parentPort } = process.getBuiltinModule('node:worker_threads')
  const { createHash } = process.getBuiltinModule('node:crypto')
  const { openSync, readSync, closeSync } = process.getBuiltinModule('node:fs')
  if (parentPort == null) throw new Error('the hash worker runs only as a worker thread')
  const port = parentPort

  // A session's hash, or the first error that ended it.
  const sessions = new Map<number, Hash | string>()
  const buffer = Buffer.allocUnsafe(readBytes)

  const add = (hash: Hash, path: string, offset: number, length: number): void => {
    const fd = openSync(path, 'r')
    try {
      for (let done = 0; done < length;) {
        const read = readSync(fd, buffer, 0, Math.min(buffer.byteLength, length - done), offset + done)
        if (read === 0) throw new Error(`${path} ends at offset ${offset + done}, before the ${length} bytes at offset ${offset}`)
        hash.update(buffer.subarray(0, read))
        done += read
      }
    } finally {
      closeSync(fd)
    }
  }

  port.on('message', (request: HashRequest) => {
    if (request.op === 'drop') {
      sessions.delete(request.session)
      return
    }
    const state = sessions.get(request.session) ?? createHash('sha256')
    if (request.op === 'digest') {
      sessions.delete(request.session)
      const reply: HashReply = typeof state === 'string' ? { session: request.session, error: state } : { session: request.session, digest: new Uint8Array(state.digest()) }
      port.postMessage(reply)
      return
    }
    sessions.set(request.session, state)
    if (typeof state === 'string') return
    try {
      add(state, request.path, request.offset, request.length)
    } catch (err) {
      sessions.set(request.session, `reading ${request.length} bytes at offset ${request.offset} of ${request.path}: ${(err as Error).message}`)
    }
  })
}

/** Source text of the worker, for `new Worker(HASH_WORKER_SOURCE, { eval: true })`. */
export const HASH_WORKER_SOURCE = `(${hashWorkerMain.toString()})(${READ_BYTES})`
