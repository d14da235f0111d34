/**
 * Direct links: piece transfers over TLS with a one-time pre-shared key,
 * beside the libp2p connection. Real libp2p nodes, real TLS connections and a
 * real origin, all on loopback.
 */
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { taskKeyOf } from '../src/content/keys.ts'
import { ConfigError } from '../src/errors.ts'
import { silentLogger } from '../src/log.ts'
import { ephemeralIdentity } from '../src/p2p/identity.ts'
import { startSupernode, type SupernodeHandle } from '../src/supernode/start.ts'
import { connectDirect, DirectServer, type Ticket } from '../src/swarm/direct-link.ts'
import { Engine } from '../src/swarm/engine.ts'
import type { SocketChannel } from '../src/swarm/socket-channel.ts'
import { TestOrigin } from './helpers/origin-server.ts'
import { testSupernodeConfig } from './helpers/supernode-config.ts'

const MiB = 1024 * 1024

/** Resolves 'done' when `promise` settles within `ms`, else 'timed out'. */
async function within (promise: Promise<unknown>, ms: number): Promise<string> {
  return await Promise.race([promise.then(() => 'done'), sleep(ms, 'timed out', { ref: false })])
}

describe('direct link server', () => {
  const links: Array<{ channel: SocketChannel, peer: string }> = []
  const server = new DirectServer({ hosts: ['127.0.0.1'], port: 0, logger: silentLogger(), onLink: (channel, peer) => { links.push({ channel, peer }) } })

  before(async () => { await server.start() })
  after(async () => { await server.stop() })

  const connect = async (ticket: Ticket): Promise<SocketChannel> => await connectDirect('127.0.0.1', ticket, AbortSignal.timeout(5000))

  it('ticket opens one link', async () => {
    const ticket = server.ticket('peer-a')
    assert.ok(ticket != null)
    const client = await connect(ticket)
    await client.write({ t: 'have' })
    const served = links.at(-1)
    // The link belongs to the peer that the ticket was issued to, and carries frames both ways.
    assert.equal(served?.peer, 'peer-a')
    assert.ok(await served.channel.read() != null)
    const bytes = randomBytes(600 * 1024)
    await served.channel.writeParts(bytes.byteLength, async (offset, length) => bytes.subarray(offset, offset + length))
    assert.deepEqual(Buffer.from((await client.readData(bytes.byteLength))!), bytes)

    await assert.rejects(connect(ticket), 'a used ticket opened a second link')
    client.abort(new Error('test done'))
  })

  it('reused frame buffer, late reader', async () => {
    const ticket = server.ticket('peer-reuse')
    assert.ok(ticket != null)
    const client = await connect(ticket)
    await client.write({ t: 'have' })
    const served = links.at(-1)!
    assert.ok(await served.channel.read() != null)
    // 24 MiB per piece fill the socket buffers and the receiver's 8 MiB before it reads, so
    // frames wait for the socket while the next read would overwrite the buffer.
    const pieces = [randomBytes(24 * MiB), randomBytes(24 * MiB)]
    const buffers = new Set<ArrayBufferLike>()
    const sent = (async () => {
      for (const piece of pieces) {
        await served.channel.writeParts(piece.byteLength, async (offset, length, into) => {
          assert.ok(into != null, 'the channel passes a buffer to read into')
          assert.ok(into.byteLength >= length, 'the buffer holds the frame')
          buffers.add(into.buffer)
          into.set(piece.subarray(offset, offset + length))
          return into.subarray(0, length)
        })
      }
    })()
    await sleep(300)
    for (const piece of pieces) {
      const received = await client.readData(piece.byteLength)
      assert.ok(received != null)
      assert.equal(createHash('sha256').update(received).digest('hex'), createHash('sha256').update(piece).digest('hex'))
    }
    await sent
    assert.equal(buffers.size, 1, 'both pieces were read into the same buffer')
    client.abort(new Error('test done'))
  })

  it('port in use stops the engine start', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'dfnode-direct-port-'))
    try {
      await assert.rejects(
        Engine.create({ privateKey: await ephemeralIdentity(), dataDir, listen: ['/ip4/127.0.0.1/tcp/0'], supernodes: [], backSource: false, pieceSize: MiB, dataPort: server.port, logger: silentLogger() }),
        (err: Error) => err instanceof ConfigError && err.message.includes(`port ${server.port}: the port is in use`) && err.message.includes('--data-port')
      )
    } finally {
      await rm(dataDir, { recursive: true, force: true })
    }
  })

  it('rejects unknown identity and wrong key', async () => {
    const ticket = server.ticket('peer-b')
    assert.ok(ticket != null)
    const before = links.length
    await assert.rejects(connect({ ...ticket, id: 'not-a-ticket' }))
    await assert.rejects(connect({ ...ticket, psk: randomBytes(32) }))
    assert.equal(links.length, before)
    // The wrong key used the ticket up; a new one still works.
    const fresh = server.ticket('peer-b')
    assert.ok(fresh != null)
    const client = await connect(fresh)
    assert.equal(links.length, before + 1)
    client.abort(new Error('test done'))
  })
})

describe('direct link server on two hosts', () => {
  it('listens on IPv4 and IPv6 at one port', async () => {
    const links: Array<{ channel: SocketChannel, peer: string }> = []
    const server = new DirectServer({ hosts: ['127.0.0.1', '::1'], port: 0, logger: silentLogger(), onLink: (channel, peer) => { links.push({ channel, peer }) } })
    await server.start()
    try {
      for (const host of ['127.0.0.1', '::1']) {
        const ticket = server.ticket(`peer-${host}`)
        assert.ok(ticket != null)
        const client = await connectDirect(host, ticket, AbortSignal.timeout(5000))
        client.abort(new Error('test done'))
      }
      assert.deepEqual(links.map(link => link.peer), ['peer-127.0.0.1', 'peer-::1'])
    } finally {
      for (const link of links) link.channel.abort(new Error('test done'))
      await server.stop()
    }
  })
})

describe('direct link server with silent connections', () => {
  it('closes them, and stops while one is open', async () => {
    const server = new DirectServer({ hosts: ['127.0.0.1'], port: 0, logger: silentLogger(), onLink: () => {} })
    await server.start()
    // A client that connects and sends nothing: the server ends it once the handshake times out.
    const silent = net.connect(server.port, '127.0.0.1')
    silent.on('error', () => {})
    assert.equal(await within(once(silent, 'close'), 10_000), 'done', 'the server kept a silent connection open')

    // Another one is open when the server stops: stop ends it instead of waiting for it.
    const open = net.connect(server.port, '127.0.0.1')
    open.on('error', () => {})
    await once(open, 'connect')
    assert.equal(await within(server.stop(), 3000), 'done', 'stop waited for an open connection')
    assert.equal(await within(once(open, 'close'), 3000), 'done', 'the connection stayed open after stop')
  })
})

describe('direct link server with many connections from one address', () => {
  it('rejects those over the limit', async () => {
    const links: SocketChannel[] = []
    const server = new DirectServer({ hosts: ['127.0.0.1'], port: 0, logger: silentLogger(), onLink: (channel) => { links.push(channel) } })
    await server.start()
    const silent: net.Socket[] = []
    try {
      for (let count = 0; count < 64; count++) {
        const socket = net.connect(server.port, '127.0.0.1')
        socket.on('error', () => {})
        silent.push(socket)
      }
      await Promise.all(silent.map(async socket => await once(socket, 'connect')))

      // The 65th is closed at once, long before the 5 s handshake timeout of the others.
      const extra = net.connect(server.port, '127.0.0.1')
      extra.on('error', () => {})
      assert.equal(await within(once(extra, 'close'), 2000), 'done', 'a 65th connection from one address stayed open')

      // Once they are gone, a peer with a ticket gets its link.
      for (const socket of silent) socket.destroy()
      await sleep(100)
      const ticket = server.ticket('peer-c')
      assert.ok(ticket != null)
      const client = await connectDirect('127.0.0.1', ticket, AbortSignal.timeout(5000))
      assert.equal(links.length, 1)
      client.abort(new Error('test done'))
    } finally {
      for (const socket of silent) socket.destroy()
      for (const link of links) link.abort(new Error('test done'))
      await server.stop()
    }
  })
})

describe('direct links in a download', () => {
  const origin = new TestOrigin()
  let dir = ''
  let base = ''
  const started: Array<{ stop: () => Promise<void> }> = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-direct-'))
    base = await origin.start()
  })

  after(async () => {
    for (const part of started.reverse()) await part.stop()
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  const startPair = async (name: string, supernodePort: number | false, peerPort: number | false): Promise<{ supernode: SupernodeHandle, peer: Engine }> => {
    const supernode = await startSupernode(testSupernodeConfig(join(dir, `${name}-supernode`), { dataPort: supernodePort }), silentLogger())
    started.push(supernode)
    const peer = await Engine.create({ privateKey: await ephemeralIdentity(), dataDir: join(dir, `${name}-peer`), listen: ['/ip4/127.0.0.1/tcp/0'], supernodes: supernode.multiaddrs, backSource: false, pieceSize: MiB, dataPort: peerPort, logger: silentLogger() })
    started.push(peer)
    return { supernode, peer }
  }

  const download = async (peer: Engine, path: string, body: Buffer): Promise<void> => {
    origin.files.set(path, { body })
    const running = await peer.open({ url: `${base}${path}` })
    await running.done
    assert.equal(running.stats.fromSupernode, body.byteLength)
    const chunks: Uint8Array[] = []
    // A part is valid until the next one is read: keep copies.
    for await (const chunk of peer.readRange(running, 0, body.byteLength)) chunks.push(Buffer.from(chunk))
    assert.equal(createHash('sha256').update(Buffer.concat(chunks)).digest('hex'), createHash('sha256').update(body).digest('hex'))
  }

  it('one-piece record, other piece size', async () => {
    const { peer } = await startPair('layout', 0, 0)
    const body = randomBytes(500 * 1024)
    const path = '/one-piece.bin'
    origin.files.set(path, { body })
    const url = `${base}${path}`
    // An unfinished download left a record in 4 MiB pieces; the supernode cuts 1 MiB pieces.
    // Both layouts are the same single piece, so the supernode's pieces still fit.
    const { key } = await taskKeyOf(url)
    await peer.records.set({ key, size: body.byteLength, pieceSize: 4 * MiB, pieces: [], url, updatedAt: Date.now() })

    await download(peer, path, body)
  })

  it('pieces go over direct link', async () => {
    const { supernode, peer } = await startPair('on', 0, 0)
    const body = randomBytes(8 * MiB)
    await download(peer, '/direct-on.bin', body)
    const stats = supernode.engine.pieceServer.stats
    assert.ok(stats.uploadedDirect > 0, `no piece bytes went over a direct link (${stats.uploaded} over libp2p)`)
    assert.ok(stats.uploaded >= body.byteLength)
  })

  it('aborted download cancels link requests', async () => {
    // 4 MiB pieces sent at 4 MiB/s: an upload in progress when the download aborts has seconds left.
    const supernode = await startSupernode(testSupernodeConfig(join(dir, 'abort-supernode'), { pieceSize: 4 * MiB, uploadRate: 4 * MiB }), silentLogger())
    started.push(supernode)
    const peer = await Engine.create({ privateKey: await ephemeralIdentity(), dataDir: join(dir, 'abort-peer'), listen: ['/ip4/127.0.0.1/tcp/0'], supernodes: supernode.multiaddrs, backSource: false, pieceSize: MiB, dataPort: 0, logger: silentLogger() })
    started.push(peer)
    origin.files.set('/direct-abort.bin', { body: randomBytes(16 * MiB) })
    const running = await peer.open({ url: `${base}/direct-abort.bin` })
    running.done.catch(() => {})

    const stats = supernode.engine.pieceServer.stats
    for (let wait = 0; wait < 200 && stats.uploadedDirect < 512 * 1024; wait++) await sleep(25)
    assert.ok(stats.uploadedDirect >= 512 * 1024, `the supernode sent ${stats.uploadedDirect} bytes over the link within 5 s`)
    running.abort(new Error('test abort'))
    const atAbort = stats.uploaded
    await sleep(1500)
    // Without the cancels, the rest of the pieces in flight would go on at 4 MiB/s.
    assert.ok(stats.uploaded - atAbort < 1.5 * MiB, `the supernode sent ${stats.uploaded - atAbort} bytes after the abort`)
  })

  it('pieces go over libp2p without link', async () => {
    const { supernode, peer } = await startPair('off', false, 0)
    assert.equal(supernode.engine.direct, undefined)
    const body = randomBytes(4 * MiB)
    await download(peer, '/direct-off.bin', body)
    assert.equal(supernode.engine.pieceServer.stats.uploadedDirect, 0)
    assert.ok(supernode.engine.pieceServer.stats.uploaded >= body.byteLength)
  })
})
