/**
 * Summarizes a V8 CPU profile (`node --cpu-prof`): self time by function and
 * by layer (hashing, noise, yamux, length-prefixed framing, disk, GC, idle…),
 * optionally only for samples inside a time window.
 *
 *   node e2e/bench/single-link/profile-summary.ts FILE.cpuprofile [--from US] [--to US] [--top N] [--layer NAME]
 *
 * --from and --to are on the profile's clock: microseconds of CLOCK_MONOTONIC,
 * the clock of process.hrtime() in any process on the machine.
 *
 * A V8 profile covers the main JavaScript thread only. Work on libuv's thread
 * pool (file reads and writes, asynchronous hashing) and on V8's helper
 * threads (concurrent GC) is not in it. Only the time that the main thread
 * spends handing work to them is.
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
  columnNumber: number
}

interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}

/** The JSON that `node --cpu-prof` writes. */
export interface CpuProfile {
  nodes: ProfileNode[]
  /** µs, CLOCK_MONOTONIC. */
  startTime: number
  endTime: number
  samples: number[]
  /** µs between consecutive samples; the first is from startTime. */
  timeDeltas: number[]
}

/** Layers that a sample is charged to, in the order of the report. */
export const LAYERS = [
  'hashing (sha-256)',
  'noise (chacha20-poly1305)',
  'yamux',
  'length-prefixed framing',
  'libp2p streams',
  'socket I/O',
  'disk I/O (fs calls)',
  'dfnode (downloader, store, server)',
  'DAG-CBOR',
  'logging',
  'other libp2p (DHT, gossipsub, identify)',
  'promises and timers',
  'start-up (module loading, type stripping)',
  'garbage collector',
  'V8 and native outside JS',
  'idle',
  'other'
] as const

export type Layer = typeof LAYERS[number]

/**
 * Rules from a call frame to a layer, tried in order. Frames of generic helpers
 * (byte lists, Buffer methods, V8 builtins without a URL) match none, so their
 * time goes to the nearest caller that does match.
 */
const RULES: Array<{ layer: Layer, test: (frame: CallFrame) => boolean }> = [
  { layer: 'garbage collector', test: frame => frame.functionName === '(garbage collector)' },
  { layer: 'idle', test: frame => frame.functionName === '(idle)' },
  { layer: 'V8 and native outside JS', test: frame => frame.functionName === '(program)' },
  { layer: 'start-up (module loading, type stripping)', test: frame => frame.url.startsWith('node:internal/modules') || frame.url.includes('amaro') },
  { layer: 'hashing (sha-256)', test: frame => frame.url === 'node:internal/crypto/hash' || frame.url.includes('multiformats/dist/src/hashes/') || frame.url.includes('as-sha256') },
  { layer: 'noise (chacha20-poly1305)', test: frame => frame.url.includes('libp2p-noise') || frame.url.includes('as-chacha20poly1305') || frame.url === 'node:internal/crypto/cipher' || frame.url.includes('@noble/ciphers') },
  { layer: 'yamux', test: frame => frame.url.includes('@libp2p/yamux') },
  { layer: 'length-prefixed framing', test: frame => frame.url.includes('@libp2p/utils/dist/src/length-prefixed') || frame.url.includes('@libp2p/utils/dist/src/stream-utils') || frame.url.includes('uint8-varint') || frame.url.includes('it-length-prefixed') || frame.url.endsWith('/src/swarm/frames.ts') },
  { layer: 'libp2p streams', test: frame => frame.url.includes('@libp2p/utils/dist/src/abstract-') || frame.url.includes('@libp2p/utils/dist/src/message-queue') || frame.url.includes('@libp2p/utils/dist/src/queue') },
  { layer: 'socket I/O', test: frame => frame.url.includes('@libp2p/tcp') || frame.url === 'node:net' || frame.url === 'node:internal/stream_base_commons' || frame.url === 'node:internal/net' },
  { layer: 'disk I/O (fs calls)', test: frame => frame.url.startsWith('node:internal/fs') || frame.url === 'node:fs' || frame.url === 'node:fs/promises' },
  { layer: 'DAG-CBOR', test: frame => frame.url.includes('@ipld/dag-cbor') || frame.url.includes('/cborg/') },
  { layer: 'logging', test: frame => frame.url.includes('/pino') || frame.url.includes('sonic-boom') },
  { layer: 'dfnode (downloader, store, server)', test: isProjectFrame },
  { layer: 'other libp2p (DHT, gossipsub, identify)', test: frame => /^(libp2p|@libp2p\/|@chainsafe\/|@multiformats\/|it-|p-queue|protons-runtime|main-event)/.test(packageOf(frame.url)) },
  { layer: 'promises and timers', test: frame => frame.url === 'node:internal/process/task_queues' || frame.url === 'node:internal/timers' || frame.url === 'node:internal/process/promises' }
]

/** Returns the npm package of a script URL (after its last node_modules/), or '' outside node_modules. */
function packageOf (url: string): string {
  const at = url.lastIndexOf('node_modules/')
  if (at < 0) return ''
  const parts = url.slice(at + 'node_modules/'.length).split('/')
  return parts[0]?.startsWith('@') === true ? `${parts[0]}/${parts[1] ?? ''}` : parts[0] ?? ''
}

function layerOfFrame (frame: CallFrame): Layer | undefined {
  return RULES.find(rule => rule.test(frame))?.layer
}

export interface FunctionTime {
  /** Layer of the function's own frame, or of its nearest matching caller. */
  layer?: Layer
  functionName: string
  /** Script URL shortened to the package or project path, with the 1-based line. */
  location: string
  selfMs: number
}

export interface ProfileSummary {
  /** Wall time covered by the counted samples, in ms. */
  windowMs: number
  samples: number
  /** Self time charged to each layer, in ms. */
  layers: Map<Layer, number>
  /** Functions by self time, largest first. */
  functions: FunctionTime[]
  /**
   * Project functions (src/, bin/) by inclusive time: samples with the function anywhere on the
   * stack, largest first. After an await, a stack contains only the code since the await, so this
   * is the synchronous share of a function's work.
   */
  projectInclusive: FunctionTime[]
}

/** Summarizes the samples of `profile` whose time lies in [fromMicros, toMicros]. */
export function summarizeProfile (profile: CpuProfile, fromMicros = -Infinity, toMicros = Infinity): ProfileSummary {
  const byId = new Map<number, ProfileNode>()
  const parentOf = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parentOf.set(child, node.id)
  }

  // A node's layer is its own frame's, else its nearest matching caller's.
  const layerCache = new Map<number, Layer>()
  const layerOf = (id: number): Layer => {
    const cached = layerCache.get(id)
    if (cached != null) return cached
    const node = byId.get(id)
    let layer: Layer = 'other'
    if (node != null) {
      const parent = parentOf.get(id)
      layer = layerOfFrame(node.callFrame) ?? (parent != null ? layerOf(parent) : 'other')
    }
    layerCache.set(id, layer)
    return layer
  }

  // Each sample lasts until the next one; the last one until endTime.
  const layers = new Map<Layer, number>(LAYERS.map(layer => [layer, 0]))
  const selfById = new Map<number, number>()
  let time = profile.startTime
  let counted = 0
  let windowMicros = 0
  for (let index = 0; index < profile.samples.length; index++) {
    time += profile.timeDeltas[index] ?? 0
    const next = index + 1 < profile.samples.length ? time + (profile.timeDeltas[index + 1] ?? 0) : profile.endTime
    if (time < fromMicros || time > toMicros) continue
    const id = profile.samples[index]!
    const micros = Math.max(0, next - time)
    counted++
    windowMicros += micros
    selfById.set(id, (selfById.get(id) ?? 0) + micros)
    const layer = layerOf(id)
    layers.set(layer, (layers.get(layer) ?? 0) + micros / 1000)
  }

  // Merge nodes of the same function (one per call path) into one row.
  const byFunction = new Map<string, FunctionTime>()
  const inclusive = new Map<string, FunctionTime>()
  for (const [id, micros] of selfById) {
    const frame = byId.get(id)?.callFrame
    if (frame == null) continue
    const entry = functionEntry(byFunction, frame)
    entry.selfMs += micros / 1000
    entry.layer ??= layerOf(id)

    // Charge the sample once to every project function on its stack.
    const seen = new Set<string>()
    for (let at: number | undefined = id; at != null; at = parentOf.get(at)) {
      const caller = byId.get(at)?.callFrame
      if (caller == null || !isProjectFrame(caller)) continue
      const key = functionKey(caller)
      if (seen.has(key)) continue
      seen.add(key)
      functionEntry(inclusive, caller).selfMs += micros / 1000
    }
  }
  const functions = [...byFunction.values()].sort((a, b) => b.selfMs - a.selfMs)
  const projectInclusive = [...inclusive.values()].sort((a, b) => b.selfMs - a.selfMs)
  return { windowMs: windowMicros / 1000, samples: counted, layers, functions, projectInclusive }
}

function isProjectFrame (frame: CallFrame): boolean {
  return /\/(src|bin)\/[^/]+/.test(frame.url) && !frame.url.includes('node_modules')
}

function functionKey (frame: CallFrame): string {
  return `${frame.functionName}@${frame.url}:${frame.lineNumber}`
}

function functionEntry (table: Map<string, FunctionTime>, frame: CallFrame): FunctionTime {
  const key = functionKey(frame)
  let entry = table.get(key)
  if (entry == null) {
    const location = frame.url === '' ? '' : `${shortUrl(frame.url)}:${frame.lineNumber + 1}`
    entry = { functionName: frame.functionName === '' ? '(anonymous)' : frame.functionName, location, selfMs: 0 }
    table.set(key, entry)
  }
  return entry
}

/** Shortens a script URL to `package/path` inside node_modules, or to the path below the project. */
export function shortUrl (url: string): string {
  const inModules = url.lastIndexOf('node_modules/')
  if (inModules >= 0) return url.slice(inModules + 'node_modules/'.length).replace('/dist/src/', '/')
  const project = /\/((?:src|bin|e2e|test)\/.*)$/.exec(url)
  return project?.[1] ?? url.replace(/^file:\/\//, '')
}

/** Renders a summary as markdown tables: layers, the top functions (of one layer when `layer` is given), then dfnode functions by inclusive time. */
export function renderSummary (title: string, summary: ProfileSummary, top = 25, layer?: string): string {
  const lines = [`### ${title}`, '', `${summary.samples} samples over ${(summary.windowMs / 1000).toFixed(2)} s of the main thread.`, '']
  lines.push('| layer | self ms | share |', '| --- | ---: | ---: |')
  for (const layer of LAYERS) {
    const ms = summary.layers.get(layer) ?? 0
    if (ms < 0.5) continue
    lines.push(`| ${layer} | ${ms.toFixed(0)} | ${percent(ms, summary.windowMs)} |`)
  }
  lines.push('', '| function | location | self ms | share |', '| --- | --- | ---: | ---: |')
  const functions = layer == null ? summary.functions : summary.functions.filter(entry => entry.layer?.startsWith(layer) === true)
  for (const entry of functions.slice(0, top)) {
    lines.push(`| ${entry.functionName} | ${entry.location === '' ? '(native)' : entry.location} | ${entry.selfMs.toFixed(0)} | ${percent(entry.selfMs, summary.windowMs)} |`)
  }
  lines.push('', 'dfnode functions by inclusive time (synchronous part: the stack after an await contains only the code since it):', '')
  lines.push('| function | location | inclusive ms | share |', '| --- | --- | ---: | ---: |')
  for (const entry of summary.projectInclusive.slice(0, Math.min(top, 15))) {
    lines.push(`| ${entry.functionName} | ${entry.location} | ${entry.selfMs.toFixed(0)} | ${percent(entry.selfMs, summary.windowMs)} |`)
  }
  return lines.join('\n') + '\n'
}

function percent (part: number, whole: number): string {
  return whole > 0 ? `${(100 * part / whole).toFixed(1)} %` : '—'
}

/** Reads a .cpuprofile file. */
export async function readProfile (path: string): Promise<CpuProfile> {
  const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile
  if (!Array.isArray(profile.nodes) || !Array.isArray(profile.samples) || !Array.isArray(profile.timeDeltas)) {
    throw new Error(`${path} is not a V8 CPU profile: expected nodes, samples and timeDeltas arrays`)
  }
  return profile
}

async function main (): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      from: { type: 'string' },
      to: { type: 'string' },
      top: { type: 'string', default: '25' },
      layer: { type: 'string' }
    }
  })
  const path = positionals[0]
  if (path == null) throw new Error('missing profile: usage: profile-summary.ts FILE.cpuprofile [--from US] [--to US] [--top N] [--layer NAME]')
  const profile = await readProfile(path)
  const summary = summarizeProfile(profile, values.from != null ? Number(values.from) : -Infinity, values.to != null ? Number(values.to) : Infinity)
  process.stdout.write(renderSummary(path, summary, Number(values.top), values.layer))
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`profile-summary: ${(err as Error).message}\n`)
    process.exit(1)
  })
}
