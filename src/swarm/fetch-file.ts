/**
 * One-shot download of a URL through the swarm into a file.
 */
import { createHash } from 'node:crypto'
import { rm, type FileHandle } from 'node:fs/promises'
import type { CID } from 'multiformats/cid'
import type { Config } from '../config/schema.ts'
import { cidToDigest } from '../content/ids.ts'
import { VerificationError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { ephemeralIdentity } from '../p2p/identity.ts'
import { writeAll } from '../store/atomic-file.ts'
import { FlushAhead } from '../store/flush-ahead.ts'
import { Engine, engineInitFromConfig } from './engine.ts'
import type { Download, DownloadLayout, PieceSink } from './download.ts'
import { pieceOffset } from '../content/pieces.ts'
import { fetchThroughDaemon } from '../daemon/control-client.ts'
import { controlSocketPath } from '../daemon/control-protocol.ts'
import { deliver, openTemp, planOutput, removeStaleTemps, type OutputPlan } from './fetch-output.ts'

export interface FetchOptions {
  /** URL to download (http or https). */
  url: string
  /**
   * Output file, written under a temporary name beside it and renamed after verification. A symbolic
   * link is followed, and a character device or named pipe receives a copy of the verified file.
   */
  output: string
  /** Expected digest `sha256:<hex>`; keys the content and is checked at the end. */
  digest?: string
  /** Headers passed to the origin through the supernode, over the encrypted connection. */
  headers?: Record<string, string>
  /** Abort signal (the CLI wires --timeout and SIGINT to it). */
  signal?: AbortSignal
  /** Called at most a few times per second with progress. */
  onProgress?: (progress: FetchProgress) => void
  /** Called once the file is complete, before the seeding period (config.seedMs) starts. */
  onComplete?: (result: FetchResult) => void
  /** Flags given to this fetch that a local daemon does not take, named in a warning when one serves it. */
  daemonIgnores?: readonly string[]
  /** Called when a local daemon serves the fetch, before any byte arrives. */
  onDaemon?: () => void
}

export interface FetchProgress {
  /** Bytes verified so far. */
  received: number
  /** Content size once known. */
  size?: number
  /** Peers (supernode included) currently sending. */
  peers: number
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
}

export interface FetchResult {
  /** Key of the content (content CID or URL key), as a string. */
  key: string
  /** `sha256:<hex>` of the whole file. */
  digest: string
  size: number
  output: string
  /** Bytes received from supernodes. */
  fromSupernode: number
  /** Bytes received from other peers. */
  fromPeers: number
  /** Bytes fetched straight from the origin (back-to-source). */
  fromOrigin: number
  /** Bytes found in the local piece store. */
  fromLocal: number
  /** Wall time of the download in milliseconds. */
  ms: number
}

/** Interval between progress callbacks, in ms. */
const PROGRESS_MS = 250

/** Downloads `options.url` through the swarm into `options.output`. */
export async function fetchFile (config: Config, logger: Logger, options: FetchOptions): Promise<FetchResult> {
  const started = Date.now()
  const signal = options.signal ?? new AbortController().signal
  const plan = await planOutput(options.output, config.dataDir)
  await removeStaleTemps(plan, logger)

  // A daemon on this host (dfnode proxy) downloads for us, so its node and store serve the swarm.
  const viaDaemon = await fetchViaDaemon(config, logger, options, plan, signal, started)
  if (viaDaemon != null) return viaDaemon

  // An embedded node for the duration, with a fresh identity so that two fetches on one host are two peers.
  const engine = await Engine.create(engineInitFromConfig(config, await ephemeralIdentity(), logger))
  const { temp, target } = plan
  let progressTimer: NodeJS.Timeout | undefined
  let file: FileHandle | undefined
  try {
    // Verified pieces go to their offsets in the plan's temporary file, and the store
    // serves them to other peers from that file: each byte is written to disk once.
    const handle = file = await openTemp(plan)
    const flush = new FlushAhead(handle)
    const written = new Set<number>()
    const sink: PieceSink = {
      path: temp,
      write: async (index, bytes, offset) => {
        await writeAll(handle, bytes, offset, temp)
        flush.wrote(bytes.byteLength)
        written.add(index)
      }
    }
    const download = await engine.open({ url: options.url, headers: options.headers ?? {}, ...(options.digest != null ? { digest: options.digest } : {}), filter: config.filter, sink })
    const onAbort = (): void => { download.abort(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
    signal.addEventListener('abort', onAbort, { once: true })
    if (options.onProgress != null) {
      const report = options.onProgress
      progressTimer = setInterval(() => {
        report({ received: download.received(), ...(download.layout != null ? { size: download.layout.size } : {}), peers: download.activeSources(), fromSupernode: download.stats.fromSupernode, fromPeers: download.stats.fromPeers, fromOrigin: download.stats.fromOrigin })
      }, PROGRESS_MS)
      progressTimer.unref()
    }

    // Pieces that were in the store before this download are copied into the file as well.
    const layout = await download.ready(signal)
    await writePieces(engine, download, handle, temp, flush, layout, signal, written)
    file = undefined
    await handle.close()
    signal.removeEventListener('abort', onAbort)

    // The file takes its name only after the download verified the whole content (download.done).
    const content = download.content
    if (content == null) throw new VerificationError(`download of ${options.url.split('?')[0]} ended without a verified content hash`)
    await deliver(plan, signal)
    // A device keeps no copy, so the temporary file serves the pieces until the end of seeding.
    if (plan.kind === 'file') await keepServingFrom(engine, download.key, temp, target, logger)

    const result: FetchResult = {
      key: download.key.toString(),
      digest: cidToDigest(content),
      size: layout.size,
      output: options.output,
      ...download.stats,
      ms: Date.now() - started
    }
    clearInterval(progressTimer)
    options.onComplete?.(result)

    // Keep serving pieces to other peers for the seeding period.
    if (config.seedMs > 0 && !signal.aborted) await lingerFor(config.seedMs, signal)
    if (plan.kind !== 'file') await removeTemp(engine, temp)
    return result
  } catch (err) {
    await file?.close().catch(() => {})
    await removeTemp(engine, temp)
    throw err
  } finally {
    clearInterval(progressTimer)
    await engine.stop().catch((err: Error) => { logger.warn({ err: err.message }, 'engine stop failed') })
  }
}

/**
 * Lets the store serve the pieces written into the output from its new name, and records the
 * output in the content's record, so that a later fetch with this data dir reads the pieces
 * from it while it is unchanged. The output is complete either way, so a failure here only
 * costs that reuse.
 */
async function keepServingFrom (engine: Engine, key: CID, temp: string, output: string, logger: Logger): Promise<void> {
  try {
    await engine.store.sealRanges(temp, output)
    const record = engine.records.get(key)
    if (record?.content != null) await engine.records.set({ ...record, file: output, updatedAt: Date.now() })
  } catch (err) {
    engine.store.dropRanges(temp)
    engine.store.dropRanges(output)
    logger.warn({ err: (err as Error).message, output }, 'output written, but its pieces will not be served from it')
  }
}

/** Stops serving pieces from a temporary file and deletes it. */
async function removeTemp (engine: Engine, temp: string): Promise<void> {
  engine.store.dropRanges(temp)
  await rm(temp, { force: true })
}

async function fetchViaDaemon (config: Config, logger: Logger, options: FetchOptions, plan: OutputPlan, signal: AbortSignal, started: number): Promise<FetchResult | undefined> {
  const daemon = await fetchThroughDaemon(controlSocketPath(config.dataDir), {
    url: options.url,
    ...(options.digest != null ? { digest: options.digest } : {}),
    ...(options.headers != null ? { headers: options.headers } : {}),
    filter: config.filter
  }, signal)
  if (daemon == null) return undefined
  logger.debug({ socket: controlSocketPath(config.dataDir) }, 'fetching through the local daemon')
  options.onDaemon?.()
  if (options.daemonIgnores != null && options.daemonIgnores.length > 0) {
    logger.warn({ socket: controlSocketPath(config.dataDir) }, `a local daemon uses this data dir and fetches with its own settings: ${options.daemonIgnores.join(', ')} not applied; pass another --data-dir to fetch on its own`)
  }

  try {
    const hash = createHash('sha256')
    const file = await openTemp(plan)
    let received = 0
    try {
      for await (const chunk of daemon.body) {
        hash.update(chunk)
        await writeAll(file, chunk, received, plan.temp)
        received += chunk.byteLength
        options.onProgress?.({ received, size: daemon.size, peers: 0, fromSupernode: 0, fromPeers: 0, fromOrigin: 0 })
      }
      await file.sync()
    } finally {
      await file.close()
    }
    const outcome = daemon.result()
    const digest = `sha256:${hash.digest('hex')}`
    if (received !== daemon.size || digest !== outcome.digest) {
      throw new VerificationError(`file written for ${options.url.split('?')[0]} has ${received} bytes and digest ${digest}, expected ${daemon.size} bytes and ${outcome.digest}`)
    }
    await deliver(plan, signal)
    if (plan.kind !== 'file') await rm(plan.temp, { force: true })
    const result: FetchResult = { ...outcome, digest, output: options.output, ms: Date.now() - started }
    options.onComplete?.(result)
    return result
  } catch (err) {
    await rm(plan.temp, { force: true })
    throw err
  }
}

/**
 * Pieces whose bytes may wait in memory for the disk. Later ones are read back from the store.
 * The output is written at page-cache speed, so a longer queue costs RSS without speeding up.
 */
const MAX_QUEUED_PIECES = 2

/**
 * Writes every piece of a download that is not in `written` into `file` at its offset, as
 * pieces arrive, then syncs it. `written` lists the pieces already in the file.
 */
async function writePieces (engine: Engine, download: Download, file: FileHandle, path: string, flush: FlushAhead, layout: DownloadLayout, signal: AbortSignal, written: Set<number>): Promise<void> {
  let queued = 0
  let chain: Promise<void> = Promise.resolve()
  let failure: Error | undefined

  const enqueue = (index: number, bytes?: Uint8Array): void => {
    if (written.has(index)) return
    written.add(index)
    queued++
    // The download frees a piece's bytes after the listener returns, so the queue keeps a copy.
    const copy = queued <= MAX_QUEUED_PIECES && bytes != null ? Buffer.from(bytes) : undefined
    chain = chain.then(async () => {
      const cid = download.cidOf(index)
      const data = copy ?? (cid != null ? await engine.store.get(cid) : undefined)
      if (data == null) throw new VerificationError(`piece ${index} of ${download.key.toString()} is missing from the store`)
      await writeAll(file, data, pieceOffset(index, layout.pieceSize), path)
      flush.wrote(data.byteLength)
    }).catch((err: Error) => { failure ??= err }).finally(() => { queued-- })
  }

  // Pieces stored from now on, then those stored before.
  const unsubscribe = download.onPiece(enqueue)
  try {
    for (let index = 0; index < layout.count; index++) if (download.hasPiece(index)) enqueue(index)
    await raceAbort(download.done, signal)
    await chain
  } finally {
    unsubscribe()
  }
  if (failure != null) throw failure
  if (written.size !== layout.count) throw new VerificationError(`wrote ${written.size} of ${layout.count} pieces of ${download.key.toString()}`)
  await flush.sync()
}

async function raceAbort<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
  })
}

async function lingerFor (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
  })
}
