/**
 * Freeing of received piece buffers once the download is done with them. Each
 * piece arrives in a buffer of its own (up to 4 MiB by default). V8 frees such a
 * buffer only in a full garbage collection, which it starts once about 64 MiB
 * of them have piled up, so dead pieces held tens of MiB of RSS. Detaching
 * the buffer frees its memory at once. A view of a detached buffer has length
 * 0, so a use after the release shows up as an empty piece, never as other bytes.
 */

const owned = new WeakSet<Uint8Array>()

/** Marks `bytes` as a piece buffer that only the download uses, if it spans its whole ArrayBuffer. */
export function ownPiece (bytes: Uint8Array): void {
  const buffer = bytes.buffer
  if (buffer instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === buffer.byteLength) owned.add(bytes)
}

/** Frees the memory of a buffer marked with `ownPiece`, and does nothing for any other. */
export function releasePiece (bytes: Uint8Array): void {
  if (!owned.delete(bytes)) return
  ;(bytes.buffer as ArrayBuffer).transfer(0)
}
