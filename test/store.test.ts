import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { pino, type Logger } from 'pino'
import { cidOfBytes, urlKey } from '../src/content/ids.ts'
import { decodeManifest, encodeManifest } from '../src/content/manifest.ts'
import { UsageError, VerificationError } from '../src/errors.ts'
import { ContentRecords, CONTENTS_DIR, CORRUPT_SUFFIX, type ContentRecord } from '../src/store/content-records.ts'
import { PIECES_DIR, PieceStore } from '../src/store/piece-store.ts'

const tempDirs: string[] = []

after(async () => {
  await Promise.all(tempDirs.map(async dir => { await rm(dir, { recursive: true, force: true }) }))
})

async function makeTempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dfnode-store-'))
  tempDirs.push(dir)
  return dir
}

interface Piece {
  cid: CID
  bytes: Uint8Array
}

async function makePiece (size: number): Promise<Piece> {
  const bytes = new Uint8Array(randomBytes(size))
  return { cid: await cidOfBytes(bytes), bytes }
}

function piecePath (dir: string, cid: CID): string {
  const name = cid.toString()
  return join(dir, PIECES_DIR, name.slice(-2), name)
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

/** Lists every file under the pieces directory, as paths relative to it. */
async function listPieceFiles (dir: string): Promise<string[]> {
  const root = join(dir, PIECES_DIR)
  const files: string[] = []
  for (const shard of await readdir(root)) {
    for (const name of await readdir(join(root, shard))) files.push(`${shard}/${name}`)
  }
  return files.sort()
}

/** Creates a logger that keeps its lines in memory, so a test can check that a warning was logged. */
function capturingLogger (): { logger: Logger, lines: Array<{ level: number, msg: string }> } {
  const lines: Array<{ level: number, msg: string }> = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { lines.push(JSON.parse(line)) } })
  return { logger, lines }
}

const WARN = 40

/**
 * Stores a 4096-byte piece with one store, then flips one byte of its file on disk, keeping the
 * size: the state a new process finds after disk corruption.
 */
async function storeThenDamage (dir: string, at: number): Promise<Piece> {
  const piece = await makePiece(4096)
  const first = new PieceStore({ dir })
  await first.start()
  await first.put(piece.cid, piece.bytes)
  await first.stop()
  const damaged = new Uint8Array(piece.bytes)
  damaged[at] = (damaged[at] ?? 0) ^ 0xff
  await writeFile(piecePath(dir, piece.cid), damaged)
  return piece
}

describe('PieceStore', () => {
  it('puts, gets and reports pieces', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir })
    await store.start()
    const piece = await makePiece(5000)
    const absent = await makePiece(10)

    await store.put(piece.cid, piece.bytes)

    assert.equal(store.has(piece.cid), true)
    assert.equal(store.sizeOf(piece.cid), 5000)
    assert.equal(store.usedBytes, 5000)
    assert.deepEqual(await store.get(piece.cid), piece.bytes)
    assert.deepEqual(new Uint8Array(await readFile(piecePath(dir, piece.cid))), piece.bytes)
    assert.equal(store.has(absent.cid), false)
    assert.equal(store.sizeOf(absent.cid), undefined)
    assert.equal(await store.get(absent.cid), undefined)
    await store.stop()
  })

  it('put with wrong bytes stores nothing', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir })
    await store.start()
    const piece = await makePiece(2000)
    const other = await makePiece(2000)

    await assert.rejects(store.put(piece.cid, other.bytes), VerificationError)

    assert.equal(store.has(piece.cid), false)
    assert.equal(store.usedBytes, 0)
    assert.equal(await store.get(piece.cid), undefined)
    assert.deepEqual(await readdir(join(dir, PIECES_DIR)), [])
    await store.stop()
  })

  it('rejects CIDs that cannot name a piece', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir })
    await store.start()
    const piece = await makePiece(100)
    const key = await urlKey('https://example.test/file')
    const cborCid = CID.createV1(dagCbor.code, piece.cid.multihash)
    const v0 = CID.createV0(await sha256.digest(piece.bytes))

    for (const cid of [key, cborCid, v0]) {
      await assert.rejects(store.put(cid, piece.bytes), UsageError)
      await assert.rejects(store.get(cid), UsageError)
      assert.throws(() => store.has(cid), UsageError)
      assert.throws(() => store.pin(cid), UsageError)
    }
    assert.equal(store.usedBytes, 0)
    await store.stop()
  })

  it('start removes stale temp files only', async () => {
    const dir = await makeTempDir()
    const piece = await makePiece(300)
    const name = piece.cid.toString()
    const shardDir = join(dir, PIECES_DIR, name.slice(-2))
    await mkdir(shardDir, { recursive: true })
    await writeFile(join(shardDir, name), piece.bytes)

    // Pid 2147483647 is above the kernel's pid limit, so no process has it.
    const deadOwner = join(shardDir, `${name}.tmp-2147483647-0a1b2c`)
    const noPid = join(shardDir, `${name}.tmp-garbage`)
    const oldOfLiveOwner = join(shardDir, `${name}.tmp-${process.pid}-111111`)
    const freshOfLiveOwner = join(shardDir, `${name}.tmp-${process.pid}-222222`)
    for (const path of [deadOwner, noPid, oldOfLiveOwner, freshOfLiveOwner]) await writeFile(path, 'partial')
    const twoHoursAgo = new Date(Date.now() - 2 * 60 * 60 * 1000)
    await utimes(oldOfLiveOwner, twoHoursAgo, twoHoursAgo)

    const store = new PieceStore({ dir })
    await store.start()

    assert.equal(await exists(deadOwner), false)
    assert.equal(await exists(noPid), false)
    assert.equal(await exists(oldOfLiveOwner), false)
    assert.equal(await exists(freshOfLiveOwner), true)
    assert.equal(store.has(piece.cid), true)
    assert.equal(store.usedBytes, 300)
    await store.stop()
  })

  it('finds pieces after a restart', async () => {
    const dir = await makeTempDir()
    const pieces = await Promise.all([makePiece(1000), makePiece(2000), makePiece(3000)])
    const first = new PieceStore({ dir })
    await first.start()
    for (const piece of pieces) await first.put(piece.cid, piece.bytes)
    await first.stop()

    const second = new PieceStore({ dir })
    await second.start()

    assert.equal(second.usedBytes, 6000)
    for (const piece of pieces) {
      assert.equal(second.has(piece.cid), true)
      assert.equal(second.sizeOf(piece.cid), piece.bytes.byteLength)
      assert.deepEqual(await second.get(piece.cid), piece.bytes)
    }
    await second.stop()
  })

  it('deletes a piece corrupted on disk', async () => {
    const dir = await makeTempDir()
    // Same size, different bytes: the scan at start trusts it, the read does not.
    const piece = await storeThenDamage(dir, 100)
    const { logger, lines } = capturingLogger()
    const second = new PieceStore({ dir, logger })
    await second.start()
    assert.equal(second.has(piece.cid), true)

    assert.equal(await second.get(piece.cid), undefined)

    assert.equal(await exists(piecePath(dir, piece.cid)), false)
    assert.equal(second.has(piece.cid), false)
    assert.equal(second.usedBytes, 0)
    assert.ok(lines.some(line => line.level === WARN && line.msg.includes('failed verification')))

    // A correct put afterwards stores it again.
    await second.put(piece.cid, piece.bytes)
    assert.deepEqual(await second.get(piece.cid), piece.bytes)
    await second.stop()
  })

  it('deletes a piece corrupted while running', async () => {
    const dir = await makeTempDir()
    const piece = await makePiece(4096)
    const store = new PieceStore({ dir })
    await store.start()
    await store.put(piece.cid, piece.bytes)

    await writeFile(piecePath(dir, piece.cid), piece.bytes.subarray(0, 4000))

    assert.equal(await store.get(piece.cid), undefined)
    assert.equal(await exists(piecePath(dir, piece.cid)), false)
    assert.equal(store.has(piece.cid), false)
    await store.stop()
  })

  it('opens a stored piece for upload', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir })
    await store.start()
    const piece = await makePiece(300_000)
    await store.put(piece.cid, piece.bytes)

    const reader = await store.openForUpload(piece.cid)
    assert.ok(reader != null)
    assert.equal(reader.size, 300_000)
    assert.deepEqual(await reader.read(0, 1000), piece.bytes.subarray(0, 1000))
    assert.deepEqual(await reader.read(262_144, 37_856), piece.bytes.subarray(262_144))
    await reader.close()
    await reader.close()
    assert.equal(await store.openForUpload((await makePiece(10)).cid), undefined)
    await store.stop()
  })

  it('verifies unknown files before upload', async () => {
    const dir = await makeTempDir()
    // A new process has not verified the file: a damaged one is deleted, not sent.
    const piece = await storeThenDamage(dir, 7)
    const second = new PieceStore({ dir })
    await second.start()
    assert.equal(await second.openForUpload(piece.cid), undefined)
    assert.equal(await exists(piecePath(dir, piece.cid)), false)

    // An intact file from another process is verified whole, then served from memory.
    await writeFile(piecePath(dir, piece.cid), piece.bytes)
    const reader = await second.openForUpload(piece.cid)
    assert.ok(reader != null)
    assert.deepEqual(await reader.read(0, 4096), piece.bytes)
    await reader.close()
    await second.stop()
  })

  it('pins a piece during upload', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir, quotaBytes: 6000 })
    await store.start()
    const open = await makePiece(4000)
    const next = await makePiece(4000)
    await store.put(open.cid, open.bytes)
    const reader = await store.openForUpload(open.cid)
    assert.ok(reader != null)

    // A put that takes the store over its quota does not evict the open piece.
    await store.put(next.cid, next.bytes)
    assert.equal(store.has(open.cid), true)
    assert.deepEqual(await reader.read(0, 4000), open.bytes)
    await reader.close()
    await store.stop()
  })

  it('serves pieces from a file being written', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir })
    await store.start()
    const head = await makePiece(300_000)
    const tail = await makePiece(5000)
    const output = join(dir, 'out.part')
    await writeFile(output, Buffer.concat([head.bytes, tail.bytes]))
    store.putRange(head.cid, { path: output, offset: 0, length: 300_000 })
    store.putRange(tail.cid, { path: output, offset: 300_000, length: 5000 })

    // No copy in the store. The range is read part by part.
    assert.deepEqual(await listPieceFiles(dir), [])
    assert.equal(store.has(tail.cid), true)
    assert.equal(store.sizeOf(tail.cid), 5000)
    assert.deepEqual(await store.get(tail.cid), tail.bytes)
    const reader = await store.openForUpload(head.cid)
    assert.ok(reader != null)
    assert.equal(reader.size, 300_000)
    assert.deepEqual(await reader.read(262_144, 37_856), head.bytes.subarray(262_144))
    await reader.close()

    // Once complete and renamed, the file is trusted while it keeps its stamp.
    const final = join(dir, 'out')
    await rename(output, final)
    await store.sealRanges(output, final)
    assert.deepEqual(await store.get(head.cid), head.bytes)

    // Changed since: each piece is verified, and one that no longer matches is not served.
    const changed = Buffer.concat([head.bytes, tail.bytes])
    changed[10] = (changed[10] ?? 0) ^ 0xff
    await writeFile(final, changed)
    // A coarse file system clock could give the rewrite the same time. A user's edit comes later.
    const later = new Date(Date.now() + 10_000)
    await utimes(final, later, later)
    assert.equal(await store.openForUpload(head.cid), undefined)
    assert.equal(store.has(head.cid), false)
    assert.deepEqual(await store.get(tail.cid), tail.bytes)

    // A removed file takes its pieces with it.
    await rm(final)
    assert.equal(await store.get(tail.cid), undefined)
    assert.equal(store.has(tail.cid), false)
    await store.stop()
  })

  it('verifies pieces adopted from an existing file', async () => {
    const dir = await makeTempDir()
    const { logger, lines } = capturingLogger()
    const store = new PieceStore({ dir, logger })
    await store.start()
    const intact = await makePiece(4096)
    const rotten = await makePiece(4096)
    const file = join(dir, 'earlier.out')
    const damaged = new Uint8Array(rotten.bytes)
    damaged[0] = (damaged[0] ?? 0) ^ 0xff
    await writeFile(file, Buffer.concat([intact.bytes, damaged]))
    store.adoptRange(intact.cid, { path: file, offset: 0, length: 4096 })
    store.adoptRange(rotten.cid, { path: file, offset: 4096, length: 4096 })

    const reader = await store.openForUpload(intact.cid)
    assert.ok(reader != null)
    assert.deepEqual(await reader.read(0, 4096), intact.bytes)
    await reader.close()
    assert.equal(await store.get(rotten.cid), undefined)
    assert.equal(store.has(rotten.cid), false)
    assert.ok(lines.some(line => line.level === WARN && /changed/.test(line.msg)))

    // A rename over the file drops the pieces it contained, and dropRanges drops a file's pieces.
    const next = await makePiece(4096)
    const part = join(dir, 'next.part')
    await writeFile(part, next.bytes)
    store.putRange(next.cid, { path: part, offset: 0, length: 4096 })
    await rename(part, file)
    await store.sealRanges(part, file)
    assert.equal(store.has(intact.cid), false)
    assert.deepEqual(await store.get(next.cid), next.bytes)
    store.dropRanges(file)
    assert.equal(store.has(next.cid), false)
    await store.stop()
  })

  it('start deletes piece files of impossible size', async () => {
    const dir = await makeTempDir()
    const empty = await makePiece(0)
    const piece = await makePiece(10)
    for (const cid of [empty.cid, piece.cid]) {
      await mkdir(join(piecePath(dir, cid), '..'), { recursive: true })
      await writeFile(piecePath(dir, cid), new Uint8Array())
    }

    const store = new PieceStore({ dir })
    await store.start()

    // A 0-byte file is plausible only for the CID of the empty piece.
    assert.equal(store.has(empty.cid), true)
    assert.deepEqual(await store.get(empty.cid), new Uint8Array())
    assert.equal(store.has(piece.cid), false)
    assert.equal(await exists(piecePath(dir, piece.cid)), false)
    await store.stop()
  })

  it('concurrent puts of one CID leave one file', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir })
    await store.start()
    const piece = await makePiece(256 * 1024)

    await Promise.all(Array.from({ length: 8 }, async () => { await store.put(piece.cid, piece.bytes) }))

    const name = piece.cid.toString()
    assert.deepEqual(await listPieceFiles(dir), [`${name.slice(-2)}/${name}`])
    assert.equal(store.usedBytes, 256 * 1024)
    assert.deepEqual(new Uint8Array(await readFile(piecePath(dir, piece.cid))), piece.bytes)
    await store.stop()
  })

  it('puts from two processes leave one file each', { timeout: 120_000 }, async () => {
    const dir = await makeTempDir()
    const dataDir = await makeTempDir()
    const pieces = await Promise.all(Array.from({ length: 20 }, async () => await makePiece(128 * 1024)))
    for (const [index, piece] of pieces.entries()) await writeFile(join(dataDir, String(index)), piece.bytes)

    // Each child starts a store on the shared dir, prints "ready", waits for a line on
    // stdin so both write at the same time, then puts every piece at once.
    const storeUrl = new URL('../src/store/piece-store.ts', import.meta.url).href
    const idsUrl = new URL('../src/content/ids.ts', import.meta.url).href
    const script = `
      import { readFile } from 'node:fs/promises'
      import { join } from 'node:path'
      import { PieceStore } from ${JSON.stringify(storeUrl)}
      import { cidOfBytes } from ${JSON.stringify(idsUrl)}
      const [storeDir, dataDir, count] = process.argv.slice(1)
      const store = new PieceStore({ dir: storeDir })
      await store.start()
      const pieces = await Promise.all(Array.from({ length: Number(count) }, async (_, index) => {
        const bytes = await readFile(join(dataDir, String(index)))
        return { cid: await cidOfBytes(bytes), bytes }
      }))
      process.stdout.write('ready\\n')
      await new Promise(resolve => process.stdin.once('data', resolve))
      await Promise.all(pieces.map(piece => store.put(piece.cid, piece.bytes)))
      await store.stop()
      process.stdout.write('done ' + store.usedBytes + '\\n')
      process.exit(0)
    `

    const children = [0, 1].map(() => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir, dataDir, String(pieces.length)], { stdio: ['pipe', 'pipe', 'pipe'] })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
      child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
      const ready = new Promise<void>((resolve, reject) => {
        child.stdout.on('data', () => { if (stdout.includes('ready\n')) resolve() })
        child.once('exit', code => { reject(new Error(`child exited with ${code} before it was ready: ${stderr}`)) })
      })
      const exit = new Promise<{ code: number | null, stdout: string, stderr: string }>(resolve => {
        child.once('exit', code => { resolve({ code, stdout, stderr }) })
      })
      return { child, ready, exit }
    })

    try {
      await Promise.all(children.map(async ({ ready }) => { await ready }))
      for (const { child } of children) child.stdin.write('go\n')
      const results = await Promise.all(children.map(async ({ exit }) => await exit))

      for (const result of results) {
        assert.equal(result.code, 0, result.stderr)
        assert.match(result.stdout, new RegExp(`done ${pieces.length * 128 * 1024}\\n`))
      }
    } finally {
      for (const { child } of children) if (child.exitCode === null) child.kill()
    }

    const expected = pieces.map(piece => piece.cid.toString()).map(name => `${name.slice(-2)}/${name}`).sort()
    assert.deepEqual(await listPieceFiles(dir), expected)
    for (const piece of pieces) {
      assert.deepEqual(new Uint8Array(await readFile(piecePath(dir, piece.cid))), piece.bytes)
    }
    const store = new PieceStore({ dir })
    await store.start()
    assert.equal(store.usedBytes, pieces.length * 128 * 1024)
    await store.stop()
  })

  it('quota evicts least recently used', async () => {
    const dir = await makeTempDir()
    const store = new PieceStore({ dir, quotaBytes: 3000 })
    await store.start()
    const [a, b, c, d, e] = await Promise.all(Array.from({ length: 5 }, async () => await makePiece(1000))) as [Piece, Piece, Piece, Piece, Piece]
    await store.put(a.cid, a.bytes)
    await store.put(b.cid, b.bytes)
    await store.put(c.cid, c.bytes)
    await store.get(a.cid)

    await store.put(d.cid, d.bytes)

    assert.equal(store.usedBytes, 3000)
    assert.equal(store.has(b.cid), false)
    assert.equal(await exists(piecePath(dir, b.cid)), false)
    for (const survivor of [a, c, d]) assert.equal(store.has(survivor.cid), true)

    // c is now the least recently used, but pinned: a goes instead.
    const release = store.pin(c.cid)
    await store.put(e.cid, e.bytes)

    assert.equal(store.usedBytes, 3000)
    assert.equal(store.has(c.cid), true)
    assert.equal(store.has(a.cid), false)
    assert.equal(await exists(piecePath(dir, a.cid)), false)
    assert.equal(store.has(d.cid), true)
    assert.equal(store.has(e.cid), true)
    release()
    await store.stop()
  })

  it('quota never evicts pinned pieces', async () => {
    const dir = await makeTempDir()
    const { logger, lines } = capturingLogger()
    const store = new PieceStore({ dir, quotaBytes: 1000, logger })
    await store.start()
    const [x, y, z, w] = await Promise.all(Array.from({ length: 4 }, async () => await makePiece(1000))) as [Piece, Piece, Piece, Piece]
    const releaseX = store.pin(x.cid)
    const releaseY = store.pin(y.cid)
    await store.put(x.cid, x.bytes)

    await store.put(y.cid, y.bytes)

    assert.equal(store.usedBytes, 2000)
    assert.equal(store.has(x.cid), true)
    assert.equal(store.has(y.cid), true)
    assert.ok(lines.some(line => line.level === WARN && line.msg.includes('over its quota')))

    // x has a second holder, and a release called twice must not drop that holder's pin.
    const releaseSecondX = store.pin(x.cid)
    releaseX()
    releaseX()
    releaseY()
    await store.put(z.cid, z.bytes)

    assert.equal(store.usedBytes, 2000)
    assert.equal(store.has(x.cid), true)
    assert.equal(store.has(y.cid), false)
    assert.equal(await exists(piecePath(dir, y.cid)), false)
    assert.equal(store.has(z.cid), true)

    releaseSecondX()
    await store.put(w.cid, w.bytes)

    assert.equal(store.usedBytes, 1000)
    assert.equal(store.has(x.cid), false)
    assert.equal(store.has(z.cid), false)
    assert.equal(store.has(w.cid), true)
    await store.stop()
  })

  it('start evicts oldest above quota', async () => {
    const dir = await makeTempDir()
    const [older, newer] = await Promise.all([makePiece(1000), makePiece(1000)])
    const first = new PieceStore({ dir })
    await first.start()
    await first.put(older.cid, older.bytes)
    await first.put(newer.cid, newer.bytes)
    await first.stop()
    const hourAgo = new Date(Date.now() - 60 * 60 * 1000)
    await utimes(piecePath(dir, older.cid), hourAgo, hourAgo)

    const second = new PieceStore({ dir, quotaBytes: 1500 })
    await second.start()

    assert.equal(second.usedBytes, 1000)
    assert.equal(second.has(older.cid), false)
    assert.equal(await exists(piecePath(dir, older.cid)), false)
    assert.equal(second.has(newer.cid), true)
    await second.stop()
  })

  it('rejects an invalid quota', () => {
    assert.throws(() => new PieceStore({ dir: '/nonexistent', quotaBytes: -1 }), UsageError)
    assert.throws(() => new PieceStore({ dir: '/nonexistent', quotaBytes: 1.5 }), UsageError)
  })
})

const PIECE_SIZE = 64 * 1024

async function makeCompleteRecord (pieceCount: number, lastPieceBytes: number): Promise<ContentRecord> {
  const size = (pieceCount - 1) * PIECE_SIZE + lastPieceBytes
  const pieces = await Promise.all(Array.from({ length: pieceCount }, async () => (await makePiece(16)).cid))
  const content = (await makePiece(32)).cid
  return { key: content, size, pieceSize: PIECE_SIZE, content, pieces, updatedAt: Date.now() }
}

function namesOf (pieces: Array<CID | undefined>): Array<string | undefined> {
  return pieces.map(piece => piece?.toString())
}

describe('ContentRecords', () => {
  it('round-trips partial and complete records', async () => {
    const dir = await makeTempDir()
    const complete = await makeCompleteRecord(4, 100)
    const key = await urlKey('https://origin.test/big.iso')
    const partial: ContentRecord = {
      key,
      size: 3 * PIECE_SIZE,
      pieceSize: PIECE_SIZE,
      pieces: [complete.pieces[0], undefined, complete.pieces[2]],
      url: 'https://user:secret@origin.test/big.iso?Signature=abc&Expires=1#part',
      updatedAt: 1234
    }
    const first = new ContentRecords({ dir })
    await first.start()

    await first.set(complete)
    await first.set(partial)

    assert.equal(first.get(key)?.url, 'https://origin.test/big.iso')
    await first.stop()
    assert.equal(await exists(join(dir, CONTENTS_DIR, `${key.toString()}.cbor`)), true)

    const second = new ContentRecords({ dir })
    await second.start()
    const loaded = second.get(key)
    assert.ok(loaded !== undefined)
    assert.equal(loaded.key.toString(), key.toString())
    assert.equal(loaded.size, 3 * PIECE_SIZE)
    assert.equal(loaded.pieceSize, PIECE_SIZE)
    assert.equal(loaded.content, undefined)
    assert.deepEqual(namesOf(loaded.pieces), namesOf(partial.pieces))
    assert.equal(loaded.url, 'https://origin.test/big.iso')
    assert.equal(loaded.updatedAt, 1234)
    assert.deepEqual(namesOf(second.get(complete.key)?.pieces ?? []), namesOf(complete.pieces))
    assert.equal(second.list().length, 2)
    await second.stop()
  })

  it('keeps the file that holds a content', async () => {
    const dir = await makeTempDir()
    const record = { ...await makeCompleteRecord(2, 10), file: '/srv/images/layer.tar' }
    const first = new ContentRecords({ dir })
    await first.start()
    await first.set(record)
    await first.stop()
    const second = new ContentRecords({ dir })
    await second.start()
    assert.equal(second.get(record.key)?.file, '/srv/images/layer.tar')
    await second.stop()
  })

  it('manifestOf needs a complete record', async () => {
    const dir = await makeTempDir()
    const records = new ContentRecords({ dir })
    await records.start()
    const complete = await makeCompleteRecord(3, 500)
    const withoutContent: ContentRecord = { ...complete, content: undefined }
    const withHole: ContentRecord = { ...complete, pieces: [complete.pieces[0], undefined, complete.pieces[2]] }
    const short: ContentRecord = { ...complete, pieces: complete.pieces.slice(0, 2) }

    for (const record of [withoutContent, withHole, short]) {
      await records.set(record)
      assert.equal(records.manifestOf(complete.key), undefined)
    }
    await records.set(complete)
    const manifest = records.manifestOf(complete.key)

    assert.ok(manifest !== undefined)
    const decoded = decodeManifest(encodeManifest(manifest))
    assert.equal(decoded.content.toString(), complete.content?.toString())
    assert.equal(decoded.size, complete.size)
    assert.equal(decoded.pieceSize, PIECE_SIZE)
    assert.deepEqual(namesOf(decoded.pieces), namesOf(complete.pieces))
    await records.stop()
  })

  it('manifestOf works for a URL key', async () => {
    const dir = await makeTempDir()
    const records = new ContentRecords({ dir })
    await records.start()
    const complete = await makeCompleteRecord(2, 1)
    const key = await urlKey('https://origin.test/a.bin')

    await records.set({ ...complete, key })

    const manifest = records.manifestOf(key)
    assert.equal(manifest?.key.toString(), key.toString())
    assert.equal(manifest?.content.toString(), complete.content?.toString())
    await records.stop()
  })

  it('last of many sets is persisted', async () => {
    const dir = await makeTempDir()
    const records = new ContentRecords({ dir })
    await records.start()
    const complete = await makeCompleteRecord(50, PIECE_SIZE)

    // One set per piece as it arrives, without waiting in between.
    await Promise.all(complete.pieces.map(async (_, index) => {
      await records.set({ ...complete, pieces: complete.pieces.slice(0, index + 1), updatedAt: index })
    }))
    await records.flush()

    const reloaded = new ContentRecords({ dir })
    await reloaded.start()
    assert.equal(reloaded.get(complete.key)?.updatedAt, 49)
    assert.deepEqual(namesOf(reloaded.get(complete.key)?.pieces ?? []), namesOf(complete.pieces))
    assert.ok(reloaded.manifestOf(complete.key) !== undefined)
    await records.stop()
    await reloaded.stop()
  })

  it('delete removes the record file', async () => {
    const dir = await makeTempDir()
    const records = new ContentRecords({ dir })
    await records.start()
    const record = await makeCompleteRecord(1, 10)
    await records.set(record)

    await records.delete(record.key)

    assert.equal(records.get(record.key), undefined)
    assert.equal(await exists(join(dir, CONTENTS_DIR, `${record.key.toString()}.cbor`)), false)
    const reloaded = new ContentRecords({ dir })
    await reloaded.start()
    assert.equal(reloaded.get(record.key), undefined)
    assert.deepEqual(reloaded.list(), [])
  })

  it('rejects invalid records', async () => {
    const dir = await makeTempDir()
    const records = new ContentRecords({ dir })
    await records.start()
    const record = await makeCompleteRecord(2, 10)
    const otherContent = (await makePiece(8)).cid
    const pieceCid = record.pieces[0] as CID

    const invalid: ContentRecord[] = [
      { ...record, pieces: [...record.pieces, pieceCid] },
      { ...record, pieceSize: 1024 },
      { ...record, size: -1 },
      { ...record, content: otherContent },
      { ...record, key: CID.createV1(dagCbor.code, pieceCid.multihash) },
      { ...record, url: 'not a url' },
      { ...record, file: 'relative/path.bin' },
      { ...record, file: `/${'a'.repeat(5000)}` }
    ]
    for (const bad of invalid) await assert.rejects(records.set(bad), UsageError)

    assert.deepEqual(records.list(), [])
    assert.deepEqual(await readdir(join(dir, CONTENTS_DIR)), [])
  })

  it('returned records are frozen', async () => {
    const dir = await makeTempDir()
    const records = new ContentRecords({ dir })
    await records.start()
    const record = await makeCompleteRecord(2, 10)
    await records.set(record)

    const stored = records.get(record.key)

    assert.ok(stored !== undefined)
    assert.throws(() => { stored.size = 1 }, TypeError)
    assert.throws(() => { stored.pieces[0] = undefined }, TypeError)
    await records.stop()
  })

  it('moves a corrupt record aside', async () => {
    const dir = await makeTempDir()
    const good = await makeCompleteRecord(2, 10)
    const misfiled = await makeCompleteRecord(1, 10)
    const first = new ContentRecords({ dir })
    await first.start()
    await first.set(good)
    await first.set(misfiled)
    await first.stop()

    const contentsDir = join(dir, CONTENTS_DIR)
    const garbagePath = join(contentsDir, `${(await makePiece(8)).cid.toString()}.cbor`)
    await writeFile(garbagePath, 'not cbor at all')
    const misfiledPath = join(contentsDir, `${misfiled.key.toString()}.cbor`)
    const wrongNamePath = join(contentsDir, `${(await makePiece(8)).cid.toString()}.cbor`)
    await writeFile(wrongNamePath, await readFile(misfiledPath))
    await rm(misfiledPath)
    const staleTemp = join(contentsDir, `${good.key.toString()}.cbor.tmp-2147483647-abcdef`)
    await writeFile(staleTemp, 'partial')

    const { logger, lines } = capturingLogger()
    const second = new ContentRecords({ dir, logger })
    await second.start()

    assert.equal(second.list().length, 1)
    assert.equal(second.get(good.key)?.size, good.size)
    assert.equal(second.get(misfiled.key), undefined)
    assert.equal(await exists(garbagePath), false)
    assert.equal(await exists(`${garbagePath}${CORRUPT_SUFFIX}`), true)
    assert.equal(await exists(wrongNamePath), false)
    assert.equal(await exists(`${wrongNamePath}${CORRUPT_SUFFIX}`), true)
    assert.equal(await exists(staleTemp), false)
    assert.equal(lines.filter(line => line.level === WARN && line.msg.includes('moving it aside')).length, 2)

    // Files moved aside are not read again.
    const third = new ContentRecords({ dir })
    await third.start()
    assert.equal(third.list().length, 1)
  })
})
