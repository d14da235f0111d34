import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { CID } from 'multiformats/cid'
import { taskKeyOf } from '../src/content/keys.ts'
import { silentLogger } from '../src/log.ts'
import { OriginClient } from '../src/origin/client.ts'
import { ContentRecords } from '../src/store/content-records.ts'
import { PieceStore } from '../src/store/piece-store.ts'
import { SeedTask } from '../src/supernode/seed-task.ts'
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

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-seed-task-'))
    // The origin sends one piece every 20 ms, so it is still sending when a piece fails to store.
    server = createServer((req, res) => {
      responses.push(res)
      res.writeHead(200, { 'content-length': String(SIZE) })
      let sent = 0
      const timer = setInterval(() => {
        if (res.destroyed || sent >= SIZE) {
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
    server.closeAllConnections()
    server.close()
    await rm(dir, { recursive: true, force: true })
  })

  /**
   * Builds a task on a real store, records and origin client. Discovery is a stand-in: these tests
   * watch the origin and the store, and a libp2p node would add nothing to them.
   */
  async function taskFor (name: string, failOnPiece?: number): Promise<{ task: SeedTask, records: ContentRecords, store: PieceStore }> {
    const logger = silentLogger()
    const store = new PieceStore({ dir: join(dir, name, 'pieces') })
    await store.start()
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
    const task = new SeedTask({ key, url, headers: {}, pieceSize: PIECE }, { origin: new OriginClient({ allowedOrigins: [new URL(origin).host] }), store, records, discovery, logger })
    return { task, records, store }
  }

  it('stores every piece and the record', async () => {
    const { task, records, store } = await taskFor('whole')
    await task.run()
    assert.equal(task.state, 'done', task.error?.message)
    assert.equal(task.cids.length, SIZE / PIECE)
    for (const cid of task.cids) assert.ok(store.has(cid))
    assert.equal(records.get(task.key)?.pieces.length, SIZE / PIECE)
    assert.ok(records.get(task.key)?.content != null)
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
