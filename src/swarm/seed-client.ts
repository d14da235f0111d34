/**
 * Peer side of SEED_PROTOCOL: requests a supernode to seed a URL and reads the
 * stream of piece CIDs it sends back.
 */
import type { PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { ProtocolError, errorFromCode, type DfnodeError } from '../errors.ts'
import type { DfnodeLibp2p } from '../p2p/node.ts'
import { FramedStream } from './frames.ts'
import { SEED_IDLE_MS, SEED_PROTOCOL, decodeSeedEvent, type SeedEvent, type SeedRequest } from './wire.ts'

export interface SeedSession {
  /** Peer id of the supernode, as authenticated by the encrypted connection. */
  peer: PeerId
  /** Events until 'done' or 'error'; throws when the stream breaks. */
  events: AsyncGenerator<SeedEvent>
  abort (err: Error): void
}

/** Dials a supernode and sends a seed request. Throws when it cannot be reached. */
export async function openSeed (node: DfnodeLibp2p, address: string, request: Omit<SeedRequest, 't'>, signal: AbortSignal): Promise<SeedSession> {
  const connection = await node.dial(multiaddr(address), { signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]) })
  const stream = await connection.newStream(SEED_PROTOCOL, { signal })
  const framed = new FramedStream(stream)
  await framed.write({ t: 'seed', ...request })

  async function * events (): AsyncGenerator<SeedEvent> {
    while (true) {
      const frame = await framed.read({ signal: AbortSignal.any([signal, AbortSignal.timeout(SEED_IDLE_MS)]) })
      if (frame == null) throw new ProtocolError('supernode closed the seed stream early')
      const event = decodeSeedEvent(frame)
      yield event
      if (event.t === 'done' || event.t === 'error') {
        await framed.close()
        return
      }
    }
  }
  return { peer: connection.remotePeer, events: events(), abort: (err) => { framed.abort(err) } }
}

/** Rebuilds the error a supernode reported, so callers branch on the same classes. */
export function errorFromSeedEvent (event: Extract<SeedEvent, { t: 'error' }>): DfnodeError {
  return errorFromCode(event.code, event.message, event.status)
}
