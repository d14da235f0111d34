/**
 * The node's engine: libp2p node, piece store, discovery, piece server and the
 * downloads in progress. The CLI, the supernode and the proxy use it through
 * `open` and `readRange`; libp2p stays behind it.
 */
import { join } from 'node:path'
import type { CID } from 'multiformats/cid'
import { taskKeyOf } from '../content/keys.ts'
import type { Config } from '../config/schema.ts'
import type { Logger } from '../log.ts'
import { OriginClient } from '../origin/client.ts'
import { createNode, dialFailureReason, hostOfAddress, nodeAddresses, toMultiaddr, type DfnodeLibp2p } from '../p2p/node.ts'
import type { PrivateKey } from '@libp2p/interface'
import { ContentRecords } from '../store/content-records.ts'
import { PieceStore } from '../store/piece-store.ts'
import { Discovery } from './discovery.ts'
import { Download, type DownloadInit, type PieceSink } from './download.ts'
import { PeerSlots } from './peer-slots.ts'
import { ContentHasher } from './content-hasher.ts'
import { PieceServer } from './piece-server.ts'
import { readRange } from './read-range.ts'
import { DirectServer } from './direct-link.ts'
import { DirectPool } from './direct-pool.ts'
import { ConfigError } from '../errors.ts'
import { RateLimiter } from './rate-limiter.ts'
import { DEFAULT_QUERY_FILTER } from '../content/url.ts'

export interface EngineInit {
  privateKey: PrivateKey
  dataDir: string
  listen: string[]
  announce?: string[]
  /** Supernode multiaddrs, dialled at start and asked to seed. */
  supernodes: string[]
  /** Origins the engine may fetch from ("host", "host:port" or "*"); undefined allows all. */
  allowOrigins?: string[]
  backSource: boolean
  /** Piece size of contents this node cuts itself. Undefined chooses it by content size. */
  pieceSize?: number
  filter?: string[]
  storeQuotaBytes?: number
  /** Upload limit in bytes per second; 0 or undefined for none. */
  uploadRate?: number
  /** Port of direct links, 0 for one the system picks; none when false or undefined. */
  dataPort?: number | false
  /**
   * Open a direct link to each peer as soon as it connects, instead of when a download first
   * requests a piece from it. Default true; a supernode, which downloads nothing from peers, passes false.
   */
  eagerLinks?: boolean
  logger: Logger
  /** Downloader tuning, see DownloadInit. */
  tuning?: Pick<DownloadInit, 'peerRequests' | 'supernodeRequests' | 'stallMs' | 'holderWaitMs' | 'seedDialDelaysMs'>
}

/** Returns the engine settings a configuration gives, for a node with `privateKey`. */
export function engineInitFromConfig (config: Config, privateKey: PrivateKey, logger: Logger): EngineInit {
  return {
    privateKey,
    dataDir: config.dataDir,
    listen: config.listen,
    announce: config.announce,
    supernodes: config.supernodes,
    backSource: config.backSource,
    pieceSize: config.pieceSize,
    filter: config.filter,
    storeQuotaBytes: config.storeQuotaBytes,
    uploadRate: config.uploadRate,
    dataPort: config.dataPort,
    logger
  }
}

/** Returns the addresses direct links listen on: the hosts of the listen multiaddrs, where peers reach the libp2p node. */
function directHosts (listen: string[]): string[] {
  const hosts = new Set<string>()
  for (const address of listen) {
    const host = hostOfAddress(toMultiaddr(address))
    if (host != null) hosts.add(host)
  }
  return hosts.size > 0 ? [...hosts] : ['0.0.0.0']
}

/** Piece requests in flight to one peer over all downloads: two downloads' worth. */
const PEER_SLOTS = 4

export interface OpenRequest {
  url: string
  headers?: Record<string, string>
  digest?: string
  filter?: string[]
  /** File for verified pieces in place of the store; used only when this call starts the download. */
  sink?: PieceSink
}

export class Engine {
  readonly node: DfnodeLibp2p
  readonly store: PieceStore
  readonly records: ContentRecords
  readonly discovery: Discovery
  readonly origin: OriginClient
  readonly pieceServer: PieceServer
  /** Server of direct links; undefined when they are off. */
  readonly direct?: DirectServer
  /** Direct links to other peers; undefined when they are off. */
  readonly links?: DirectPool
  readonly logger: Logger
  private readonly init: EngineInit
  private readonly downloads = new Map<string, Download>()
  private readonly slots = new PeerSlots(PEER_SLOTS)
  /** Hasher that computes the SHA-256 of whole contents on its own thread, for downloads and the supernode's seed tasks. */
  readonly hasher: ContentHasher

  private constructor (init: EngineInit, node: DfnodeLibp2p) {
    this.init = init
    this.node = node
    this.logger = init.logger
    this.store = new PieceStore({ dir: join(init.dataDir, 'store'), logger: init.logger, ...(init.storeQuotaBytes != null ? { quotaBytes: init.storeQuotaBytes } : {}) })
    this.records = new ContentRecords({ dir: join(init.dataDir, 'store'), logger: init.logger })
    this.discovery = new Discovery(node, init.logger)
    this.origin = new OriginClient({ logger: init.logger, ...(init.allowOrigins != null ? { allowedOrigins: init.allowOrigins } : {}) })
    this.hasher = new ContentHasher(init.logger)
    if (init.dataPort != null && init.dataPort !== false) {
      this.direct = new DirectServer({
        hosts: directHosts(init.listen),
        port: init.dataPort,
        logger: init.logger,
        onLink: (channel, peer) => { void this.pieceServer.serve(channel, peer, true) }
      })
      this.links = new DirectPool({ node, logger: init.logger, stallMs: init.tuning?.stallMs ?? 10_000 })
    }
    this.pieceServer = new PieceServer({
      node,
      store: this.store,
      records: this.records,
      logger: init.logger,
      ...(init.uploadRate != null && init.uploadRate > 0 ? { limiter: new RateLimiter(init.uploadRate) } : {}),
      ...(this.direct != null ? { direct: this.direct } : {})
    })
  }

  /** Creates the node and opens the store; dials the supernodes in the background. */
  static async create (init: EngineInit): Promise<Engine> {
    const node = await createNode({ privateKey: init.privateKey, listen: init.listen, ...(init.announce != null ? { announce: init.announce } : {}) })
    const engine = new Engine(init, node)
    try {
      await engine.direct?.start()
    } catch (err) {
      await node.stop()
      const code = (err as NodeJS.ErrnoException).code
      const reason = code === 'EADDRINUSE' ? 'the port is in use' : code === 'EACCES' ? 'permission denied' : (err as Error).message
      throw new ConfigError(`cannot listen for direct links on port ${String(init.dataPort)}: ${reason}: set another data port (--data-port, DFNODE_DATA_PORT or dataPort), 0 for one the system picks, or off`, { cause: err })
    }
    await engine.start()
    return engine
  }

  private async start (): Promise<void> {
    await this.store.start()
    await this.records.start()
    this.discovery.start()
    await this.pieceServer.start()
    if (this.init.eagerLinks !== false) this.links?.start()
    for (const address of this.init.supernodes) {
      this.node.dial((await import('@multiformats/multiaddr')).multiaddr(address), { signal: AbortSignal.timeout(10_000) })
        .catch((err: Error) => { this.logger.info({ supernode: address, err: dialFailureReason(err) }, 'cannot reach supernode yet') })
    }
  }

  get peerId (): string {
    return this.node.peerId.toString()
  }

  multiaddrs (): string[] {
    return nodeAddresses(this.node)
  }

  /** Returns the download of a content, starting it or joining the one in progress. */
  async open (request: OpenRequest): Promise<Download> {
    const filter = request.filter ?? this.init.filter ?? [...DEFAULT_QUERY_FILTER]
    const { key, expected } = await taskKeyOf(request.url, request.digest, filter)
    const id = key.toString()
    const running = this.downloads.get(id)
    if (running != null) return running

    const download = new Download({
      key,
      ...(expected != null ? { expected } : {}),
      url: request.url,
      headers: request.headers ?? {},
      ...(request.digest != null ? { digest: request.digest } : {}),
      filter,
      supernodes: this.init.supernodes,
      backSource: this.init.backSource,
      pieceSize: this.init.pieceSize,
      ...this.init.tuning,
      ...(request.sink != null ? { sink: request.sink } : {})
    }, { node: this.node, slots: this.slots, store: this.store, records: this.records, discovery: this.discovery, origin: this.origin, logger: this.logger, hasher: this.hasher, ...(this.links != null ? { links: this.links } : {}) })
    this.downloads.set(id, download)
    download.done.then(
      () => { this.forget(id, download) },
      () => { this.forget(id, download) }
    )
    download.start()
    return download
  }

  private forget (id: string, download: Download): void {
    if (this.downloads.get(id) === download) this.downloads.delete(id)
    download.release()
  }

  /** Yields bytes [start, end) of a content in order, as verified pieces arrive. Each part is valid until the next (see readRange). */
  readRange (download: Download, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    return readRange(download, this.store, start, end, signal)
  }

  /** Returns the keys of the contents stored here completely. */
  heldContents (): CID[] {
    return this.records.list().filter(record => record.content != null).map(record => record.key)
  }

  async stop (): Promise<void> {
    const { uploaded, uploadedDirect, pieces } = this.pieceServer.stats
    this.logger.info({ uploaded, uploadedDirect, pieces }, 'piece uploads')
    for (const download of this.downloads.values()) download.abort(new Error('engine stopping'))
    this.discovery.stop()
    await this.pieceServer.stop().catch(() => {})
    this.links?.stop()
    await this.direct?.stop().catch(() => {})
    await this.node.stop()
    await this.records.flush().catch(() => {})
    await this.records.stop()
    await this.store.stop()
    await this.hasher.stop()
    await this.origin.close()
  }
}
