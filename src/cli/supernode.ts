/**
 * `dfnode supernode`: runs a supernode until SIGINT or SIGTERM.
 */
import { ExitCode } from '../errors.ts'
import type { startSupernode } from '../supernode/start.ts'
import { listOption, stringOption, type Command, type Invocation } from './command.ts'
import { loadCommandConfig, runWithLogger } from './setup.ts'
import { onTermination } from './signals.ts'

/** Builds the command around a start function, by default startSupernode, imported only when the command runs. */
export function createSupernodeCommand (start?: typeof startSupernode): Command {
  return {
    name: 'supernode',
    description: [
      'Run a supernode: bootstrap peer and DHT server that fetches each content from the origin once and seeds it to the swarm.',
      'Prints each listen multiaddr (with /p2p/<peer id>) on its own stdout line once started; stops cleanly on SIGINT or SIGTERM.'
    ],
    options: [
      { name: 'listen', type: 'string', description: 'Multiaddr to listen on; repeatable (default: /ip4/0.0.0.0/tcp/8002)' },
      { name: 'announce', type: 'string', description: 'Extra multiaddr to advertise to peers; repeatable (default: none)' },
      { name: 'allow-origin', type: 'string', description: 'Host (host or host:port, * for any) the supernode may fetch from; repeatable (default: none)' },
      { name: 'piece-size', type: 'string', description: 'Piece size of every content: bytes or with a unit, a power of two from 64KiB to 64MiB. auto chooses 4MiB, and 2MiB or 1MiB for contents under 64MiB (default: auto)' },
      { name: 'store-quota', type: 'string', description: 'Size limit of the piece store: bytes or with a unit such as 500GB or 1TiB (default: 20GiB)' },
      { name: 'upload-rate', type: 'string', description: 'Upload limit for pieces sent to other peers: bytes per second or a size such as 10MiB (default: 0, no limit)' },
      { name: 'data-port', type: 'string', description: 'TCP port of direct links, which carry pieces over TLS beside libp2p: 1 to 65535, 0 for one the system picks, off for none (default: 0)' }
    ],
    examples: [
      'supernode --allow-origin registry.example.com --listen /ip4/0.0.0.0/tcp/8002'
    ],
    run: async invocation => await runSupernode(invocation, start)
  }
}

export const supernodeCommand = createSupernodeCommand()

async function runSupernode (invocation: Invocation, startOverride: typeof startSupernode | undefined): Promise<number> {
  const { options, io } = invocation

  const config = await loadCommandConfig(invocation, 'supernode', {
    listen: listOption(options, 'listen'),
    announce: listOption(options, 'announce'),
    allowOrigins: listOption(options, 'allow-origin'),
    pieceSize: stringOption(options, 'piece-size'),
    storeQuotaBytes: stringOption(options, 'store-quota'),
    uploadRate: stringOption(options, 'upload-rate'),
    dataPort: stringOption(options, 'data-port')
  })

  const start = startOverride ?? (await import('../supernode/start.ts')).startSupernode
  return await runWithLogger(config, 'supernode', async logger => {
    // 1. Listen for termination first, so that a signal during start-up stops the supernode once it is up.
    const stopRequested = Promise.withResolvers<NodeJS.Signals>()
    const removeHandlers = onTermination(['SIGINT', 'SIGTERM'], signal => stopRequested.resolve(signal))

    try {
      // 2. Start and print the addresses other nodes are configured with.
      const handle = await start(config, logger)
      for (const address of handle.multiaddrs) io.stdout.write(`${address}\n`)

      // 3. Run until a signal, then stop.
      const signal = await stopRequested.promise
      logger.info({ signal }, 'stopping supernode')
      await handle.stop()
      return ExitCode.ok
    } finally {
      removeHandlers()
    }
  })
}
