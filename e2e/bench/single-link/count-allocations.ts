/**
 * Counts large buffer allocations (16 KiB and more) by call site in a Node
 * process and writes the top sites to stderr when it exits. Load it before the
 * program:
 *
 *   node --import ./e2e/bench/single-link/count-allocations.ts bin/dfnode fetch …
 *
 * It wraps `new Uint8Array(length)`, Buffer.alloc*, Buffer.concat, the update()
 * of Cipheriv and Decipheriv, and FileHandle.readFile, so it counts the
 * allocations that move file bytes in dfnode and its libp2p stack. It captures
 * a stack per large allocation and slows the process down: use it to count
 * bytes, never to time anything.
 */
import { Cipheriv, Decipheriv } from 'node:crypto'
import { writeSync } from 'node:fs'
import { open } from 'node:fs/promises'

const MIN_BYTES = 16 * 1024
const FRAMES = 4
const TOP_SITES = 14

interface SiteCount {
  count: number
  bytes: number
}

const sites = new Map<string, SiteCount>()

function callSite (): string {
  const lines = (new Error().stack ?? '').split('\n').slice(4, 4 + FRAMES)
  return lines.map(line => line.trim().replace(/^at /, '').replace(/file:\/\/\S*?node_modules\//g, '').replace(/file:\/\/\S*?\/(src|bin)\//g, '$1/')).join(' < ')
}

function record (kind: string, bytes: number): void {
  if (bytes < MIN_BYTES) return
  const key = `${kind} | ${callSite()}`
  const entry = sites.get(key) ?? { count: 0, bytes: 0 }
  entry.count++
  entry.bytes += bytes
  sites.set(key, entry)
}

// new Uint8Array(length): the only constructor form that allocates a fresh buffer.
globalThis.Uint8Array = new Proxy(Uint8Array, {
  construct (target, args: unknown[], newTarget) {
    if (typeof args[0] === 'number') record('new Uint8Array', args[0])
    return Reflect.construct(target, args, newTarget) as object
  }
})

for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
  const original = Buffer[name] as (size: number, ...rest: unknown[]) => Buffer
  const wrapped = function (this: typeof Buffer, size: number, ...rest: unknown[]): Buffer {
    record(`Buffer.${name}`, size)
    return original.call(this, size, ...rest)
  }
  Object.assign(Buffer, { [name]: wrapped })
}

const originalConcat = Buffer.concat
Object.assign(Buffer, {
  concat (list: readonly Uint8Array[], totalLength?: number): Buffer {
    const result = originalConcat.call(Buffer, list, totalLength)
    record('Buffer.concat', result.byteLength)
    return result
  }
})

for (const cipher of [Cipheriv, Decipheriv]) {
  const prototype = cipher.prototype as { update: (...args: unknown[]) => Buffer }
  const originalUpdate = prototype.update
  prototype.update = function (this: unknown, ...args: unknown[]): Buffer {
    const result = originalUpdate.apply(this, args)
    record(`${cipher.name}.update`, result.byteLength)
    return result
  }
}

// FileHandle has no exported class, so patch the prototype of a handle.
const probe = await open('/dev/null')
const fileHandlePrototype = Object.getPrototypeOf(probe) as { readFile: (...args: unknown[]) => Promise<Buffer | string> }
await probe.close()
const originalReadFile = fileHandlePrototype.readFile
fileHandlePrototype.readFile = async function (this: unknown, ...args: unknown[]): Promise<Buffer | string> {
  const result = await originalReadFile.apply(this, args)
  record('FileHandle.readFile', typeof result === 'string' ? Buffer.byteLength(result) : result.byteLength)
  return result
}

process.on('exit', () => {
  // FileHandle.readFile allocates through Buffer.allocUnsafeSlow, so its bytes appear twice; the total counts them once.
  const total = [...sites].filter(([key]) => !key.startsWith('FileHandle.readFile')).reduce((sum, [, entry]) => sum + entry.bytes, 0)
  const lines = [`allocations of ${MIN_BYTES / 1024} KiB or more: ${(total / 2 ** 20).toFixed(0)} MiB in total (pid ${process.pid})`]
  for (const [key, entry] of [...sites].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, TOP_SITES)) {
    lines.push(`  ${(entry.bytes / 2 ** 20).toFixed(0)} MiB in ${entry.count} calls: ${key}`)
  }
  writeSync(2, lines.join('\n') + '\n')
})
