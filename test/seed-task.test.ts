import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { CID } from 'multiformats/cid'
import { cidOfBytes } from '../src/content/ids.ts'
import { taskKeyOf } from '../src/content/keys.ts'
import { silentLogger } from '../src/log.ts'
import { OriginClient } from '../src/origin/client.ts'
import { ContentRecords } from '../src/store/content-records.ts'
import { PieceStore } from '../src/store/piece-store.ts'
import { SeedTask } from '../src/supernode/seed-task.ts'
import { ContentHasher } from '../src/swarm/content-hasher.ts'
import type { Discovery } from '../src/swarm/discovery.ts'

const PIECE = 64 * 1024
const SIZE = 8 * PIECE

describe('seed task', () => {
  let dir: string
  let server: Server
  let origin: string
  const file = randomBytes(SIZE)
  /** Responses of the origin, to see whether the supernode closed them. */
  const responses: ServerResponse[] = []
  const hasher = new ContentHasher(silentLogger())

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-seed-task-'))
    // The origin sends one piece every 20 ms, so it is still sending when a piece fails to store.
    // Paths that start with /one- get the first piece only.
    server = createServer((req, res) => {
      responses.push(res)
      const size = req.url?.startsWith('/one-') === true ? PIECE : SIZE
      res.writeHead(200, { 'content-length': String(size) })
      let sent = 0
      const timer = setInterval(() => {
        if (res.destroyed || sent >= size) {
          clearInterval(timer)
          res.end()
          return
        }
        res.write(file.subarray(sent, sent + PIECE))
        sent += PIECE
      }, 20)
      res.on('close', () => { clearInterval(timer) })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  after(async () => {
    await hasher.stop()
    server.closeAllConnections()
    server.close()
    await rm(dir, { recursive: true, force: true })
  })

  /**
   * Builds a task on a real store, records and origin client. Discovery is a stand-in: these tests
   * watch the origin and the store, and a libp2p node would add nothing to them.
   */
  async function taskFor (name: string, failOnPiece?: number, existing?: PieceStore): Promise<{ task: SeedTask, records: ContentRecords, store: PieceStore }> {
    const logger = silentLogger()
    const store = existing ?? new PieceStore({ dir: join(dir, name, 'pieces') })
    if (existing == null) await store.start()
    const records = new ContentRecords({ dir: join(dir, name), logger })
    await records.start()
    let puts = 0
    const realPut = store.put.bind(store)
    // No real disk fails on demand (root ignores file modes), so this put fails on purpose.
    store.put = async (cid: CID, bytes: Uint8Array, options) => {
      if (puts++ === failOnPiece) throw new Error('disk full')
      await realPut(cid, bytes, options)
    }
    const discovery = { provide () {}, relay () {}, announce () {}, provideInBackground () {} } as unknown as Discovery
    const url = `${origin}/${name}.bin`
    const { key } = await taskKeyOf(url)
    const task = new SeedTask({ key, url, headers: {}, pieceSize: PIECE }, { origin: new OriginClient({ allowedOrigins: [new URL(origin).host] }), store, records, discovery, hasher, logger })
    return { task, records, store }
  }

  /** Inverts one byte of a file in place, keeping its inode, size and modification time. */
  async function flipByte (path: string): Promise<void> {
    // From the time in ns, because a Date has ms precision and utimes rounds the seconds it gets from one.
    const seconds = Number((await stat(path, { bigint: true })).mtimeNs) / 1e9
    const bytes = await readFile(path)
    bytes[10] = bytes[10]! ^ 0xff
    await writeFile(path, bytes)
    await utimes(path, seconds, seconds)
  }

  /**
   * Returns a store that contains the piece `bytes` with one byte changed on disk. With `reopen`,
   * the store is opened again after the change, as after a crash, so it has no record of having
   * verified the file. Without it, the store trusts the file it wrote, as long as its inode,
   * size and modification time stay the same.
   */
  async function corruptedStore (name: string, bytes: Uint8Array, reopen: boolean): Promise<{ store: PieceStore, cid: CID, path: string }> {
    const piecesDir = join(dir, name, 'pieces')
    const writer = new PieceStore({ dir: piecesDir })
    await writer.start()
    const cid = await cidOfBytes(bytes)
    await writer.put(cid, bytes)
    const path = writer.locate(cid)?.path ?? ''
    await flipByte(path)
    if (!reopen) return { store: writer, cid, path }
    await writer.stop()
    const store = new PieceStore({ dir: piecesDir })
    await store.start()
    return { store, cid, path }
  }

  it('stores every piece and the record', async () => {
    const { task, records, store } = await taskFor('whole')
    await task.run()
    assert.equal(task.state, 'done', task.error?.message)
    assert.equal(task.cids.length, SIZE / PIECE)
    for (const cid of task.cids) assert.ok(store.has(cid))
    assert.equal(records.get(task.key)?.pieces.length, SIZE / PIECE)
    assert.equal(records.get(task.key)?.content?.toString(), (await cidOfBytes(file)).toString())
    assert.equal(task.content?.toString(), (await cidOfBytes(file)).toString())
  })

  it('replaces a corrupt stored piece', async () => {
    const piece = file.subarray(3 * PIECE, 4 * PIECE)
    const { store, cid, path } = await corruptedStore('corrupt', piece, true)
    const { task } = await taskFor('corrupt', undefined, store)
    await task.run()
    assert.equal(task.state, 'done', task.error?.message)
    assert.equal(task.content?.toString(), (await cidOfBytes(file)).toString())
    assert.deepEqual(await readFile(path), piece)
  })

  it('replaces a corrupt one-piece content', async () => {
    const piece = file.subarray(0, PIECE)
    const { store, cid, path } = await corruptedStore('one-corrupt', piece, true)
    const { task } = await taskFor('one-corrupt', undefined, store)
    await task.run()
    assert.equal(task.state, 'done', task.error?.message)
    assert.equal(task.content?.toString(), cid.toString())
    assert.deepEqual(await readFile(path), piece)
  })

  it('catches a trusted corrupt piece', async () => {
    // The store trusts the copy it wrote, so only the hash thread's check finds the change.
    const { store, cid } = await corruptedStore('trusted', file.subarray(5 * PIECE, 6 * PIECE), false)
    const first = await taskFor('trusted', undefined, store)
    await first.task.run()
    assert.equal(first.task.state, 'failed')
    assert.equal(first.task.error?.code, 'ERR_VERIFICATION')
    assert.match(first.task.error?.message ?? '', /a copy of a piece of .* did not match its CID and was deleted/)
    assert.equal(store.has(cid), false)

    const second = await taskFor('trusted', undefined, store)
    await second.task.run()
    assert.equal(second.task.state, 'done', second.task.error?.message)
    assert.equal(second.task.content?.toString(), (await cidOfBytes(file)).toString())
  })

  it('failed store ends origin read', async () => {
    const before = responses.length
    const { task, records } = await taskFor('failing', 2)
    await task.run()
    assert.equal(task.state, 'failed')
    assert.match(task.error?.message ?? '', /disk full/)
    assert.equal(records.get(task.key), undefined)
    // The task must close the origin response, not leave it open until the origin client's body timeout.
    const response = responses[before]
    assert.ok(response != null, 'the origin saw no request')
    if (!response.destroyed) await once(response, 'close')
    assert.ok(!response.writableFinished, 'the origin sent the whole file, so the read was not ended')
  })
})
