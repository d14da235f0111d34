/**
 * libp2p node factory: TCP, noise, yamux, identify, ping, a private Kademlia
 * DHT and gossipsub.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { identify, type Identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import { kadDHT, passthroughMapper, type KadDHT } from '@libp2p/kad-dht'
import { ping, type Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { ConfigError } from '../errors.ts'
import { noiseCrypto } from './noise-crypto.ts'

/** Protocol id of dfnode's DHT, kept apart from the public IPFS DHT. */
export const DHT_PROTOCOL = '/dfnode/kad/1.0.0'

export type NodeServices = {
  identify: Identify
  ping: Ping
  dht: KadDHT
  pubsub: GossipSub
}

export type DfnodeLibp2p = Libp2p<NodeServices>

export interface NodeInit {
  privateKey: PrivateKey
  /** Listen multiaddrs, e.g. /ip4/0.0.0.0/tcp/0. */
  listen: string[]
  /** Extra multiaddrs to advertise. */
  announce?: string[]
}

/**
 * Creates and starts a node. The DHT runs in server mode and keeps private and
 * loopback addresses, because dfnode swarms live on LANs where the kad-dht
 * default (dropping private addresses) would hide every provider. Raises
 * ConfigError when an address of `init.listen` cannot be listened on.
 */
export async function createNode (init: NodeInit): Promise<DfnodeLibp2p> {
  try {
    return await startNode(init)
  } catch (err) {
    if ((err as Error).name !== 'UnsupportedListenAddressesError') throw err
    // libp2p names each failed address on a line of its own, followed by the listen error.
    const reasons = (err as Error).message.split('\n').map(line => line.trim()).filter(line => line.startsWith('/')).map(listenReason)
    throw new ConfigError(`cannot listen on ${reasons.join('; ')}: pass other --listen addresses, or stop the process that uses them`, { cause: err })
  }
}

/** Rewrites libp2p's line for an address it could not listen on, such as `ADDR: Error: listen EADDRINUSE: ...`. */
function listenReason (line: string): string {
  const address = line.slice(0, line.indexOf(': '))
  if (line.includes('EADDRINUSE')) return `${address}: the port is in use`
  if (line.includes('EADDRNOTAVAIL')) return `${address}: the address is not on this machine`
  if (line.includes('EACCES')) return `${address}: permission denied`
  return line.replace(': Error: ', ': ')
}

/** Creates and starts the libp2p node with dfnode's transports and services. */
async function startNode (init: NodeInit): Promise<DfnodeLibp2p> {
  const node = await createLibp2p({
    privateKey: init.privateKey,
    addresses: {
      listen: init.listen,
      announce: init.announce ?? []
    },
    transports: [tcp()],
    connectionEncrypters: [noise({ crypto: noiseCrypto })],
    streamMuxers: [yamux()],
    connectionManager: {
      maxConnections: 512,
      // libp2p 3 accepts at most 5 connections a second from one address and 10 upgrades at once.
      // Peers of a starting swarm dial the supernode together, often from one address, so a sixth got a reset.
      inboundConnectionThreshold: 100,
      maxIncomingPendingConnections: 128
    },
    // Pings share the TCP connection with bulk piece data, so on a saturated link they can wait
    // seconds behind it. Aborting the connection then would kill healthy transfers; piece streams
    // have their own stall timer and seed streams a keepalive instead.
    connectionMonitor: {
      abortConnectionOnPingFailure: false
    },
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        allowQueryWithZeroPeers: true
      }),
      pubsub: gossipsub({
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // A HAVE goes to the sender's mesh of 3 and on from there, not to every topic peer: each peer
        // then receives fewer copies, which saves CPU time in large swarms (docs/architecture.md).
        floodPublish: false,
        heartbeatInterval: 500,
        D: 3,
        Dlo: 2,
        Dhi: 6,
        Dscore: 2,
        Dout: 1,
        Dlazy: 3,
        maxInboundDataLength: 1024 * 1024,
        // The mesh delivers each message several times. Without a fast id, gossipsub checks the
        // signature of every copy before it finds the duplicate. This id is the default message id
        // (sender and sequence number), read from the raw message.
        fastMsgIdFn: fastMessageId
      })
    }
  })
  return node
}

/** Sender and sequence number of a raw gossip message, as one string. */
function fastMessageId (message: { from?: Uint8Array, seqno?: Uint8Array }): string {
  const from = message.from ?? new Uint8Array()
  const seqno = message.seqno ?? new Uint8Array()
  return `${Buffer.from(from.buffer, from.byteOffset, from.byteLength).toString('base64')}/${Buffer.from(seqno.buffer, seqno.byteOffset, seqno.byteLength).toString('base64')}`
}

/** Returns the node's listen addresses with its peer id, as strings. */
export function nodeAddresses (node: DfnodeLibp2p): string[] {
  return node.getMultiaddrs().map(address => address.toString())
}

/** Returns the IP address or DNS name of a multiaddr such as /ip4/198.18.0.2/tcp/8002, or undefined when it has none. */
export function hostOfAddress (address: Multiaddr): string | undefined {
  return address.getComponents().find(component => ['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(component.name))?.value
}

/** Parses a multiaddr string, returning the libp2p value. */
export function toMultiaddr (value: string): ReturnType<typeof multiaddr> {
  return multiaddr(value)
}

/** Returns the reason a dial failed with what to check, or libp2p's own text for other failures. */
export function dialFailureReason (err: Error): string {
  if ((err as NodeJS.ErrnoException).code === 'ECONNREFUSED' || /ECONNREFUSED/.test(err.message)) return 'connection refused: nothing listens at that address'
  // Noise names the key the remote sent first, then the one the /p2p/ part of the address expects.
  const keys = /identity key (\S+) does not match expected remote identity key (\S+)/.exec(err.message)
  if (keys != null) return `the node at that address has peer id ${keys[1] ?? '?'}, not ${keys[2] ?? '?'}: correct the /p2p/ part of the address (a supernode prints its addresses at start-up)`
  // Another protocol on the port breaks the handshake in one of these ways, depending on what it sends back.
  if (/missing newline|invalid multistream|unexpected eof|encryption failed/i.test(err.message)) {
    return `the libp2p handshake failed (${err.message}): check that the address is the libp2p port of a dfnode supernode (8002 by default)`
  }
  return err.message
}
