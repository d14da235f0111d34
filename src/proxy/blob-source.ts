/**
 * The seam between the proxy and whatever supplies blob bytes: the swarm in
 * production, the origin itself in `OriginBlobSource`.
 */

/** A blob the proxy wants to serve, with what is needed to reach its origin. */
export interface BlobRequest {
  /** Content digest `sha256:<hex>`, already validated. */
  digest: string
  /** Upstream URL the client asked for: a registry blob URL or a storage URL. */
  url: string
  /** Headers that reach the origin, Authorization included. */
  headers: Record<string, string>
  signal?: AbortSignal
}

/** An open blob. Every handle returned by `open` must be closed. */
export interface BlobHandle {
  /** Size of the blob in bytes. */
  size: number
  /** True when every byte is already stored on this host, so nothing is downloaded. */
  local?: boolean
  /**
   * Yields bytes [start, end) in order as verified pieces arrive; resumes from
   * other sources on its own. Throws VerificationError when bytes fail their hash.
   * A chunk is valid only until the next one is asked for, since a source may read
   * every chunk into one buffer.
   */
  read (start: number, end: number, signal?: AbortSignal): AsyncIterable<Uint8Array>
  close (): void
}

/** Supplier of blobs by digest. Concurrent opens of one digest share one download. */
export interface BlobSource {
  open (request: BlobRequest): Promise<BlobHandle>
}
