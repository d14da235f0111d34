/**
 * dfnode through its command line: a supernode on the supernode host that
 * may fetch from the origin, and `dfnode fetch` on every peer. A peer is
 * complete when it prints its JSON result line; it keeps serving others
 * until the harness stops it.
 */
import { access, constants, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { BenchSystem } from './system.ts'
import { dfnodeArgv } from '../../../../test/helpers/dfnode-process.ts'

const SUPERNODE_PORT = 8002
const SUPERNODE_READY_MS = 60_000

/** Fields of the JSON line `dfnode fetch --json` prints when the file is complete. */
export interface FetchResultLine {
  key: string
  digest: string
  size: number
  output: string
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
  ms: number
}

/** Parses a `dfnode fetch --json` result line; undefined for any other line. */
export function parseFetchResult (line: string): FetchResultLine | undefined {
  if (!line.startsWith('{')) return undefined
  try {
    const value = JSON.parse(line) as Partial<FetchResultLine>
    if (typeof value.digest !== 'string' || typeof value.size !== 'number' || typeof value.output !== 'string') return undefined
    return value as FetchResultLine
  } catch {
    return undefined
  }
}

export const dfnodeSystem: BenchSystem = {
  id: 'dfnode',
  title: 'dfnode',

  async checkAvailable (projectRoot) {
    try {
      await access(join(projectRoot, 'bin', 'dfnode'), constants.R_OK)
      return undefined
    } catch {
      return `${join(projectRoot, 'bin', 'dfnode')} does not exist yet`
    }
  },

  async setUp (context) {
    const supernodeHost = context.supernode
    const origin = context.origin

    // 1. The supernode, allowed to fetch from the origin only; it prints its multiaddrs when ready.
    const supernodeDir = join(context.runDir, `${supernodeHost.name}-data`)
    await mkdir(supernodeDir, { recursive: true })
    const supernode = context.createProcess({
      label: `${supernodeHost.name} dfnode supernode`,
      host: supernodeHost,
      command: context.nodeBinary,
      args: dfnodeArgv(['supernode', '--listen', `/ip4/${supernodeHost.address}/tcp/${SUPERNODE_PORT}`, '--allow-origin', `${origin.host.address}:${origin.port}`, '--data-dir', supernodeDir]),
      cwd: context.projectRoot
    })
    supernode.start()
    const ready = await supernode.waitForLine((line) => line.startsWith(`/ip4/${supernodeHost.address}/`) && /\/p2p\/\w+$/.test(line.trim()), SUPERNODE_READY_MS)
    const supernodeAddress = ready.line.trim()
    const seedTime = `${Math.ceil(context.timeoutMs / 1000) + 120}s`

    return {
      async launchPeer (host) {
        const dataDir = join(context.runDir, `${host.name}-data`)
        const outputDir = join(context.runDir, host.name)
        await mkdir(dataDir, { recursive: true })
        await mkdir(outputDir, { recursive: true })
        const outputPath = join(outputDir, context.file.name)
        const process = context.createProcess({
          label: `${host.name} dfnode fetch`,
          host,
          command: context.nodeBinary,
          args: dfnodeArgv(['fetch', origin.url, '-o', outputPath, '--supernode', supernodeAddress, '--listen', `/ip4/${host.address}/tcp/0`, '--data-dir', dataDir, '--json', '--seed-time', seedTime]),
          cwd: context.projectRoot
        })
        return {
          process,
          outputPath,
          // A wrong size or digest in the line shows up in the SHA-256 check of the output.
          completion: (line) => parseFetchResult(line) != null
        }
      },

      summarize (lines) {
        const results = lines.map(parseFetchResult).filter((result): result is FetchResultLine => result != null)
        const total = (field: 'fromSupernode' | 'fromPeers' | 'fromOrigin' | 'fromLocal'): number => results.reduce((sum, result) => sum + (result[field] ?? 0), 0)
        const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1)
        return [`bytes reported by peers (MiB): from supernode ${mib(total('fromSupernode'))}, from peers ${mib(total('fromPeers'))}, from origin ${mib(total('fromOrigin'))}, local ${mib(total('fromLocal'))}`]
      }
    }
  }
}
