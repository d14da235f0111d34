/**
 * The proxy's BlobSource on top of the engine: blobs come from the swarm,
 * concurrent requests for one digest share one download.
 */
import type { BlobHandle, BlobRequest, BlobSource } from '../proxy/blob-source.ts'
import type { Engine } from './engine.ts'

export class SwarmBlobSource implements BlobSource {
  private readonly engine: Engine

  constructor (engine: Engine) {
    this.engine = engine
  }

  async open (request: BlobRequest): Promise<BlobHandle> {
    const download = await this.engine.open({ url: request.url, headers: request.headers, digest: request.digest })
    // Responses stream blobs from their start. A Range request moves the reader when it reads.
    download.expectReader()
    const layout = await download.ready(request.signal)
    // An empty blob gets its headers, which declare it complete, only after the content hash.
    if (layout.size === 0) await download.verified(request.signal)
    const engine = this.engine
    return {
      size: layout.size,
      local: download.stats.fromLocal === layout.size,
      read: (start: number, end: number, signal?: AbortSignal) => engine.readRange(download, start, end, signal),
      close: () => {}
    }
  }
}
