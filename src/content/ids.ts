/**
 * Content identity. A registry digest `sha256:<hex>` and CIDv1(raw, sha2-256)
 * carry the same hash and convert both ways. URLs without a known digest get
 * a key CID with a private-use codec, so a key is never taken for a content hash.
 */
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import * as Digest from 'multiformats/hashes/digest'
import { UsageError } from '../errors.ts'

/** Multihash code of sha2-256. */
export const SHA256_CODE = 0x12

/**
 * Multicodec of a URL key, from the private-use range 0x300000-0x3fffff of the
 * multicodec table: the hash is of a normalised URL, not of content.
 */
export const URL_KEY_CODEC = 0x300d4f

const DIGEST_PATTERN = /^sha256:([0-9a-f]{64})$/

/** Tells whether `value` is a well-formed `sha256:<64 lowercase hex>` digest. */
export function isDigest (value: string): boolean {
  return DIGEST_PATTERN.test(value)
}

/** Converts `sha256:<hex>` to CIDv1(raw, sha2-256); throws UsageError on a malformed digest. */
export function digestToCid (digest: string): CID {
  const match = DIGEST_PATTERN.exec(digest)
  if (match?.[1] == null) {
    throw new UsageError(`invalid digest "${digest}": expected sha256: followed by 64 lowercase hex characters`)
  }
  const bytes = Buffer.from(match[1], 'hex')
  return CID.createV1(raw.code, Digest.create(SHA256_CODE, bytes))
}

/** Converts a content CID (raw, sha2-256) back to `sha256:<hex>`. */
export function cidToDigest (cid: CID): string {
  if (!isContentCid(cid)) {
    throw new UsageError(`CID ${cid.toString()} is not a sha2-256 content hash`)
  }
  return `sha256:${Buffer.from(cid.multihash.digest).toString('hex')}`
}

/** Tells whether a CID names content by its sha2-256 hash (as opposed to a URL key). */
export function isContentCid (cid: CID): boolean {
  return cid.version === 1 && cid.code === raw.code && cid.multihash.code === SHA256_CODE
}

/** Tells whether a CID is a URL key. */
export function isUrlKey (cid: CID): boolean {
  return cid.version === 1 && cid.code === URL_KEY_CODEC && cid.multihash.code === SHA256_CODE
}

/** Computes the CID of a byte string: CIDv1(raw, sha2-256). */
export async function cidOfBytes (bytes: Uint8Array): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(bytes))
}

/** Builds the content CID of a finished sha256 hash. */
export function cidOfSha256 (hash: Uint8Array): CID {
  return CID.createV1(raw.code, Digest.create(SHA256_CODE, hash))
}

/** Content CID of zero bytes. */
export const EMPTY_CONTENT_CID = cidOfSha256(createHash('sha256').digest())

/** Derives the key of a normalised URL (see `normaliseUrl`). */
export async function urlKey (normalisedUrl: string): Promise<CID> {
  const hash = await sha256.digest(new TextEncoder().encode(`dfnode-url-key/1\n${normalisedUrl}`))
  return CID.createV1(URL_KEY_CODEC, hash)
}

/** Parses a CID string, throwing UsageError with the value when it is not one. */
export function parseCid (value: string): CID {
  try {
    return CID.parse(value)
  } catch (err) {
    throw new UsageError(`invalid CID "${value}": ${(err as Error).message}`, { cause: err })
  }
}

/** Tells whether two CIDs are equal (a plain boolean, unlike CID.equals, which narrows types). */
export function sameCid (a: CID, b: CID): boolean {
  return a.equals(b) as boolean
}
