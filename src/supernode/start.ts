/**
 * Supernode process: bootstrap peer, DHT server and seeding service.
 */
import type { Config } from '../config/schema.ts'
import type { Logger } from '../log.ts'
import { loadIdentity } from '../p2p/identity.ts'
import { Engine, engineInitFromConfig } from '../swarm/engine.ts'
import { SeedService } from './seed-service.ts'
import { SuperSeeding } from './super-seeding.ts'
import { peerIdFromString } from '@libp2p/peer-id'

export interface SupernodeHandle {
  /** Peer id of the supernode. */
  peerId: string
  /** Multiaddrs the supernode listens on, each ending in /p2p/<peer id>. */
  multiaddrs: string[]
  engine: Engine
  stop (): Promise<void>
}

/** Time without uploads after which the supernode counts as idle, in ms. */
const QUIET_MS = 2000

/** Starts a supernode from the configuration. */
export async function startSupernode (config: Config, logger: Logger): Promise<SupernodeHandle> {
  const privateKey = await loadIdentity(config.dataDir)
  // Other supernodes are DHT bootstrap peers; a supernode never sends them seed requests.
  const engine = await Engine.create({ ...engineInitFromConfig(config, privateKey, logger), allowOrigins: config.allowOrigins, backSource: true, eagerLinks: false })
  const seeds = new SeedService({
    node: engine.node,
    origin: engine.origin,
    store: engine.store,
    records: engine.records,
    discovery: engine.discovery,
    hasher: engine.hasher,
    logger
  }, { pieceSize: config.pieceSize })
  await seeds.start()
  // Seed tasks hash each whole content on this thread, which starts now rather than in the first task.
  if (config.allowOrigins.length > 0) engine.hasher.start()

  // Each fresh piece goes to few peers first; the others fetch it from them.
  const superSeeding = new SuperSeeding({
    isConnected: peer => engine.node.getConnections(peerIdFromString(peer)).length > 0,
    isComplete: key => engine.records.manifestOf(key) != null
  })
  engine.pieceServer.setPolicy(superSeeding)

  // Piece CIDs are provided on the DHT mostly between transfers, where the walks take no CPU time from them.
  engine.discovery.setBusyCheck(() => seeds.running > 0 || engine.pieceServer.uploadedWithin(QUIET_MS))

  // Contents seeded before a restart are provided again.
  for (const key of engine.heldContents()) engine.discovery.provide(key)

  const multiaddrs = engine.multiaddrs()
  logger.info({ peerId: engine.peerId, multiaddrs, dataPort: engine.direct?.port, allowOrigins: config.allowOrigins }, 'supernode started')
  if (config.allowOrigins.length === 0) {
    logger.warn('no allowed origin: this supernode rejects every seed request and works only as bootstrap peer and DHT server; pass --allow-origin HOST for each origin it may fetch from')
  }
  return {
    peerId: engine.peerId,
    multiaddrs,
    engine,
    async stop () {
      await seeds.stop()
      await engine.stop()
      logger.info({ peerId: engine.peerId }, 'supernode stopped')
    }
  }
}
