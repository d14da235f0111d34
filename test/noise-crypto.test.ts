/**
 * Noise's ChaCha20-Poly1305 with cached session keys: same bytes as the
 * library's default crypto, for whole buffers and split lists, and a changed
 * key or tag is caught.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { noiseCrypto } from '../src/p2p/noise-crypto.ts'

function joined (value: Uint8Array | Uint8ArrayList): Buffer {
  return Buffer.from(value instanceof Uint8Array ? value : value.subarray())
}

describe('noise crypto', () => {
  const key = new Uint8Array(randomBytes(32))
  const nonce = new Uint8Array(12)
  const ad = new Uint8Array(randomBytes(32))

  for (const size of [0, 100, 1199, 1200, 65_519]) {
    it(`encrypts and decrypts ${size} bytes like the default crypto`, () => {
      const plaintext = new Uint8Array(randomBytes(size))
      const ours = joined(noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key))
      const theirs = joined(defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, key))
      assert.deepEqual(ours, theirs)
      assert.deepEqual(joined(noiseCrypto.chaCha20Poly1305Decrypt(ours, nonce, ad, key)), Buffer.from(plaintext))

      // A message that spans two reads arrives as a list.
      const split = new Uint8ArrayList(ours.subarray(0, Math.floor(ours.byteLength / 3)), ours.subarray(Math.floor(ours.byteLength / 3)))
      assert.deepEqual(joined(noiseCrypto.chaCha20Poly1305Decrypt(split, nonce, ad, key)), Buffer.from(plaintext))
      const parts = new Uint8ArrayList(plaintext.subarray(0, 7), plaintext.subarray(7))
      assert.deepEqual(joined(noiseCrypto.chaCha20Poly1305Encrypt(parts, nonce, ad, key)), theirs)
    })
  }

  it('rejects a changed tag', () => {
    const sealed = joined(noiseCrypto.chaCha20Poly1305Encrypt(new Uint8Array(5000), nonce, ad, key))
    sealed[sealed.byteLength - 1]! ^= 1
    assert.throws(() => noiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, key))
  })

  it('follows a key array changed in place', () => {
    const session = new Uint8Array(randomBytes(32))
    const plaintext = new Uint8Array(randomBytes(4000))
    noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, session)
    session.set(randomBytes(32))
    const sealed = joined(noiseCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, session))
    assert.deepEqual(sealed, joined(defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, session)))
  })
})
