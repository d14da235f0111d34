/**
 * The content hash thread: it reads piece ranges back from real files on disk and hashes them
 * in the order added, and a range it cannot read fails the digest instead of skipping bytes.
 */
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { VerificationError } from '../src/errors.ts'
import { silentLogger } from '../src/log.ts'
import { ContentHasher } from '../src/swarm/content-hasher.ts'

const MiB = 1024 * 1024

describe('content hasher', () => {
  const hasher = new ContentHasher(silentLogger())
  let dir = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-hasher-'))
  })

  after(async () => {
    await hasher.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('hashes ranges across files', async () => {
    // A file containing pieces 0 and 2 at their offsets, and piece 1 in a file of its own, as a fetch output and the store keep them.
    const content = randomBytes(5 * MiB + 123)
    const output = join(dir, 'output')
    const piece1 = join(dir, 'piece-1')
    const sparse = Buffer.alloc(content.byteLength)
    content.copy(sparse, 0, 0, 2 * MiB)
    content.copy(sparse, 4 * MiB, 4 * MiB)
    await writeFile(output, sparse)
    await writeFile(piece1, content.subarray(2 * MiB, 4 * MiB))

    const session = hasher.open()
    session.add({ path: output, offset: 0, length: 2 * MiB })
    session.add({ path: piece1, offset: 0, length: 2 * MiB })
    session.add({ path: output, offset: 4 * MiB, length: content.byteLength - 4 * MiB })
    const digest = await session.digest()
    assert.equal(Buffer.from(digest).toString('hex'), createHash('sha256').update(content).digest('hex'))
  })

  it('hashes an empty content', async () => {
    const digest = await hasher.open().digest()
    assert.equal(Buffer.from(digest).toString('hex'), createHash('sha256').digest('hex'))
  })

  it('keeps concurrent sessions apart', async () => {
    const a = randomBytes(MiB)
    const b = randomBytes(MiB)
    await writeFile(join(dir, 'a'), a)
    await writeFile(join(dir, 'b'), b)
    const first = hasher.open()
    const second = hasher.open()
    first.add({ path: join(dir, 'a'), offset: 0, length: MiB })
    second.add({ path: join(dir, 'b'), offset: 0, length: MiB })
    const [digestA, digestB] = await Promise.all([first.digest(), second.digest()])
    assert.equal(Buffer.from(digestA).toString('hex'), createHash('sha256').update(a).digest('hex'))
    assert.equal(Buffer.from(digestB).toString('hex'), createHash('sha256').update(b).digest('hex'))
  })

  it('fails on a missing file', async () => {
    const missing = hasher.open()
    missing.add({ path: join(dir, 'no-such-file'), offset: 0, length: 10 })
    await assert.rejects(missing.digest(), /no-such-file.*ENOENT/)
  })

  it('fails on a short file', async () => {
    await writeFile(join(dir, 'short'), randomBytes(1000))
    const short = hasher.open()
    short.add({ path: join(dir, 'short'), offset: 0, length: 2000 })
    await assert.rejects(short.digest(), /short ends at offset 1000, before the 2000 bytes at offset 0/)

    const next = hasher.open()
    next.add({ path: join(dir, 'short'), offset: 0, length: 1000 })
    assert.equal((await next.digest()).byteLength, 32)
  })

  it('checks a piece against its CID', async () => {
    const piece = randomBytes(MiB)
    await writeFile(join(dir, 'checked'), piece)
    const range = { path: join(dir, 'checked'), offset: 0, length: MiB }

    const good = hasher.open()
    good.add(range, { index: 7, sha256: createHash('sha256').update(piece).digest() })
    assert.equal(Buffer.from(await good.digest()).toString('hex'), createHash('sha256').update(piece).digest('hex'))

    const bad = hasher.open()
    bad.add(range, { index: 7, sha256: createHash('sha256').update('other bytes').digest() })
    await assert.rejects(bad.digest(), (err: Error) => err instanceof VerificationError && /piece 7 at offset 0 of .*checked does not match its CID/.test(err.message))
  })

  it('rejects a session after its digest', async () => {
    const session = hasher.open()
    await session.digest()
    assert.throws(() => { session.add({ path: join(dir, 'a'), offset: 0, length: 1 }) }, /already ended/)
    await assert.rejects(session.digest(), /already ended/)
  })
})
