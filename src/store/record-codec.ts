/**
 * DAG-CBOR encoding and validation of content records. A piece CID that is not
 * known yet is stored as null, because the IPLD data model has no undefined.
 */
import { isAbsolute } from 'node:path'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { isContentCid, isUrlKey } from '../content/ids.ts'
import { MAX_CONTENT_SIZE } from '../content/manifest.ts'
import { MAX_PIECES, MAX_PIECE_SIZE, MIN_PIECE_SIZE, pieceCount } from '../content/pieces.ts'
import type { ContentRecord } from './content-records.ts'

/** Largest record file read at start: 65,536 piece CIDs of about 37 bytes each fit with room to spare. */
export const MAX_RECORD_BYTES = 8 * 1024 * 1024

/** Maximum length of the file path in a record, Linux's PATH_MAX. */
const MAX_FILE_PATH = 4096

interface WireRecord {
  v: 1
  key: CID
  size: number
  pieceSize: number
  content?: CID
  pieces: Array<CID | null>
  url?: string
  file?: string
  updatedAt: number
}

/** Encodes a record that passed findRecordProblem. */
export function encodeRecord (record: ContentRecord): Uint8Array {
  const wire: WireRecord = {
    v: 1,
    key: record.key,
    size: record.size,
    pieceSize: record.pieceSize,
    pieces: record.pieces.map(piece => piece ?? null),
    updatedAt: record.updatedAt
  }
  if (record.content !== undefined) wire.content = record.content
  if (record.url !== undefined) wire.url = record.url
  if (record.file !== undefined) wire.file = record.file
  return dagCbor.encode(wire)
}

/** Decodes and checks a record; throws an Error that names the problem. */
export function decodeRecord (bytes: Uint8Array): ContentRecord {
  if (bytes.byteLength > MAX_RECORD_BYTES) {
    throw new Error(`record is ${bytes.byteLength} bytes, over the limit of ${MAX_RECORD_BYTES}`)
  }

  const wire = dagCbor.decode<Partial<WireRecord> | null>(bytes)
  if (wire == null || typeof wire !== 'object' || wire.v !== 1) {
    throw new Error('record has an unknown version; expected 1')
  }
  if (!Array.isArray(wire.pieces)) throw new Error('record pieces is not a list')

  const record: ContentRecord = {
    key: CID.asCID(wire.key) as CID,
    size: wire.size as number,
    pieceSize: wire.pieceSize as number,
    pieces: wire.pieces.map(piece => piece === null ? undefined : CID.asCID(piece) ?? piece),
    updatedAt: wire.updatedAt as number
  }
  if (wire.content !== undefined) record.content = CID.asCID(wire.content) ?? wire.content
  if (wire.url !== undefined) record.url = wire.url
  if (wire.file !== undefined) record.file = wire.file

  const problem = findRecordProblem(record)
  if (problem !== undefined) throw new Error(problem)
  return record
}

/** Checks every field of a record; returns what is wrong, or undefined when it is valid. */
export function findRecordProblem (record: ContentRecord): string | undefined {
  const { key, size, pieceSize, content, pieces, url, file, updatedAt } = record

  if (!(key instanceof CID) || !(isContentCid(key) || isUrlKey(key))) return 'key is not a content CID or URL key'
  if (!Number.isSafeInteger(size) || size < 0 || size > MAX_CONTENT_SIZE) return `size ${String(size)} is not an integer in 0..${MAX_CONTENT_SIZE}`
  if (!Number.isSafeInteger(pieceSize) || pieceSize < MIN_PIECE_SIZE || pieceSize > MAX_PIECE_SIZE) return `piece size ${String(pieceSize)} is not in ${MIN_PIECE_SIZE}..${MAX_PIECE_SIZE}`

  const count = pieceCount(size, pieceSize)
  if (count > MAX_PIECES) return `${count} pieces are over the limit of ${MAX_PIECES}; choose a larger piece size`
  if (!Array.isArray(pieces)) return 'pieces is not a list'
  if (pieces.length > count) return `pieces lists ${pieces.length} CIDs, more than the ${count} pieces of ${size} bytes in pieces of ${pieceSize}`
  for (const [index, piece] of pieces.entries()) {
    if (piece !== undefined && (!(piece instanceof CID) || !isContentCid(piece))) return `piece ${index} is not a CIDv1(raw, sha2-256)`
  }

  if (content !== undefined) {
    if (!(content instanceof CID) || !isContentCid(content)) return 'content is not a CIDv1(raw, sha2-256)'
    if (isContentCid(key) && !key.equals(content)) return `content ${String(content)} differs from the key ${key.toString()}`
  }

  if (url !== undefined) {
    if (typeof url !== 'string' || !URL.canParse(url)) return 'url is not a valid URL'
    const parsed = new URL(url)
    if (url.includes('?') || url.includes('#') || parsed.username !== '' || parsed.password !== '') return 'url contains a query string, fragment or credentials'
  }

  if (file !== undefined && (typeof file !== 'string' || !isAbsolute(file) || file.includes('\0') || file.length > MAX_FILE_PATH)) {
    return `file ${String(file)} is not an absolute path of at most ${MAX_FILE_PATH} characters`
  }

  if (typeof updatedAt !== 'number' || !Number.isFinite(updatedAt) || updatedAt < 0) return `updatedAt ${String(updatedAt)} is not a time in milliseconds`

  return undefined
}

/** Removes the query string, fragment and credentials from a URL, which may carry signatures or passwords. */
export function stripUrl (url: string): string {
  const parsed = new URL(url)
  parsed.search = ''
  parsed.hash = ''
  parsed.username = ''
  parsed.password = ''
  return parsed.toString()
}
