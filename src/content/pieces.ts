/**
 * Piece arithmetic. A content of `size` bytes is cut into pieces of
 * `pieceSize` bytes; the last piece is the remainder. A 0-byte content has no pieces.
 */

/** Piece size of contents of 64 MiB and more when none is configured: 4 MiB (see docs/architecture.md). */
export const DEFAULT_PIECE_SIZE = 4 * 1024 * 1024

/** Largest number of pieces a content may have; larger contents get bigger pieces. */
export const MAX_PIECES = 65_536

/** Smallest and largest piece sizes accepted from the wire. */
export const MIN_PIECE_SIZE = 64 * 1024
export const MAX_PIECE_SIZE = 64 * 1024 * 1024

/** Piece count below which a content gets smaller pieces, down to SMALL_PIECE_SIZE. */
export const MIN_PIECES_PER_CONTENT = 16

/** Smallest piece size that a small content is cut into. */
export const SMALL_PIECE_SIZE = 1024 * 1024

/**
 * Chooses the piece size for a content. Without a configured size, DEFAULT_PIECE_SIZE is halved
 * while the content has fewer than MIN_PIECES_PER_CONTENT pieces, down to SMALL_PIECE_SIZE.
 * Either size is then doubled until the piece count fits MAX_PIECES.
 */
export function choosePieceSize (size: number, configured?: number): number {
  let pieceSize = configured ?? DEFAULT_PIECE_SIZE
  if (configured == null) {
    while (pieceSize / 2 >= SMALL_PIECE_SIZE && size < pieceSize * MIN_PIECES_PER_CONTENT) pieceSize /= 2
  }
  while (Math.ceil(size / pieceSize) > MAX_PIECES && pieceSize < MAX_PIECE_SIZE) pieceSize *= 2
  return pieceSize
}

/** Returns the number of pieces of a content. */
export function pieceCount (size: number, pieceSize: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid content size ${size}`)
  if (!Number.isSafeInteger(pieceSize) || pieceSize <= 0) throw new RangeError(`invalid piece size ${pieceSize}`)
  return Math.ceil(size / pieceSize)
}

/** Returns the byte offset of piece `index`. */
export function pieceOffset (index: number, pieceSize: number): number {
  return index * pieceSize
}

/** Returns the length of piece `index`, throwing RangeError when it is out of range. */
export function pieceLength (index: number, size: number, pieceSize: number): number {
  const count = pieceCount(size, pieceSize)
  if (!Number.isInteger(index) || index < 0 || index >= count) {
    throw new RangeError(`piece index ${index} out of range 0..${count - 1}`)
  }
  return index === count - 1 ? size - index * pieceSize : pieceSize
}

/** Returns the index of the piece holding byte `offset`. */
export function pieceAt (offset: number, pieceSize: number): number {
  return Math.floor(offset / pieceSize)
}
