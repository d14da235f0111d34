/**
 * The body of the thread that computes content hashes. It reads each stored piece back from its
 * file, in order, and feeds it to a SHA-256 per session, so the main thread spends no time on the
 * content hash. It runs from its own source text (`HASH_WORKER_SOURCE`), so it uses built-in
 * modules only and nothing from the rest of dfnode.
 */
import type { Hash } from 'node:crypto'

/** Messages from the main thread. Each session's messages are handled in the order sent. */
export type HashRequest =
  | { op: 'add', session: number, path: string, offset: number, length: number, check?: PieceCheck }
  | { op: 'digest', session: number }
  | { op: 'drop', session: number }

/** A piece whose bytes on disk this process did not verify: they must hash to `sha256`. */
export interface PieceCheck {
  index: number
  sha256: Uint8Array
}

/** Why a session has no digest: a range that could not be read, or a piece that failed its check. */
export interface HashFailure {
  message: string
  /** Index of the piece that failed its check; absent for a read error. */
  mismatch?: number
}

/** Reply to a 'digest' request: the 32-byte SHA-256 of everything added, or why there is none. */
export type HashReply =
  | { session: number, digest: Uint8Array }
  | { session: number, failure: HashFailure }

/** Bytes read from a file at a time. */
const READ_BYTES = 1024 * 1024

function hashWorkerMain (readBytes: number): void {
  const { parentPort } = process.getBuiltinModule('node:worker_threads')
  const { createHash } = process.getBuiltinModule('node:crypto')
  const { openSync, readSync, closeSync } = process.getBuiltinModule('node:fs')
  if (parentPort == null) throw new Error('the hash worker runs only as a worker thread')
  const port = parentPort

  // A session's hash, or the first failure that ended it.
  const sessions = new Map<number, Hash | HashFailure>()
  const buffer = Buffer.allocUnsafe(readBytes)

  /** Feeds a range to the content hash, and to a piece hash when it is checked; returns a failure or undefined. */
  const add = (hash: Hash, request: Extract<HashRequest, { op: 'add' }>): HashFailure | undefined => {
    const { path, offset, length, check } = request
    const piece = check != null ? createHash('sha256') : undefined
    const fd = openSync(path, 'r')
    try {
      for (let done = 0; done < length;) {
        const read = readSync(fd, buffer, 0, Math.min(buffer.byteLength, length - done), offset + done)
        if (read === 0) return { message: `${path} ends at offset ${offset + done}, before the ${length} bytes at offset ${offset}` }
        hash.update(buffer.subarray(0, read))
        piece?.update(buffer.subarray(0, read))
        done += read
      }
    } finally {
      closeSync(fd)
    }
    if (piece == null || check == null || Buffer.from(check.sha256).equals(piece.digest())) return undefined
    return { message: `piece ${check.index} at offset ${offset} of ${path} does not match its CID`, mismatch: check.index }
  }

  port.on('message', (request: HashRequest) => {
    if (request.op === 'drop') {
      sessions.delete(request.session)
      return
    }
    const state = sessions.get(request.session) ?? createHash('sha256')
    if (request.op === 'digest') {
      sessions.delete(request.session)
      const reply: HashReply = 'message' in state ? { session: request.session, failure: state } : { session: request.session, digest: new Uint8Array(state.digest()) }
      port.postMessage(reply)
      return
    }
    sessions.set(request.session, state)
    if ('message' in state) return
    try {
      const failure = add(state, request)
      if (failure != null) sessions.set(request.session, failure)
    } catch (err) {
      sessions.set(request.session, { message: `failed to read ${request.length} bytes at offset ${request.offset} of ${request.path}: ${(err as Error).message}` })
    }
  })
}

/** Source text of the worker, for `new Worker(HASH_WORKER_SOURCE, { eval: true })`. */
export const HASH_WORKER_SOURCE = `(${hashWorkerMain.toString()})(${READ_BYTES})`
