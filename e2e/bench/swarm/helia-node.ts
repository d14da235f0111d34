/**
 * A Helia (IPFS) node for the benchmark, on TCP + Noise + Yamux with
 * Bitswap as its only block broker and a filesystem blockstore.
 *
 *   node helia-node.ts seed  --file PATH --listen MA --key FILE --store DIR
 *   node helia-node.ts fetch --cid CID --out PATH --listen MA --key FILE --store DIR [--peer MA]...
 *
 * `seed` imports the file with @helia/unixfs defaults (1 MiB raw leaves,
 * CIDv1, balanced DAG of up to 1024 links per node) and prints
 * {"event":"ready","cid":...,"multiaddrs":[...]}. `fetch` dials every
 * --peer, reads the file through Bitswap into --out and prints
 * {"event":"complete","bytes":...}. Both serve blocks until SIGTERM.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { unixfs } from '@helia/unixfs'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { FsBlockstore } from 'blockstore-fs'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import { createReadStream, createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'

const DIAL_TIMEOUT_MS = 10_000

interface NodeOptions {
  listen: string
  keyFile: string
  store: string
}

async function createNode (options: NodeOptions) {
  const privateKey = privateKeyFromProtobuf(await readFile(options.keyFile))
  const helia = withBitswap(withLibp2pLight(createHeliaLight({ blockstore: new FsBlockstore(options.store) }), {
    privateKey,
    addresses: { listen: [options.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify() }
  }))
  await helia.start()
  return helia
}

type HeliaNode = Awaited<ReturnType<typeof createNode>>

async function seed (node: HeliaNode, file: string): Promise<void> {
  const cid = await unixfs(node).addByteStream(createReadStream(file))
  const multiaddrs = node.libp2p.getMultiaddrs().map((address) => address.toString())
  process.stdout.write(JSON.stringify({ event: 'ready', cid: cid.toString(), multiaddrs }) + '\n')
}

async function fetch (node: HeliaNode, cid: CID, out: string, peers: readonly string[]): Promise<void> {
  const started = performance.now()

  // Dial every other node. A node that is not listening yet dials this one once it starts, so refused dials are expected.
  const failures: string[] = []
  await Promise.all(peers.map(async (peer) => {
    try {
      await node.libp2p.dial(multiaddr(peer), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
    } catch (err) {
      failures.push(`${peer}: ${(err as Error).message}`)
    }
  }))
  const unexpected = failures.filter((failure) => !failure.includes('ECONNREFUSED'))
  process.stderr.write(`dialed ${peers.length - failures.length} of ${peers.length} nodes at start (${failures.length - unexpected.length} not listening yet)\n`)
  for (const failure of unexpected) process.stderr.write(`dial failed: ${failure}\n`)

  let bytes = 0
  const counted = async function * (): AsyncGenerator<Uint8Array> {
    for await (const chunk of unixfs(node).cat(cid)) {
      bytes += chunk.byteLength
      yield chunk
    }
  }
  await pipeline(Readable.from(counted()), createWriteStream(out))
  process.stdout.write(JSON.stringify({ event: 'complete', bytes, ms: Math.round(performance.now() - started), connections: node.libp2p.getConnections().length }) + '\n')
}

async function main (): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      file: { type: 'string' },
      cid: { type: 'string' },
      out: { type: 'string' },
      listen: { type: 'string' },
      key: { type: 'string' },
      store: { type: 'string' },
      peer: { type: 'string', multiple: true, default: [] }
    }
  })
  const mode = positionals[0]
  if (values.listen == null || values.key == null || values.store == null) throw new Error('missing option: --listen, --key and --store are required')
  const node = await createNode({ listen: values.listen, keyFile: values.key, store: values.store })
  process.on('SIGTERM', () => {
    void node.stop().finally(() => process.exit(0))
  })

  if (mode === 'seed') {
    if (values.file == null) throw new Error('missing option: seed needs --file PATH')
    await seed(node, values.file)
  } else if (mode === 'fetch') {
    if (values.cid == null || values.out == null) throw new Error('missing option: fetch needs --cid CID and --out PATH')
    await fetch(node, CID.parse(values.cid), values.out, values.peer)
  } else {
    throw new Error(`unknown mode ${JSON.stringify(mode)}: use seed or fetch`)
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`helia-node: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
