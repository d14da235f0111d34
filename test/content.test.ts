/**
 * Content identity, URL keys, piece arithmetic and manifests.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { CID } from 'multiformats/cid'
import { cidOfBytes, cidToDigest, digestToCid, isContentCid, isUrlKey, sameCid, urlKey } from '../src/content/ids.ts'
import { taskKeyOf } from '../src/content/keys.ts'
import { MAX_MANIFEST_BYTES, decodeManifest, encodeManifest, type Manifest } from '../src/content/manifest.ts'
import { DEFAULT_PIECE_SIZE, MAX_PIECES, choosePieceSize, pieceAt, pieceCount, pieceLength, pieceOffset } from '../src/content/pieces.ts'
import { DEFAULT_QUERY_FILTER, digestFromBlobPath, normaliseUrl, parseHttpUrl } from '../src/content/url.ts'
import { rankSupernodes } from '../src/swarm/supernodes.ts'
import { ProtocolError, UsageError } from '../src/errors.ts'
import * as dagCbor from '@ipld/dag-cbor'

const HEX = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'

describe('digest and CID', () => {
  it('round-trips sha256 digest', () => {
    const cid = digestToCid(`sha256:${HEX}`)
    assert.equal(cid.version, 1)
    assert.equal(cid.code, 0x55)
    assert.equal(cidToDigest(cid), `sha256:${HEX}`)
    assert.equal(cidToDigest(CID.parse(cid.toString())), `sha256:${HEX}`)
  })

  it('matches the CID of the bytes', async () => {
    assert.ok(sameCid(await cidOfBytes(new Uint8Array()), digestToCid(`sha256:${HEX}`)))
  })

  for (const bad of [`sha256:${HEX.slice(1)}`, `sha256:${HEX}0`, `sha256:${HEX.toUpperCase()}`, HEX, `sha512:${HEX}`, `sha256:${HEX.slice(2)}zz`, '', 'sha256:']) {
    it(`rejects digest "${bad.slice(0, 20)}…"`, () => {
      assert.throws(() => digestToCid(bad), (err: Error) => err instanceof UsageError && err.message.includes('invalid digest'))
    })
  }

  it('refuses a URL key as digest', async () => {
    const key = await urlKey('http://127.0.0.1/a')
    assert.equal(isUrlKey(key), true)
    assert.equal(isContentCid(key), false)
    assert.throws(() => cidToDigest(key), UsageError)
  })
})

describe('URL normalisation', () => {
  it('drops filtered query parameters', () => {
    const a = normaliseUrl('http://Storage.Local:80/blob/data?X-Amz-Signature=abc&X-Amz-Date=1&part=2#frag')
    const b = normaliseUrl('http://storage.local/blob/data?part=2&X-Amz-Signature=def&X-Amz-Date=2')
    assert.equal(a, b)
    assert.equal(a, 'http://storage.local/blob/data?part=2')
  })

  it('compares filter names case-insensitively', () => {
    assert.equal(normaliseUrl('http://h/x?expires=1&signature=2&a=1'), 'http://h/x?a=1')
  })

  it('sorts kept parameters', () => {
    assert.equal(normaliseUrl('http://h/x?b=2&a=1&a=0', []), 'http://h/x?a=0&a=1&b=2')
  })

  it('drops parameters by prefix', () => {
    assert.equal(normaliseUrl('http://h/x?x-amz-date=1&X-Amz-Signature=2&part=3&amz=4', ['X-Amz-*']), 'http://h/x?amz=4&part=3')
    // * alone drops every parameter.
    assert.equal(normaliseUrl('http://h/x?a=1&b=2', ['*']), 'http://h/x')
  })

  it('uses a custom filter', () => {
    assert.equal(normaliseUrl('http://h/x?token=1&Expires=2', ['token']), 'http://h/x?Expires=2')
  })

  it('keeps the default filter list', () => {
    assert.ok(DEFAULT_QUERY_FILTER.includes('X-Amz-Security-Token'))
    assert.ok(DEFAULT_QUERY_FILTER.includes('ns'))
  })

  for (const [bad, pattern] of [['not a url', /invalid URL/], ['ftp://h/x', /unsupported URL scheme "ftp"/], ['file:///etc/passwd', /unsupported URL scheme "file"/], ['http://user:pw@h/x', /credentials/], ['http://127.0.0.1:99999/x', /invalid port 99999 in URL/], ['http://[::1]:70000', /invalid port 70000/]] as const) {
    it(`rejects ${bad}`, () => {
      assert.throws(() => parseHttpUrl(bad), (err: Error) => err instanceof UsageError && pattern.test(err.message))
    })
  }

  it('keys the same URL alike', async () => {
    const a = await taskKeyOf('http://h/x?Signature=1')
    const b = await taskKeyOf('http://h/x?Signature=2')
    assert.ok(sameCid(a.key, b.key))
    assert.equal(a.expected, undefined)
  })

  it('keys a blob URL by its digest', async () => {
    const api = await taskKeyOf(`http://registry:5000/v2/library/app/blobs/sha256:${HEX}`)
    const storage = await taskKeyOf(`http://s3.local/docker/registry/v2/blobs/sha256/e3/${HEX}/data?X-Amz-Signature=zz`)
    assert.ok(sameCid(api.key, digestToCid(`sha256:${HEX}`)))
    assert.ok(sameCid(storage.key, api.key))
    assert.ok(api.expected != null)
  })

  it('finds digests in blob paths only', () => {
    assert.equal(digestFromBlobPath(`/v2/a/b/c/blobs/sha256:${HEX}`), `sha256:${HEX}`)
    assert.equal(digestFromBlobPath(`/v2/a/manifests/sha256:${HEX}`), undefined)
    assert.equal(digestFromBlobPath(`/x/blobs/sha256/ff/${HEX}/data`), undefined)
    assert.equal(digestFromBlobPath(`/v2/a/blobs/sha256:${HEX.toUpperCase()}`), undefined)
  })
})

describe('piece math', () => {
  const size = DEFAULT_PIECE_SIZE

  it('handles 0 bytes', () => {
    assert.equal(pieceCount(0, size), 0)
    assert.throws(() => pieceLength(0, 0, size), RangeError)
  })

  it('handles 1 byte', () => {
    assert.equal(pieceCount(1, size), 1)
    assert.equal(pieceLength(0, 1, size), 1)
  })

  it('handles exact multiples', () => {
    assert.equal(pieceCount(3 * size, size), 3)
    assert.equal(pieceLength(2, 3 * size, size), size)
    assert.equal(pieceCount(3 * size + 1, size), 4)
    assert.equal(pieceLength(3, 3 * size + 1, size), 1)
  })

  it('handles more than 4 GiB', () => {
    const big = 5 * 1024 ** 3 + 123
    const count = pieceCount(big, size)
    assert.equal(count, 1281)
    assert.equal(pieceOffset(count - 1, size), 1280 * size)
    assert.equal(pieceLength(count - 1, big, size), 123)
    assert.equal(pieceAt(big - 1, size), count - 1)
  })

  it('shrinks pieces for small contents', () => {
    const MiB = 1024 * 1024
    // Without a configured size: at least 16 pieces where pieces of 1 MiB or more allow it.
    assert.equal(choosePieceSize(64 * MiB), DEFAULT_PIECE_SIZE)
    assert.equal(choosePieceSize(63 * MiB), 2 * MiB)
    assert.equal(choosePieceSize(32 * MiB), 2 * MiB)
    assert.equal(choosePieceSize(31 * MiB), MiB)
    assert.equal(choosePieceSize(385), MiB)
    assert.equal(choosePieceSize(0), MiB)
    // A configured size applies to small contents too.
    assert.equal(choosePieceSize(385, 256 * 1024), 256 * 1024)
    assert.equal(choosePieceSize(3 * MiB, 16 * MiB), 16 * MiB)
    assert.equal(choosePieceSize(3 * MiB, DEFAULT_PIECE_SIZE), DEFAULT_PIECE_SIZE)
  })

  it('grows pieces for huge contents', () => {
    const huge = 2 * 1024 ** 4
    const chosen = choosePieceSize(huge)
    assert.ok(pieceCount(huge, chosen) <= MAX_PIECES)
    assert.equal(choosePieceSize(1024 ** 3), DEFAULT_PIECE_SIZE)
  })

  it('rejects bad arguments', () => {
    assert.throws(() => pieceCount(-1, size), RangeError)
    assert.throws(() => pieceCount(1, 0), RangeError)
    assert.throws(() => pieceLength(3, 3 * size, size), RangeError)
  })
})

describe('manifest', () => {
  async function manifestOf (bytes: Uint8Array, pieceSize: number): Promise<Manifest> {
    const pieces = []
    for (let offset = 0; offset < bytes.byteLength; offset += pieceSize) pieces.push(await cidOfBytes(bytes.subarray(offset, offset + pieceSize)))
    const content = await cidOfBytes(bytes)
    return { key: content, content, size: bytes.byteLength, pieceSize, pieces }
  }

  it('round-trips', async () => {
    const manifest = await manifestOf(new Uint8Array(300 * 1024).fill(7), 64 * 1024)
    const decoded = decodeManifest(encodeManifest(manifest))
    assert.equal(decoded.size, manifest.size)
    assert.equal(decoded.pieces.length, 5)
    assert.ok(sameCid(decoded.pieces[4]!, manifest.pieces[4]!))
    assert.ok(sameCid(decoded.content, manifest.content))
  })

  it('rejects a wrong piece count', async () => {
    const manifest = await manifestOf(new Uint8Array(300 * 1024), 64 * 1024)
    manifest.pieces.pop()
    assert.throws(() => encodeManifest(manifest), ProtocolError)
  })

  it('rejects oversized input', () => {
    assert.throws(() => decodeManifest(new Uint8Array(MAX_MANIFEST_BYTES + 1)), /over the limit/)
  })

  it('rejects too many pieces', async () => {
    const piece = await cidOfBytes(new Uint8Array([1]))
    const wire = { v: 1, key: piece, content: piece, size: (MAX_PIECES + 1) * 64 * 1024, pieceSize: 64 * 1024, pieces: [] }
    assert.throws(() => decodeManifest(dagCbor.encode(wire)), /over the limit/)
  })

  it('rejects garbage', () => {
    assert.throws(() => decodeManifest(new Uint8Array([0xff, 0x00, 0x13])), ProtocolError)
    assert.throws(() => decodeManifest(dagCbor.encode({ v: 2 })), /unknown version/)
  })
})

describe('supernode ranking', () => {
  it('is stable and complete', async () => {
    const key = await cidOfBytes(new Uint8Array([1, 2, 3]))
    const list = ['/ip4/127.0.0.1/tcp/1/p2p/a', '/ip4/127.0.0.1/tcp/2/p2p/b', '/ip4/127.0.0.1/tcp/3/p2p/c']
    const ranked = rankSupernodes(key, list)
    assert.deepEqual([...ranked].sort(), [...list].sort())
    assert.deepEqual(rankSupernodes(key, [...list].reverse()), ranked)
  })

  it('spreads contents over supernodes', async () => {
    const list = ['/dns/a/tcp/8002', '/dns/b/tcp/8002', '/dns/c/tcp/8002']
    const firsts = new Set<string>()
    for (let index = 0; index < 30; index++) firsts.add(rankSupernodes(await cidOfBytes(new Uint8Array([index])), list)[0]!)
    assert.equal(firsts.size, 3)
  })
})
