/**
 * Content hashes computed on a thread of their own. A download adds each stored piece's file
 * range in order, and requests the digest once the last one is in. The thread reads the bytes
 * back from disk (usually from the page cache, just after they were written), so it hashes what
 * peers will be served, and pieces can arrive in any order without waiting in memory. A piece
 * that this process did not verify and write itself is also checked against its CID.
 */
import { Worker } from 'node:worker_threads'
import type { FileRange } from '../store/file-ranges.ts'
import { VerificationError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { HASH_WORKER_SOURCE, type HashReply, type HashRequest, type PieceCheck } from './hash-worker.ts'

/** One content's running hash. */
export interface HashSession {
  /**
   * Appends the bytes of `range`, which must be on disk and stay unchanged until `digest`
   * resolves. With `check`, the range must also hash to the piece's own digest.
   */
  add: (range: FileRange, check?: PieceCheck) => void
  /**
   * Resolves the SHA-256 of everything added, and ends the session. Rejects with a
   * VerificationError when a checked piece does not match, and with an Error when a range could
   * not be read.
   */
  digest: () => Promise<Uint8Array>
  /** Ends the session without a digest. */
  close: () => void
}

export class ContentHasher {
  private readonly logger: Logger
  private worker: Worker | undefined
  private nextSession = 1
  private readonly pending = new Map<number, PromiseWithResolvers<Uint8Array>>()
  private stopped = false

  constructor (logger: Logger) {
    this.logger = logger
  }

  /**
   * Starts the thread now instead of with the first session. Starting it takes about 50 ms of
   * CPU time, which a long-running daemon then spends at start-up instead of in its first download.
   */
  start (): void {
    if (!this.stopped) this.worker ??= this.startWorker()
  }

  /** Starts a session. The thread starts with the first one, unless `start` started it. */
  open (): HashSession {
    const session = this.nextSession++
    let ended = false
    // The thread that contains this session's hash. A session whose thread was lost cannot go on.
    let thread: Worker | undefined
    const send = (request: HashRequest): void => {
      if (this.stopped) throw new Error('content hasher stopped')
      const worker = this.worker ?? this.startWorker()
      thread ??= worker
      if (thread !== worker) throw new Error(`hash session ${session} lost its thread`)
      worker.postMessage(request)
      // The thread keeps the process alive only while a digest is awaited.
      if (this.pending.size > 0) worker.ref()
      else worker.unref()
    }
    return {
      add: (range, check) => {
        if (ended) throw new Error(`hash session ${session} already ended`)
        send({ op: 'add', session, path: range.path, offset: range.offset, length: range.length, ...(check != null ? { check } : {}) })
      },
      digest: async () => {
        if (ended) throw new Error(`hash session ${session} already ended`)
        ended = true
        const result = Promise.withResolvers<Uint8Array>()
        this.pending.set(session, result)
        try {
          send({ op: 'digest', session })
        } catch (err) {
          this.pending.delete(session)
          throw err
        }
        return await result.promise
      },
      close: () => {
        if (ended) return
        ended = true
        if (thread != null && thread === this.worker) thread.postMessage({ op: 'drop', session } satisfies HashRequest)
      }
    }
  }

  /** Ends the thread. Digests still pending reject, and so does any session used after this call. */
  async stop (): Promise<void> {
    this.stopped = true
    const worker = this.worker
    this.worker = undefined
    this.rejectPending(new Error('content hasher stopped'))
    await worker?.terminate()
  }

  private startWorker (): Worker {
    const worker = new Worker(HASH_WORKER_SOURCE, { eval: true, name: 'dfnode content hash' })
    worker.unref()
    worker.on('message', (reply: HashReply) => {
      const waiter = this.pending.get(reply.session)
      this.pending.delete(reply.session)
      if (this.pending.size === 0) worker.unref()
      if (waiter == null) return
      if ('digest' in reply) waiter.resolve(reply.digest)
      else if (reply.failure.mismatch != null) waiter.reject(new VerificationError(reply.failure.message))
      else waiter.reject(new Error(reply.failure.message))
    })
    // A thread that fails loses its sessions: their digests reject, and the next session starts a new thread.
    const lost = (err: Error): void => {
      if (this.worker !== worker) return
      this.worker = undefined
      this.logger.warn({ err: err.message, digests: this.pending.size }, 'content hash thread failed')
      this.rejectPending(err)
    }
    worker.on('error', lost)
    worker.on('exit', code => {
      lost(new Error(`content hash thread exited with code ${code}`))
    })
    this.worker = worker
    return worker
  }

  private rejectPending (err: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(err)
    this.pending.clear()
  }
}
