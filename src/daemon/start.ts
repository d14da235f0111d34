/**
 * The host daemon behind `dfnode proxy`: a long-lived node with a persistent
 * identity, the host's piece store, seeding of what it holds, and the control
 * socket that `dfnode fetch` uses.
 */
import type { Config } from '../config/schema.ts'
import type { Logger } from '../log.ts'
import { loadIdentity } from '../p2p/identity.ts'
import { SwarmBlobSource } from '../swarm/blob-source.ts'
import { Engine, engineInitFromConfig } from '../swarm/engine.ts'
import { controlSocketPath } from './control-protocol.ts'
import { ControlServer } from './control-server.ts'

export interface DaemonHandle {
  engine: Engine
  blobSource: SwarmBlobSource
  socketPath: string
  stop (): Promise<void>
}

/** Starts the host daemon's node and control socket. */
export async function startDaemon (config: Config, logger: Logger): Promise<DaemonHandle> {
  const engine = await Engine.create(engineInitFromConfig(config, await loadIdentity(config.dataDir), logger))

  // A long-running daemon starts the content hash thread now rather than in its first download.
  engine.hasher.start()

  // Contents already stored on this host are provided again, so peers find it after a restart.
  for (const key of engine.heldContents()) engine.discovery.provide(key)

  const socketPath = controlSocketPath(config.dataDir)
  const control = new ControlServer(engine, logger, socketPath)
  await control.start()
  logger.info({ peerId: engine.peerId, multiaddrs: engine.multiaddrs(), dataPort: engine.direct?.port }, 'daemon started')
  return {
    engine,
    blobSource: new SwarmBlobSource(engine),
    socketPath,
    async stop () {
      await control.stop()
      await engine.stop()
    }
  }
}
