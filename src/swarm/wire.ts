/**
 * Wire messages of dfnode's own protocols, DAG-CBOR encoded in
 * length-prefixed frames. Every decoder checks types and bounds, because the
 * bytes come from other peers.
 */
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { ProtocolError } from '../errors.ts'
import { MAX_PIECES } from '../content/pieces.ts'

/** Protocol that requests a supernode to seed a URL and streams back its piece CIDs. */
export const SEED_PROTOCOL = '/dfnode/seed/1.0.0'

/** Protocol that exchanges bitfields and piece bytes between peers. */
export const PIECE_PROTOCOL = '/dfnode/piece/1.0.0'

/** Interval of keepalive events on a seed stream while the supernode has nothing new, in ms. */
export const SEED_KEEPALIVE_MS = 15_000

/** A seed stream silent for this long is taken as lost, in ms. */
export const SEED_IDLE_MS = 4 * SEED_KEEPALIVE_MS

/** Largest control frame: a bitfield or a batch of CIDs fits well below it. */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024

/** Size of the data frames a piece is sent in. */
export const CHUNK_BYTES = 256 * 1024

/** Largest number of request headers forwarded to the origin, and their total size. */
export const MAX_HEADERS = 64
export const MAX_HEADER_BYTES = 64 * 1024

/** Largest URL accepted in a seed request. */
export const MAX_URL_BYTES = 16 * 1024

export interface SeedRequest {
  t: 'seed'
  url: string
  headers: Record<string, string>
  digest?: string
  filter?: string[]
}

export type SeedEvent =
  | { t: 'meta', key: CID, size: number, pieceSize: number, contentType?: string }
  | { t: 'pieces', from: number, cids: CID[] }
  | { t: 'done', content: CID }
  | { t: 'error', code: string, message: string, status?: number }
  | { t: 'alive' }

export type PieceRequest =
  | { t: 'have', key: CID }
  | { t: 'get', key: CID, i: number }
  // Withdraws a 'get' sent earlier on the same stream. A request not yet served gets 'cancelled';
  // a piece being sent ends early with an empty data frame.
  | { t: 'cancel', key: CID, i: number }
  // Asks for a ticket to a direct link (src/swarm/direct-link.ts).
  | { t: 'direct' }

export type PieceResponse =
  | { t: 'have', bits?: Uint8Array, size?: number, pieceSize?: number, manifest?: Uint8Array }
  | { t: 'piece', i: number, n: number }
  | { t: 'missing', i: number }
  | { t: 'busy', i: number }
  | { t: 'cancelled', i: number }
  // A ticket, or no fields when the holder offers no direct link.
  | { t: 'direct', port?: number, id?: string, psk?: Uint8Array }

export interface HaveMessage {
  /** Indexes of pieces the sender has verified since its last message. */
  i: number[]
  /** Sender's listen multiaddrs, so receivers can dial it without a DHT lookup. */
  addrs?: string[]
}

/** Encodes a frame. */
export function encodeFrame (message: object): Uint8Array {
  return dagCbor.encode(stripUndefined(message))
}

function stripUndefined (message: object): object {
  const out: Record<string, unknown> = {}
  for (const [name, value] of Object.entries(message)) if (value !== undefined) out[name] = value
  return out
}

function decodeMap (bytes: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = dagCbor.decode(bytes)
  } catch (err) {
    throw new ProtocolError(`invalid ${what} frame: ${(err as Error).message}`, { cause: err })
  }
  if (value == null || typeof value !== 'object' || Array.isArray(value)) throw new ProtocolError(`invalid ${what} frame: not a map`)
  return value as Record<string, unknown>
}

function isIndex (value: unknown, limit = MAX_PIECES): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < limit
}

function isSize (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function asCid (value: unknown, what: string): CID {
  const cid = CID.asCID(value)
  if (cid == null) throw new ProtocolError(`invalid ${what}: not a CID`)
  return cid
}

/** Decodes a seed request. */
export function decodeSeedRequest (bytes: Uint8Array): SeedRequest {
  const map = decodeMap(bytes, 'seed request')
  if (map.t !== 'seed') throw new ProtocolError('invalid seed request: wrong type')
  if (typeof map.url !== 'string' || map.url.length > MAX_URL_BYTES) throw new ProtocolError('invalid seed request: url missing or too long')
  const headers: Record<string, string> = {}
  if (map.headers != null) {
    if (typeof map.headers !== 'object' || Array.isArray(map.headers)) throw new ProtocolError('invalid seed request: headers not a map')
    const entries = Object.entries(map.headers as Record<string, unknown>)
    let total = 0
    if (entries.length > MAX_HEADERS) throw new ProtocolError(`invalid seed request: more than ${MAX_HEADERS} headers`)
    for (const [name, value] of entries) {
      if (typeof value !== 'string') throw new ProtocolError(`invalid seed request: header ${name} not a string`)
      total += name.length + value.length
      headers[name] = value
    }
    if (total > MAX_HEADER_BYTES) throw new ProtocolError(`invalid seed request: headers over ${MAX_HEADER_BYTES} bytes`)
  }
  const request: SeedRequest = { t: 'seed', url: map.url, headers }
  if (map.digest != null) {
    if (typeof map.digest !== 'string') throw new ProtocolError('invalid seed request: digest not a string')
    request.digest = map.digest
  }
  if (map.filter != null) {
    if (!Array.isArray(map.filter) || map.filter.length > 256 || !map.filter.every(name => typeof name === 'string')) throw new ProtocolError('invalid seed request: filter not a list of names')
    request.filter = map.filter as string[]
  }
  return request
}

/** Decodes one event of a seed stream. */
export function decodeSeedEvent (bytes: Uint8Array): SeedEvent {
  const map = decodeMap(bytes, 'seed event')
  switch (map.t) {
    case 'meta': {
      if (!isSize(map.size) || !isSize(map.pieceSize) || map.pieceSize === 0) throw new ProtocolError('invalid seed meta: bad size or piece size')
      const event: SeedEvent = { t: 'meta', key: asCid(map.key, 'seed meta key'), size: map.size, pieceSize: map.pieceSize }
      if (typeof map.contentType === 'string') event.contentType = map.contentType.slice(0, 256)
      return event
    }
    case 'pieces': {
      if (!isIndex(map.from) || !Array.isArray(map.cids) || map.cids.length > MAX_PIECES) throw new ProtocolError('invalid seed pieces: bad index or list')
      return { t: 'pieces', from: map.from, cids: map.cids.map(cid => asCid(cid, 'piece CID')) }
    }
    case 'done':
      return { t: 'done', content: asCid(map.content, 'content CID') }
    case 'alive':
      return { t: 'alive' }
    case 'error': {
      const event: SeedEvent = { t: 'error', code: String(map.code ?? 'ERR_UNKNOWN').slice(0, 64), message: String(map.message ?? '').slice(0, 4096) }
      if (typeof map.status === 'number' && Number.isInteger(map.status)) event.status = map.status
      return event
    }
    default:
      throw new ProtocolError('invalid seed event: unknown type')
  }
}

/** Decodes a piece-protocol request. */
export function decodePieceRequest (bytes: Uint8Array): PieceRequest {
  const map = decodeMap(bytes, 'piece request')
  if (map.t === 'direct') return { t: 'direct' }
  const key = asCid(map.key, 'piece request key')
  if (map.t === 'have') return { t: 'have', key }
  if (map.t === 'get' && isIndex(map.i)) return { t: 'get', key, i: map.i }
  if (map.t === 'cancel' && isIndex(map.i)) return { t: 'cancel', key, i: map.i }
  throw new ProtocolError('invalid piece request')
}

/** Decodes a piece-protocol response header. */
export function decodePieceResponse (bytes: Uint8Array): PieceResponse {
  const map = decodeMap(bytes, 'piece response')
  switch (map.t) {
    case 'have': {
      const response: PieceResponse = { t: 'have' }
      if (map.bits instanceof Uint8Array) response.bits = map.bits
      if (isSize(map.size)) response.size = map.size
      if (isSize(map.pieceSize)) response.pieceSize = map.pieceSize
      if (map.manifest instanceof Uint8Array) response.manifest = map.manifest
      return response
    }
    case 'piece':
      if (isIndex(map.i) && isSize(map.n)) return { t: 'piece', i: map.i, n: map.n }
      break
    case 'missing':
      if (isIndex(map.i)) return { t: 'missing', i: map.i }
      break
    case 'busy':
      if (isIndex(map.i)) return { t: 'busy', i: map.i }
      break
    case 'cancelled':
      if (isIndex(map.i)) return { t: 'cancelled', i: map.i }
      break
    case 'direct':
      if (map.port == null && map.id == null && map.psk == null) return { t: 'direct' }
      if (isIndex(map.port, 65536) && map.port > 0 && typeof map.id === 'string' && map.id.length <= 128 && map.psk instanceof Uint8Array && map.psk.byteLength === 32) {
        return { t: 'direct', port: map.port, id: map.id, psk: map.psk }
      }
      break
  }
  throw new ProtocolError('invalid piece response')
}

/** Decodes a gossip HAVE message. */
export function decodeHave (bytes: Uint8Array): HaveMessage {
  const map = decodeMap(bytes, 'have message')
  if (!Array.isArray(map.i) || map.i.length > MAX_PIECES || !map.i.every(index => isIndex(index))) throw new ProtocolError('invalid have message: bad index list')
  const message: HaveMessage = { i: map.i as number[] }
  if (Array.isArray(map.addrs) && map.addrs.length <= 32 && map.addrs.every(address => typeof address === 'string' && address.length < 512)) message.addrs = map.addrs as string[]
  return message
}

/** Bitfield helpers: bit i set when piece i is held. */
export function encodeBits (held: (index: number) => boolean, count: number): Uint8Array {
  const bits = new Uint8Array(Math.ceil(count / 8))
  for (let index = 0; index < count; index++) if (held(index)) bits[index >> 3]! |= 0x80 >> (index & 7)
  return bits
}

export function bitIsSet (bits: Uint8Array, index: number): boolean {
  const byte = bits[index >> 3]
  return byte != null && (byte & (0x80 >> (index & 7))) !== 0
}
