/**
 * Serves bitfields and verified pieces to other peers over PIECE_PROTOCOL, on
 * libp2p streams and on direct links. Requests on one stream are served in
 * order, so clients may pipeline them, and a client may cancel a piece
 * request it no longer needs.
 */
import type { CID } from 'multiformats/cid'
import { encodeManifest } from '../content/manifest.ts'
import type { Logger } from '../log.ts'
import type { ContentRecords } from '../store/content-records.ts'
import type { PieceStore } from '../store/piece-store.ts'
import type { PieceChannel } from './channel.ts'
import type { DirectServer } from './direct-link.ts'
import { FramedStream } from './frames.ts'
import { RequestQueue, type QueuedRequest } from './request-queue.ts'
import type { RateLimiter } from './rate-limiter.ts'
import type { DfnodeLibp2p } from '../p2p/node.ts'
import { PIECE_PROTOCOL, decodePieceRequest, encodeBits } from './wire.ts'

export interface PieceServerComponents {
  node: DfnodeLibp2p
  store: PieceStore
  records: ContentRecords
  logger: Logger
  /** Shared upload limit; none when undefined. */
  limiter?: RateLimiter
  /** Issues tickets for direct links; none are offered when undefined. */
  direct?: DirectServer
}

/**
 * Decides whether a piece is sent now or the requester gets 'busy' and
 * fetches it elsewhere first. Supernodes use it to hand each fresh piece to few peers.
 */
export interface UploadPolicy {
  decide: (key: CID, index: number, peer: string) => 'serve' | 'busy'
  /** Reports the end of an upload that `decide` allowed, and whether every byte was sent. */
  finished?: (key: CID, index: number, peer: string, ok: boolean) => void
}

export interface UploadStats {
  /** Piece bytes sent to other peers, cancelled pieces' sent part included. */
  uploaded: number
  /** The part of `uploaded` sent over direct links. */
  uploadedDirect: number
  /** Pieces sent whole. */
  pieces: number
  /** Piece uploads in progress. */
  active: number
}

/** Idle time after which a piece stream is closed, in ms. */
const STREAM_IDLE_MS = 120_000

export class PieceServer {
  readonly stats: UploadStats = { uploaded: 0, uploadedDirect: 0, pieces: 0, active: 0 }
  private readonly components: PieceServerComponents
  private policy?: UploadPolicy
  /** Time the last piece upload started or ended, in ms since the epoch. */
  private lastUpload = 0

  constructor (components: PieceServerComponents) {
    this.components = components
  }

  /** Returns true while a piece upload runs, or when one started or ended less than `ms` ago. */
  uploadedWithin (ms: number): boolean {
    return this.stats.active > 0 || Date.now() - this.lastUpload < ms
  }

  /** Installs the policy consulted before each piece upload. */
  setPolicy (policy: UploadPolicy): void {
    this.policy = policy
  }

  async start (): Promise<void> {
    await this.components.node.handle(PIECE_PROTOCOL, (stream, connection) => {
      stream.inactivityTimeout = STREAM_IDLE_MS
      void this.serve(new FramedStream(stream), connection.remotePeer.toString(), false)
    }, { maxInboundStreams: 256 })
  }

  async stop (): Promise<void> {
    await this.components.node.unhandle(PIECE_PROTOCOL)
  }

  /** Returns the bitfield of locally verified pieces of a content, or undefined when nothing is known. */
  bitfield (key: CID): { bits: Uint8Array, size: number, pieceSize: number } | undefined {
    const record = this.components.records.get(key)
    if (record == null) return undefined
    const bits = encodeBits(index => {
      const cid = record.pieces[index]
      return cid != null && this.components.store.has(cid)
    }, record.pieces.length)
    return { bits, size: record.size, pieceSize: record.pieceSize }
  }

  /** Serves the requests of one libp2p stream, or of a direct link when `direct` is true, from `peer` until it ends. */
  async serve (framed: PieceChannel, peer: string, direct: boolean): Promise<void> {
    const { logger } = this.components

    // The reader takes requests off the stream while a piece is sent, so a cancel reaches them in time.
    const queue = new RequestQueue()
    const reader = (async () => {
      try {
        while (true) {
          const frame = await framed.read()
          if (frame == null) break
          const request = decodePieceRequest(frame)
          if (request.t === 'cancel') queue.cancel(request.key, request.i)
          else await queue.add(request)
        }
      } finally {
        queue.end()
      }
    })()
    reader.catch(() => {})

    try {
      while (true) {
        const request = await queue.take()
        if (request == null) break
        await this.respond(framed, request, peer, direct)
      }
      await reader
      await framed.close()
    } catch (err) {
      logger.debug({ err, peer }, 'piece stream ended with an error')
      // A reader waiting for room in the queue stops too.
      queue.end()
      framed.abort(err as Error)
    }
  }

  /** Responds to one request: with a bitfield, or with a piece as a header and data frames. */
  private async respond (framed: PieceChannel, request: QueuedRequest, peer: string, direct: boolean): Promise<void> {
    const { store, records } = this.components

    if (request.t === 'direct') {
      await framed.write({ t: 'direct', ...this.components.direct?.ticket(peer) })
      return
    }

    // Bitfield and, for a complete content, its manifest.
    if (request.t === 'have') {
      const stored = this.bitfield(request.key)
      const manifest = records.manifestOf(request.key)
      await framed.write({ t: 'have', bits: stored?.bits, size: stored?.size, pieceSize: stored?.pieceSize, manifest: manifest != null ? encodeManifest(manifest) : undefined })
      return
    }

    if (request.cancelled === true) {
      await framed.write({ t: 'cancelled', i: request.i })
      return
    }
    if (this.policy?.decide(request.key, request.i, peer) === 'busy') {
      await framed.write({ t: 'busy', i: request.i })
      return
    }
    const cid = records.get(request.key)?.pieces[request.i]
    let piece
    try {
      piece = cid != null ? await store.openForUpload(cid) : undefined
    } catch (err) {
      // The policy counts this upload as started, so it learns that it failed.
      this.policy?.finished?.(request.key, request.i, peer, false)
      throw err
    }
    if (piece == null) {
      this.policy?.finished?.(request.key, request.i, peer, false)
      await framed.write({ t: 'missing', i: request.i })
      return
    }
    this.stats.active++
    this.lastUpload = Date.now()
    let sent = 0
    try {
      await framed.write({ t: 'piece', i: request.i, n: piece.size })
      const limiter = this.components.limiter
      sent = await framed.writeParts(piece.size, piece.read, {
        stop: () => request.cancelled === true,
        ...(limiter != null ? { beforeChunk: async (length: number) => { await limiter.take(length) } } : {})
      })
    } finally {
      this.stats.active--
      this.lastUpload = Date.now()
      this.stats.uploaded += sent
      if (direct) this.stats.uploadedDirect += sent
      if (sent === piece.size) this.stats.pieces++
      await piece.close()
      this.policy?.finished?.(request.key, request.i, peer, sent === piece.size)
    }
  }
}
