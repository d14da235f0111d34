/**
 * Manifest of a content: its key, its content CID, its size, piece size and
 * piece CIDs, encoded with DAG-CBOR.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { ProtocolError } from '../errors.ts'
import { isContentCid, isUrlKey } from './ids.ts'
import { MAX_PIECES, MAX_PIECE_SIZE, MIN_PIECE_SIZE, pieceCount } from './pieces.ts'

/** Largest encoded manifest accepted: 65,536 piece CIDs of 36 bytes fit with room to spare. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024

/** Largest content size accepted: 4 TiB. */
export const MAX_CONTENT_SIZE = 4 * 1024 ** 4

export interface Manifest {
  /** Key the content is requested under: its content CID, or a URL key. */
  key: CID
  /** CIDv1(raw, sha2-256) of the whole content. */
  content: CID
  /** Content length in bytes. */
  size: number
  /** Length of every piece but the last, in bytes. */
  pieceSize: number
  /** CIDv1(raw, sha2-256) of each piece, in order. */
  pieces: CID[]
}

interface WireManifest {
  v: 1
  key: CID
  content: CID
  size: number
  pieceSize: number
  pieces: CID[]
}

/** Encodes a manifest after checking it. */
export function encodeManifest (manifest: Manifest): Uint8Array {
  validateManifest(manifest)
  const wire: WireManifest = { v: 1, key: manifest.key, content: manifest.content, size: manifest.size, pieceSize: manifest.pieceSize, pieces: manifest.pieces }
  const bytes = dagCbor.encode(wire)
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    throw new ProtocolError(`manifest of ${manifest.key.toString()} is ${bytes.byteLength} bytes, over the limit of ${MAX_MANIFEST_BYTES}`)
  }
  return bytes
}

/** Decodes and checks a manifest, throwing ProtocolError on anything malformed or oversized. */
export function decodeManifest (bytes: Uint8Array): Manifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    throw new ProtocolError(`manifest is ${bytes.byteLength} bytes, over the limit of ${MAX_MANIFEST_BYTES}`)
  }
  let wire: Partial<WireManifest>
  try {
    wire = dagCbor.decode<Partial<WireManifest>>(bytes)
  } catch (err) {
    throw new ProtocolError(`manifest is not valid DAG-CBOR: ${(err as Error).message}`, { cause: err })
  }
  if (wire == null || typeof wire !== 'object' || wire.v !== 1) {
    throw new ProtocolError('manifest has an unknown version; expected 1')
  }
  const manifest = { key: wire.key, content: wire.content, size: wire.size, pieceSize: wire.pieceSize, pieces: wire.pieces }
  validateManifest(manifest)
  return manifest as Manifest
}

/** Checks every field of a manifest and the piece count against size and piece size. */
export function validateManifest (manifest: Partial<Manifest>): asserts manifest is Manifest {
  const { key, content, size, pieceSize, pieces } = manifest
  if (!(key instanceof CID) || !(isContentCid(key) || isUrlKey(key))) throw new ProtocolError('manifest key is not a content CID or URL key')
  if (!(content instanceof CID) || !isContentCid(content)) throw new ProtocolError('manifest content is not a CIDv1(raw, sha2-256)')
  if (isContentCid(key) && !key.equals(content)) throw new ProtocolError(`manifest key ${key.toString()} differs from its content CID ${String(content)}`)
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || size > MAX_CONTENT_SIZE) throw new ProtocolError(`manifest size ${String(size)} is not an integer in 0..${MAX_CONTENT_SIZE}`)
  if (typeof pieceSize !== 'number' || !Number.isSafeInteger(pieceSize) || pieceSize < MIN_PIECE_SIZE || pieceSize > MAX_PIECE_SIZE) throw new ProtocolError(`manifest piece size ${String(pieceSize)} is not in ${MIN_PIECE_SIZE}..${MAX_PIECE_SIZE}`)
  if (!Array.isArray(pieces)) throw new ProtocolError('manifest pieces is not a list')
  const expected = pieceCount(size, pieceSize)
  if (expected > MAX_PIECES) throw new ProtocolError(`manifest has ${expected} pieces, over the limit of ${MAX_PIECES}`)
  if (pieces.length !== expected) throw new ProtocolError(`manifest lists ${pieces.length} pieces, expected ${expected} for ${size} bytes in pieces of ${pieceSize}`)
  for (const piece of pieces) {
    if (!(piece instanceof CID) || !isContentCid(piece)) throw new ProtocolError('manifest lists a piece that is not a CIDv1(raw, sha2-256)')
  }
}
