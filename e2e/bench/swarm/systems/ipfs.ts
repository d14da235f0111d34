/**
 * IPFS baseline with Helia: a seeding node on the origin host imports the
 * file, every peer runs helia-node.ts fetch and dials the seeder and every
 * other peer, so Bitswap runs over a full mesh. Identities are generated here so
 * each peer gets the others' multiaddrs before any of them starts.
 */
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Host } from '../testbed.ts'
import type { BenchSystem } from './system.ts'

const HELIA_PORT = 4001
const SEED_READY_MS = 300_000

interface Identity {
  keyFile: string
  multiaddr: string
}

async function createIdentity (dir: string, host: Host): Promise<Identity> {
  const key = await generateKeyPair('Ed25519')
  const keyFile = join(dir, `${host.name}.key`)
  await writeFile(keyFile, privateKeyToProtobuf(key), { mode: 0o600 })
  return { keyFile, multiaddr: `/ip4/${host.address}/tcp/${HELIA_PORT}/p2p/${peerIdFromPrivateKey(key).toString()}` }
}

export const ipfsSystem: BenchSystem = {
  id: 'ipfs',
  title: 'IPFS (Helia bitswap)',

  async checkAvailable () {
    try {
      await Promise.all([import('helia'), import('@helia/libp2p'), import('@helia/bitswap'), import('@helia/unixfs'), import('blockstore-fs')])
      return undefined
    } catch (err) {
      return `Helia packages cannot be loaded (${(err as Error).message}); they need helia, @helia/libp2p, @helia/bitswap, @helia/unixfs and blockstore-fs installed as devDependencies`
    }
  },

  async setUp (context) {
    const script = join(import.meta.dirname, '..', 'helia-node.ts')
    const keyDir = join(context.runDir, 'keys')
    await mkdir(keyDir, { recursive: true })
    const origin = context.origin.host

    // 1. Identities for the seeder and every peer.
    const seederIdentity = await createIdentity(keyDir, origin)
    const peerIdentities = new Map<string, Identity>()
    for (const host of context.peers) peerIdentities.set(host.name, await createIdentity(keyDir, host))

    // 2. The seeder imports the file before the start and prints its root CID.
    const seederStore = join(context.runDir, `${origin.name}-blocks`)
    const seeder = context.createProcess({
      label: `${origin.name} helia seeder`,
      host: origin,
      command: context.nodeBinary,
      args: [script, 'seed', '--file', context.file.path, '--listen', `/ip4/${origin.address}/tcp/${HELIA_PORT}`, '--key', seederIdentity.keyFile, '--store', seederStore],
      cwd: context.projectRoot
    })
    seeder.start()
    const ready = await seeder.waitForLine((line) => line.includes('"event":"ready"'), SEED_READY_MS)
    const { cid } = JSON.parse(ready.line) as { cid: string }

    return {
      async launchPeer (host) {
        const identity = peerIdentities.get(host.name)
        if (identity == null) throw new Error(`no identity for ${host.name}`)
        const outputDir = join(context.runDir, host.name)
        await mkdir(outputDir, { recursive: true })
        const outputPath = join(outputDir, context.file.name)
        const others = [seederIdentity.multiaddr, ...[...peerIdentities.entries()].filter(([name]) => name !== host.name).map(([, other]) => other.multiaddr)]
        const process = context.createProcess({
          label: `${host.name} helia fetch`,
          host,
          command: context.nodeBinary,
          args: [script, 'fetch', '--cid', cid, '--out', outputPath, '--listen', `/ip4/${host.address}/tcp/${HELIA_PORT}`, '--key', identity.keyFile, '--store', join(context.runDir, `${host.name}-blocks`), ...others.flatMap((address) => ['--peer', address])],
          cwd: context.projectRoot
        })
        return { process, outputPath, completion: (line) => line.includes('"event":"complete"') }
      }
    }
  }
}
