/**
 * Serves SEED_PROTOCOL requests: one SeedTask per content however many peers
 * ask at once, and a stream of piece CIDs back to each of them.
 */
import type { Stream } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import { isContentCid } from '../content/ids.ts'
import { taskKeyOf } from '../content/keys.ts'
import { DfnodeError, ProtocolError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { OriginClient } from '../origin/client.ts'
import type { DfnodeLibp2p } from '../p2p/node.ts'
import type { ContentRecords } from '../store/content-records.ts'
import type { PieceStore } from '../store/piece-store.ts'
import type { ContentHasher } from '../swarm/content-hasher.ts'
import type { Discovery } from '../swarm/discovery.ts'
import { FramedStream } from '../swarm/frames.ts'
import { SEED_KEEPALIVE_MS, SEED_PROTOCOL, decodeSeedRequest } from '../swarm/wire.ts'
import { SeedTask, stripQuery } from './seed-task.ts'

export interface SeedServiceComponents {
  node: DfnodeLibp2p
  origin: OriginClient
  store: PieceStore
  records: ContentRecords
  discovery: Discovery
  /** Hasher that computes the SHA-256 of each whole content on its own thread. */
  hasher: ContentHasher
  logger: Logger
}

export interface SeedServiceInit {
  /** Piece size for new contents, in bytes. Undefined chooses it by content size (see choosePieceSize). */
  pieceSize?: number
}

/** Largest number of CIDs sent in one frame. */
const CIDS_PER_FRAME = 1024

export class SeedService {
  private readonly components: SeedServiceComponents
  private readonly init: SeedServiceInit
  private readonly tasks = new Map<string, SeedTask>()

  /** Returns the number of tasks that still fetch from an origin. */
  get running (): number {
    let count = 0
    for (const task of this.tasks.values()) if (task.state === 'running') count++
    return count
  }

  constructor (components: SeedServiceComponents, init: SeedServiceInit) {
    this.components = components
    this.init = init
  }

  async start (): Promise<void> {
    await this.components.node.handle(SEED_PROTOCOL, (stream) => { void this.serve(stream) }, { maxInboundStreams: 1024 })
  }

  async stop (): Promise<void> {
    await this.components.node.unhandle(SEED_PROTOCOL)
    for (const task of this.tasks.values()) task.abort()
  }

  private async serve (stream: Stream): Promise<void> {
    const framed = new FramedStream(stream)
    const { logger, origin } = this.components
    try {
      // Parse and check the request before any origin traffic.
      const frame = await framed.read({ signal: AbortSignal.timeout(30_000) })
      if (frame == null) throw new ProtocolError('seed stream closed before the request')
      const request = decodeSeedRequest(frame)
      const { key, expected } = await taskKeyOf(request.url, request.digest, request.filter)
      origin.checkAllowed(request.url)
      logger.info({ key: key.toString(), url: stripQuery(request.url) }, 'seed request')

      // A complete content already stored is served from its record, also when it was seeded under its URL key.
      const complete = this.completeRecord(key) ?? await this.recordByContent(key, request.url)
      if (complete != null) {
        await framed.write({ t: 'meta', key, size: complete.size, pieceSize: complete.pieceSize })
        await this.sendCids(framed, complete.pieces, 0)
        await framed.write({ t: 'done', content: complete.content })
        await framed.close()
        return
      }

      // Join the running task for this content, or start one.
      const task = this.taskFor(key, expected, request.url, request.headers)
      await this.follow(framed, task)
      await framed.close()
    } catch (err) {
      const error = err instanceof DfnodeError ? err : new ProtocolError((err as Error).message)
      logger.info({ code: error.code, err: error.message }, 'seed request failed')
      try {
        await framed.write({ t: 'error', code: error.code, message: error.message, status: (error as { status?: number }).status })
        await framed.close()
      } catch {
        framed.abort(error)
      }
    }
  }

  private completeRecord (key: CID): { size: number, pieceSize: number, pieces: CID[], content: CID } | undefined {
    const manifest = this.components.records.manifestOf(key)
    if (manifest == null) return undefined
    if (!manifest.pieces.every(cid => this.components.store.has(cid))) return undefined
    return manifest
  }

  /**
   * Finds a complete content stored under another key (a URL key) whose digest is `key`, and
   * records it under `key` too, so that a request by digest does not fetch it from the origin again.
   */
  private async recordByContent (key: CID, url: string): Promise<ReturnType<SeedService['completeRecord']>> {
    if (!isContentCid(key)) return undefined
    const { records, discovery } = this.components
    const stored = records.completeWithContent(key).find(record => this.completeRecord(record.key) != null)
    if (stored == null) return undefined
    await records.set({ key, size: stored.size, pieceSize: stored.pieceSize, pieces: [...stored.pieces], content: key, url: stripQuery(url), updatedAt: Date.now() })
    discovery.provide(key)
    return this.completeRecord(key)
  }

  private taskFor (key: CID, expected: CID | undefined, url: string, headers: Record<string, string>): SeedTask {
    const id = key.toString()
    const running = this.tasks.get(id)
    if (running != null && running.state !== 'failed') return running

    const init = { key, url, headers, pieceSize: this.init.pieceSize, ...(expected != null ? { expected } : {}) }
    const task = new SeedTask(init, this.components)
    this.tasks.set(id, task)
    void task.run().finally(() => {
      // Failures are not cached: the next request starts a new task. Finished ones live on in the records.
      if (this.tasks.get(id) === task) this.tasks.delete(id)
    })
    return task
  }

  /** Streams a task's meta and piece CIDs to one peer until the task ends. */
  private async follow (framed: FramedStream, task: SeedTask): Promise<void> {
    let sentMeta = false
    let sent = 0
    while (true) {
      // Wait for progress, or send a keepalive so the peer can tell a slow origin from a dead supernode.
      const changed = await new Promise<boolean>(resolve => {
        const timer = setTimeout(() => { unsubscribe(); resolve(false) }, SEED_KEEPALIVE_MS)
        const unsubscribe = task.subscribe(() => { clearTimeout(timer); unsubscribe(); resolve(true) })
        if (task.state !== 'running' || task.cids.length > sent || (!sentMeta && task.size != null)) {
          clearTimeout(timer)
          unsubscribe()
          resolve(true)
        }
      })
      if (!changed) {
        await framed.write({ t: 'alive' })
        continue
      }

      if (task.state === 'failed') throw task.error ?? new ProtocolError('seeding failed')
      if (!sentMeta && task.size != null && task.pieceSize != null) {
        await framed.write({ t: 'meta', key: task.key, size: task.size, pieceSize: task.pieceSize, contentType: task.contentType })
        sentMeta = true
      }
      if (task.cids.length > sent) {
        const until = task.cids.length
        await this.sendCids(framed, task.cids.slice(sent, until), sent)
        sent = until
      }
      if (task.state === 'done' && sent === task.cids.length) {
        await framed.write({ t: 'done', content: task.content })
        return
      }
    }
  }

  private async sendCids (framed: FramedStream, cids: CID[], from: number): Promise<void> {
    for (let offset = 0; offset < cids.length; offset += CIDS_PER_FRAME) {
      await framed.write({ t: 'pieces', from: from + offset, cids: cids.slice(offset, offset + CIDS_PER_FRAME) })
    }
  }
}
