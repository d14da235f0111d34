/**
 * ChaCha20-Poly1305 for noise with the session key prepared once. The library's
 * Node crypto builds a key object from the raw 32 bytes for every 64 KiB message.
 * In profiles of bulk transfers, that took about a quarter of noise's time.
 * Everything else is the library's default crypto.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'

const CIPHER = 'chacha20-poly1305'
const TAG_BYTES = 16

/** Size below which the library's WebAssembly cipher is used, as in the library's default crypto. */
const NATIVE_MIN_BYTES = 1200

interface CachedKey {
  /** Copy of the raw key, to notice a key array changed in place. */
  raw: Buffer
  key: KeyObject
}

/** Session keys, by the array that noise keeps each key in. A key array lives as long as its cipher state. */
const keys = new WeakMap<Uint8Array, CachedKey>()

/** Returns the key object of session key `k`, created on first use. */
function keyObjectOf (k: Uint8Array): KeyObject {
  const cached = keys.get(k)
  if (cached != null && cached.raw.equals(k)) return cached.key
  const raw = Buffer.from(k)
  const key = createSecretKey(raw)
  keys.set(k, { raw, key })
  return key
}

/** Encrypts one noise message and appends its tag. */
function encrypt (plaintext: Uint8Array | Uint8ArrayList, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array): Uint8Array | Uint8ArrayList {
  if (plaintext.byteLength < NATIVE_MIN_BYTES) return defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
  const cipher = createCipheriv(CIPHER, keyObjectOf(k), nonce, { authTagLength: TAG_BYTES })
  cipher.setAAD(ad, { plaintextLength: plaintext.byteLength })
  // The ciphertext and the tag go out as a list, so they are not copied into one buffer.
  const output = new Uint8ArrayList()
  if (plaintext instanceof Uint8Array) output.append(cipher.update(plaintext))
  else for (const part of plaintext) output.append(cipher.update(part))
  const final = cipher.final()
  if (final.byteLength > 0) output.append(final)
  output.append(cipher.getAuthTag())
  return output
}

/** Checks the tag of one noise message and decrypts it; throws when the tag does not match. */
function decrypt (ciphertext: Uint8Array | Uint8ArrayList, nonce: Uint8Array, ad: Uint8Array, k: Uint8Array, dst?: Uint8Array): Uint8Array | Uint8ArrayList {
  if (ciphertext.byteLength < NATIVE_MIN_BYTES) return defaultCrypto.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst)
  const length = ciphertext.byteLength - TAG_BYTES
  const decipher = createDecipheriv(CIPHER, keyObjectOf(k), nonce, { authTagLength: TAG_BYTES })
  decipher.setAAD(ad, { plaintextLength: length })
  decipher.setAuthTag(ciphertext.subarray(length))
  if (ciphertext instanceof Uint8Array) {
    const output = decipher.update(ciphertext.subarray(0, length))
    const final = decipher.final()
    return final.byteLength > 0 ? new Uint8ArrayList(output, final) : output
  }
  const output = new Uint8ArrayList()
  for (const part of ciphertext.sublist(0, length)) output.append(decipher.update(part))
  const final = decipher.final()
  if (final.byteLength > 0) output.append(final)
  return output
}

/** Noise crypto: the library's default, with ChaCha20-Poly1305 on cached key objects. */
export const noiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: encrypt,
  chaCha20Poly1305Decrypt: decrypt
}
