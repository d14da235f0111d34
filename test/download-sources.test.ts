/**
 * Where a download looks for its bytes. A node with no connection goes to the origin
 * at once, since no holder can turn up.
 *
 * How a download distinguishes supernodes from other holders. A supernode that the
 * download first hears of through gossip, before the response to its seed request,
 * must still count as the supernode: the picker leaves it the pieces no peer
 * has, and its bytes are reported as the supernode's.
 *
 * The supernode, the libp2p node, the store and the origin are real. Gossip is
 * scripted: only a scripted discovery reports the supernode as a holder before
 * the seed response on every run, which real gossip does only now and then.
 */
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import type { CID } from 'multiformats/cid'
import { cidOfBytes, cidToDigest, digestToCid } from '../src/content/ids.ts'
import { taskKeyOf } from '../src/content/keys.ts'
import { silentLogger, type Logger } from '../src/log.ts'
import { OriginClient } from '../src/origin/client.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { createNode, type DfnodeLibp2p } from '../src/p2p/node.ts'
import { ContentRecords } from '../src/store/content-records.ts'
import { PieceStore } from '../src/store/piece-store.ts'
import { ContentHasher } from '../src/swarm/content-hasher.ts'
import { Discovery, type HaveListener } from '../src/swarm/discovery.ts'
import { Download, type PieceSink } from '../src/swarm/download.ts'
import { Engine } from '../src/swarm/engine.ts'
import { readRange } from '../src/swarm/read-range.ts'
import { DfnodeProcess, startSupernodeProcess } from './helpers/dfnode-process.ts'
import { TestOrigin } from './helpers/origin-server.ts'

const MiB = 1024 * 1024

/** Inverts one byte of a file in place, keeping its size. */
async function flipByte (path: string): Promise<void> {
  const bytes = await readFile(path)
  bytes[100] = bytes[100]! ^ 0xff
  await writeFile(path, bytes)
}

/** Discovery that reports holders of every piece as soon as a download watches the content. */
function gossipFirst (holder: PeerId | PeerId[], pieces: number): Discovery {
  const scripted = {
    watch: (_key: CID, listener: HaveListener) => {
      for (const peer of [holder].flat()) listener(peer, Array.from({ length: pieces }, (_, index) => index))
      return () => {}
    },
    announce: () => {},
    provide: () => {},
    findProviders: async function * () {}
  }
  return scripted as unknown as Discovery
}

/** Returns a logger that keeps each line at `level` or above, parsed, in `lines`. */
function recordingLogger (lines: Array<Record<string, unknown>>, level: pino.Level = 'info'): Logger {
  return pino({ level }, { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>) } })
}

describe('download sources', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  const stops: Array<() => Promise<void>> = []
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-sources-'))
    base = await origin.start()
  })

  after(async () => {
    for (const stop of stops.reverse()) await stop()
    await Promise.all(processes.map(async child => await child.stop()))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  /** Starts a peer's libp2p node, store, records and origin client, and stops them after the tests. */
  const peerParts = async (quotaBytes?: number): Promise<{ node: DfnodeLibp2p, store: PieceStore, records: ContentRecords, origin: OriginClient, logger: Logger, hasher: ContentHasher }> => {
    const logger = silentLogger()
    const node: DfnodeLibp2p = await createNode({ privateKey: await ephemeralIdentity(), listen: ['/ip4/127.0.0.1/tcp/0'] })
    const storeDir = await mkdtemp(join(dir, 'peer-'))
    const store = new PieceStore({ dir: storeDir, logger, ...(quotaBytes != null ? { quotaBytes } : {}) })
    const records = new ContentRecords({ dir: storeDir, logger })
    const originClient = new OriginClient({ logger })
    const hasher = new ContentHasher(logger)
    await store.start()
    await records.start()
    stops.push(async () => {
      await node.stop()
      await records.stop()
      await store.stop()
      await hasher.stop()
      await originClient.close()
    })
    return { node, store, records, origin: originClient, logger, hasher }
  }

  const startDownload = async (url: string, supernode: string, holder: PeerId, pieces: number): Promise<Download> => {
    const parts = await peerParts()
    const { key } = await taskKeyOf(url)
    const download = new Download({ key, url, headers: {}, filter: [], supernodes: [supernode], backSource: false, pieceSize: 4 * MiB }, {
      ...parts, discovery: gossipFirst(holder, pieces)
    })
    download.start()
    await download.done
    return download
  }

  it('isolated node skips holder wait', { timeout: 60_000 }, async () => {
    const body = randomBytes(2 * MiB)
    origin.files.set('/alone.bin', { body })
    const parts = await peerParts()
    const url = `${base}/alone.bin`
    const { key } = await taskKeyOf(url)
    // A wait of 10 minutes: the download completes within the test's minute only if it skips the wait.
    const download = new Download({ key, url, headers: {}, filter: [], supernodes: [], backSource: true, pieceSize: MiB, holderWaitMs: 600_000 }, {
      ...parts, discovery: new Discovery(parts.node, parts.logger)
    })
    download.start()
    await download.done
    assert.deepEqual(download.stats, { fromSupernode: 0, fromPeers: 0, fromOrigin: body.byteLength, fromLocal: 0 })
  })

  it('flags a supernode gossip found first', async () => {
    const body = randomBytes(10 * MiB)
    origin.files.set('/gossip-first.bin', { body })
    const supernode = await startSupernodeProcess(join(dir, 'supernode'), '127.0.0.1', ['--piece-size', '4MiB'])
    processes.push(supernode.process)
    const peerId = peerIdFromString(supernode.address.split('/p2p/')[1] ?? '')

    // Without /p2p/<id>, as a host from /etc/dragonfly.conf: the seed response identifies the supernode.
    const withoutId = supernode.address.split('/p2p/')[0] ?? ''
    const first = await startDownload(`${base}/gossip-first.bin`, withoutId, peerId, 3)
    assert.deepEqual(first.stats, { fromSupernode: body.byteLength, fromPeers: 0, fromOrigin: 0, fromLocal: 0 })

    // With /p2p/<id>: the configured address identifies it.
    const second = await startDownload(`${base}/gossip-first.bin`, supernode.address, peerId, 3)
    assert.deepEqual(second.stats, { fromSupernode: body.byteLength, fromPeers: 0, fromOrigin: 0, fromLocal: 0 })
    assert.equal(origin.served.get('/gossip-first.bin'), body.byteLength)
  })

  it('ignores a holder of another piece size', async () => {
    const body = randomBytes(6 * MiB)
    origin.files.set('/other-size.bin', { body })
    const url = `${base}/other-size.bin`
    const { key } = await taskKeyOf(url)
    // The holder cut the content in 1 MiB pieces, the supernode of this download cuts 4 MiB pieces.
    const holder = await startSupernodeProcess(join(dir, 'other-size-holder'), '127.0.0.1', ['--piece-size', '1MiB'])
    processes.push(holder.process)
    // The supernode sends slowly, so the end game would ask the holder for copies if it could.
    const supernode = await startSupernodeProcess(join(dir, 'other-size-supernode'), '127.0.0.1', ['--piece-size', '4MiB', '--upload-rate', '1MiB'])
    processes.push(supernode.process)
    const holderId = peerIdFromString(holder.address.split('/p2p/')[1] ?? '')
    // A download through the holder makes it fetch and cut the content.
    const warm = new Download({ key, url, headers: {}, filter: [], supernodes: [holder.address], backSource: false }, { ...await peerParts(), discovery: gossipFirst([], 0) })
    warm.start()
    await warm.done

    // The holder turns up as a DHT provider once the download has the supernode's layout.
    const lines: Array<Record<string, unknown>> = []
    const parts = await peerParts()
    let download: Download | undefined
    const discovery = {
      watch: () => () => {},
      announce: () => {},
      provide: () => {},
      findProviders: async function * () {
        for (let i = 0; i < 250 && download?.layout == null; i++) await sleep(20)
        yield { id: holderId, multiaddrs: [multiaddr(holder.address.split('/p2p/')[0] ?? '')] }
      }
    } as unknown as Discovery
    download = new Download({ key, url, headers: {}, filter: [], supernodes: [supernode.address], backSource: false }, { ...parts, logger: recordingLogger(lines, 'trace'), discovery })
    download.start()
    await download.done

    assert.equal(download.layout?.pieceSize, 4 * MiB)
    assert.deepEqual(download.stats, { fromSupernode: body.byteLength, fromPeers: 0, fromOrigin: 0, fromLocal: 0 })
    for (let i = 0; i < 50 && !lines.some(line => line.msg === 'ignored the bitfield of a holder with another piece size'); i++) await sleep(20)
    assert.ok(lines.some(line => line.msg === 'ignored the bitfield of a holder with another piece size' && line.peer === holderId.toString()), 'the holder was asked and its bitfield ignored')
    assert.equal(lines.filter(line => line.msg === 'piece requested' && line.peer === holderId.toString()).length, 0, 'no piece was requested from the holder')
  })

  /**
   * Puts a random file of `pieces` 4 MiB pieces on the origin, with a supernode of its own and a
   * peer's parts. `begin` starts a download of it into the peer's store.
   */
  const seeded = async (name: string, pieces: number): Promise<{ body: Buffer, supernode: string, holder: PeerId, parts: Awaited<ReturnType<typeof peerParts>>, url: string, key: CID, begin: () => Download }> => {
    const body = randomBytes(pieces * 4 * MiB)
    origin.files.set(`/${name}.bin`, { body })
    // The tests count in 4 MiB pieces, which a content this small gets only when configured.
    const supernode = await startSupernodeProcess(join(dir, `${name}-supernode`), '127.0.0.1', ['--piece-size', '4MiB'])
    processes.push(supernode.process)
    const holder = peerIdFromString(supernode.address.split('/p2p/')[1] ?? '')
    const url = `${base}/${name}.bin`
    const { key } = await taskKeyOf(url)
    const parts = await peerParts()
    const begin = (): Download => {
      const download = new Download({ key, url, headers: {}, filter: [], supernodes: [supernode.address], backSource: false, pieceSize: 4 * MiB }, {
        ...parts, discovery: gossipFirst(holder, pieces)
      })
      download.start()
      return download
    }
    return { body, supernode: supernode.address, holder, parts, url, key, begin }
  }

  it('catches a corrupt stored piece', async () => {
    const { body, parts, begin } = await seeded('corrupt-store', 6)

    // 1. A complete download into the store.
    const first = begin()
    await first.done
    first.release()
    const cid = first.cidOf(3)!
    const piece = parts.store.locate(cid)!

    // 2. The piece file changes on disk, as a crash during an unsynced write can leave it.
    await flipByte(piece.path)
    const second = begin()
    await assert.rejects(second.done, /piece 3 .* does not match its CID/)
    second.release()
    const deadline = Date.now() + 10_000
    while (existsSync(piece.path) && Date.now() < deadline) await sleep(50)
    assert.equal(existsSync(piece.path), false, 'the corrupt piece file is deleted')

    // 3. The next download fetches that piece again.
    const third = begin()
    await third.done
    assert.equal(cidToDigest(third.content!), `sha256:${createHash('sha256').update(body).digest('hex')}`)
    assert.deepEqual(await readFile(piece.path), body.subarray(12 * MiB, 16 * MiB))
  })

  it('catches a corrupt one-piece content', async () => {
    const { parts, begin } = await seeded('corrupt-one', 1)
    const first = begin()
    await first.done
    first.release()
    const piece = parts.store.locate(first.cidOf(0)!)!

    // Its content hash is its piece CID, so only a read of the stored piece can catch a changed file.
    await flipByte(piece.path)
    const second = begin()
    await assert.rejects(second.done, /piece 0 .* does not match its CID/)
    second.release()
    assert.equal(existsSync(piece.path), false)
  })

  it('requests during piece writes', async () => {
    const { body, supernode, holder, parts, url, key } = await seeded('slow-disk', 10)

    // A sink whose writes wait until the test opens the gate, as a slow disk would.
    const path = join(dir, 'slow-disk.out')
    const file = await open(path, 'w')
    const gate = Promise.withResolvers<void>()
    let writes = 0
    const sink: PieceSink = {
      path,
      write: async (_index, bytes, offset) => {
        writes++
        await gate.promise
        await file.write(bytes, 0, bytes.byteLength, offset)
      }
    }
    const download = new Download({ key, url, headers: {}, filter: [], supernodes: [supernode], backSource: false, pieceSize: 4 * MiB, supernodeRequests: 2, sink }, {
      ...parts, discovery: gossipFirst(holder, 10)
    })
    download.start()

    // 2 requests in flight and 2 pieces being written: 4 writes start although none ends.
    const deadline = Date.now() + 20_000
    while (writes < 4 && Date.now() < deadline) await sleep(50)
    await sleep(500)
    assert.equal(writes, 4)

    gate.resolve()
    await download.done
    await file.close()
    assert.deepEqual(await readFile(path), body)
  })

  /** Starts an engine on loopback that downloads `url` through `supernode` and then keeps serving it. */
  const holding = async (url: string, supernode: string, uploadRate?: number): Promise<Engine> => {
    const engine = await Engine.create({
      privateKey: await ephemeralIdentity(),
      dataDir: await mkdtemp(join(dir, 'holder-')),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      supernodes: [supernode],
      backSource: false,
      pieceSize: 4 * MiB,
      logger: silentLogger(),
      ...(uploadRate != null ? { uploadRate } : {})
    })
    stops.push(async () => { await engine.stop() })
    await (await engine.open({ url })).done
    return engine
  }

  /** Starts a download of a seeded content from the supernode and `peers`, which gossip reports as holders of every piece. */
  const fromHolders = async (seed: Awaited<ReturnType<typeof seeded>>, peers: Engine[], pieces: number, lines: Array<Record<string, unknown>>): Promise<Download> => {
    for (const peer of peers) await seed.parts.node.peerStore.merge(peer.node.peerId, { multiaddrs: peer.node.getMultiaddrs() })
    const holders = peers.map(peer => peer.node.peerId)
    const download = new Download({ key: seed.key, url: seed.url, headers: {}, filter: [], supernodes: [seed.supernode], backSource: false, pieceSize: 4 * MiB, peerRequests: 2, supernodeRequests: 2 }, {
      ...seed.parts, logger: recordingLogger(lines), discovery: gossipFirst(holders, pieces)
    })
    download.start()
    await download.done
    return download
  }

  it('holds back last bytes until verified', async () => {
    // A holder offers a manifest that claims another content's digest for the pieces it has. The
    // pieces match the piece CIDs of that manifest, so only the content hash can catch the lie.
    const seed = await seeded('claimed', 2)
    const holder = await holding(seed.url, seed.supernode)
    const claimedBytes = randomBytes(seed.body.byteLength)
    const digest = `sha256:${createHash('sha256').update(claimedBytes).digest('hex')}`
    const claimed = digestToCid(digest)
    const heldRecord = holder.records.get(seed.key)!
    await holder.records.set({ ...heldRecord, key: claimed, content: claimed })

    const parts = await peerParts()
    await parts.node.peerStore.merge(holder.node.peerId, { multiaddrs: holder.node.getMultiaddrs() })
    await parts.node.dial(holder.node.peerId)
    const download = new Download({ key: claimed, expected: claimed, url: `${base}/claimed-elsewhere.bin`, headers: {}, digest, filter: [], supernodes: [], backSource: false, pieceSize: 4 * MiB }, {
      ...parts, discovery: gossipFirst(holder.node.peerId, 2)
    })
    download.start()
    download.done.catch(() => {})

    // Every piece passes its CID check, but the reader never gets the end of the content.
    let read = 0
    await assert.rejects(async () => {
      for await (const part of readRange(download, parts.store, 0, seed.body.byteLength)) read += part.byteLength
    }, /content of .* has digest/)
    assert.ok(read < seed.body.byteLength, `read ${read} bytes`)
    await assert.rejects(download.done, /content of .* has digest/)
    download.release()
  })

  it('keeps pins for a slow reader', async () => {
    // A store with room for the 3 pieces of the content and no more.
    const seed = await seeded('slow-reader', 3)
    const parts = await peerParts(3 * 4 * MiB)
    const download = new Download({ key: seed.key, url: seed.url, headers: {}, filter: [], supernodes: [seed.supernode], backSource: false, pieceSize: 4 * MiB }, {
      ...parts, discovery: gossipFirst(seed.holder, 3)
    })
    download.start()
    await download.done

    // A reader reads its first part, then the download ends as the engine ends it. A part is
    // valid until the next one is read, so the test keeps copies.
    const reader = readRange(download, parts.store, 0, seed.body.byteLength)[Symbol.asyncIterator]()
    const chunks: Uint8Array[] = []
    const first = await reader.next()
    assert.equal(first.done, false)
    chunks.push(Buffer.from(first.value as Uint8Array))
    download.release()

    // Other contents fill the store past its quota, while the reader still needs every piece.
    for (let i = 0; i < 3; i++) {
      const bytes = randomBytes(4 * MiB)
      await parts.store.put(await cidOfBytes(bytes), bytes)
    }
    for (let step = await reader.next(); step.done !== true; step = await reader.next()) chunks.push(Buffer.from(step.value))
    const read = Buffer.concat(chunks)
    assert.equal(read.byteLength, seed.body.byteLength)
    assert.ok(read.equals(seed.body), 'the bytes read differ from the content')
  })

  it('no end-game copies from quick holders', async () => {
    const seed = await seeded('endgame-quick', 2)
    const peers = [await holding(seed.url, seed.supernode), await holding(seed.url, seed.supernode)]

    // Two peers with a window of 2 and the supernode hold both pieces. The first pass requests
    // both from the first peer, which starts the end game.
    const lines: Array<Record<string, unknown>> = []
    const download = await fromHolders(seed, peers, 2, lines)
    assert.equal(download.received(), seed.body.byteLength)
    const complete = lines.find(line => line.msg === 'download complete')
    assert.ok(complete != null, 'the download logged its summary')
    assert.equal(complete.duplicateBytes, 0)
    assert.equal(complete.cancelled, 0)
  })

  it('end-game copies from a slow holder', async () => {
    const seed = await seeded('endgame-slow', 2)
    // 256 KiB/s: each 4 MiB piece takes 16 s or more from this peer.
    const slow = await holding(seed.url, seed.supernode, 256 * 1024)

    // Gossip names the slow peer before the supernode's seed response, so it gets both requests first.
    const lines: Array<Record<string, unknown>> = []
    const download = await fromHolders(seed, [slow], 2, lines)
    assert.equal(download.stats.fromSupernode, seed.body.byteLength)
    const complete = lines.find(line => line.msg === 'download complete')
    assert.ok(complete != null, 'the download logged its summary')
    assert.equal(complete.cancelled, 2)
  })

  it('requests in order for a reader', async () => {
    const seed = await seeded('reader', 10)
    // A first download lets the supernode store the whole content, so that the next one learns every piece CID at once.
    await seed.begin().done
    const lines: Array<Record<string, unknown>> = []
    const download = new Download({ key: seed.key, url: seed.url, headers: {}, filter: [], supernodes: [seed.supernode], backSource: false, pieceSize: 4 * MiB, supernodeRequests: 4 }, {
      ...await peerParts(), logger: recordingLogger(lines, 'trace'), discovery: gossipFirst(seed.holder, 10)
    })
    // Before the piece CIDs are known: the first requests then follow the reader, not rarity.
    download.expectReader()
    download.start()
    await download.done
    const requested = lines.filter(line => line.msg === 'piece requested').map(line => line.index)
    assert.deepEqual(requested.slice(0, 4), [0, 1, 2, 3])
  })
})
