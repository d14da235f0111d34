/**
 * Reading a content's bytes in order while its download runs: the reader of a
 * proxy response or of the control socket.
 */
import { pieceAt, pieceLength, pieceOffset } from '../content/pieces.ts'
import { StorageError } from '../errors.ts'
import type { PieceStore } from '../store/piece-store.ts'
import type { Download, DownloadLayout } from './download.ts'

/** Bytes read from the store at a time, so memory stays at one part per reader. */
const READ_PART_BYTES = 1024 * 1024

/**
 * Yields bytes [start, end) of a content in order, as verified pieces arrive.
 * A piece matches its CID when it arrives, but CIDs from a peer's manifest are
 * proven only by the content hash. So the last part waits for `Download.verified`,
 * and a reader never gets a range that ends normally with bytes that fail it.
 *
 * Parts read from disk share one buffer: a part is valid only until the next one is asked
 * for. A consumer that writes a part to a socket waits for the write's callback first.
 */
export async function * readRange (download: Download, store: PieceStore, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const layout = await download.ready(signal)
  if (start >= end) {
    await download.verified(signal)
    return
  }
  const unhold = download.hold()
  try {
    yield * readPieces(download, store, layout, start, end, signal)
  } finally {
    unhold()
  }
}

/** Yields bytes [start, end) from the pieces that contain them; `start` is below `end`. */
async function * readPieces (download: Download, store: PieceStore, layout: DownloadLayout, start: number, end: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const first = pieceAt(start, layout.pieceSize)
  const last = pieceAt(end - 1, layout.pieceSize)
  // Allocated at the first read, so a reader that waits for its first piece takes no memory.
  let buffer: Buffer | undefined
  for (let index = first; index <= last; index++) {
    download.setCursor(index)
    await download.waitPiece(index, signal)
    const cid = download.cidOf(index)
    const piece = cid != null ? await store.openForUpload(cid, signal != null ? { signal } : {}) : undefined
    if (piece == null) throw new StorageError(`piece ${index} of ${download.key.toString()} is missing from the store: another process may have removed it from the data dir; request the content again`)
    try {
      const offset = pieceOffset(index, layout.pieceSize)
      const from = Math.max(start, offset) - offset
      const to = Math.min(end, offset + pieceLength(index, layout.size, layout.pieceSize)) - offset
      for (let at = from; at < to; at += READ_PART_BYTES) {
        buffer ??= Buffer.allocUnsafe(Math.min(READ_PART_BYTES, end - start))
        const part = await piece.read(at, Math.min(READ_PART_BYTES, to - at), buffer)
        if (index === last && at + READ_PART_BYTES >= to) await download.verified(signal)
        yield part
      }
    } finally {
      await piece.close()
    }
  }
}
