/** Command-line flags of the swarm benchmark, parsed and validated once. */
import { parseArgs } from 'node:util'
import { UsageError } from '../../../src/errors.ts'

export const SYSTEM_IDS = ['direct', 'bittorrent', 'ipfs', 'dfnode'] as const

export interface BenchOptions {
  help: boolean
  cleanup: boolean
  /** Peer counts, one scenario each. */
  peerCounts: number[]
  fileBytes: number
  peerMbit: number
  originMbit: number
  supernodeMbit: number
  /** System ids in run order. */
  systems: string[]
  /** Markdown report path, or undefined for stdout only. */
  out: string | undefined
  svg: string
  json: string | undefined
  /** Per-system timeout from the common start; undefined means derived from the scenario. */
  timeoutSeconds: number | undefined
  keepFiles: boolean
  originPort: number
  /** Results JSON of an earlier run to render instead of running. */
  fromJson: string | undefined
}

export const HELP = `Usage: node e2e/bench/swarm/run.ts [options]

Builds a testbed of network namespaces on one Linux bridge (origin, supernode
and N peers, each link shaped with tc), then runs every selected system on it
and measures completion times, bytes sent per host, CPU and memory. Needs root.

Options:
  --peers LIST          peer counts, one scenario each (default 4,8,16)
  --size SIZE           file size, bytes or with KiB/MiB/GiB (default 256MiB)
  --peer-mbit N         upload and download limit of each peer in Mbit/s (default 100)
  --origin-mbit N       upload and download limit of the origin host in Mbit/s (default 100)
  --supernode-mbit N    upload and download limit of the supernode host in Mbit/s (default 100)
  --systems LIST        systems to run, in order: ${SYSTEM_IDS.join(',')} (default all)
  --out FILE            also write the markdown report to FILE
  --svg FILE            completion-time CDF plot (default docs/bench/swarm-cdf.svg)
  --json FILE           also write the raw results as JSON (after every system, so a run cut
                        short keeps what finished)
  --timeout-s N         seconds from the start until a system's peers count as failed
                        (default 3 x N x size / origin rate + 60)
  --origin-port N       TCP port of the HTTP origin (default 8080)
  --keep                keep the work directory (outputs, logs, usage reports)
  --from-json FILE      render the report and plot from the JSON of an earlier run
                        (written with --json) instead of running
  --cleanup             remove namespaces left by runs that no longer exist, then exit
  -h, --help            show this help
`

/** Parses and validates argv (without node and script); raises UsageError. */
export function parseOptions (argv: readonly string[]): BenchOptions {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        help: { type: 'boolean', short: 'h', default: false },
        cleanup: { type: 'boolean', default: false },
        peers: { type: 'string', default: '4,8,16' },
        size: { type: 'string', default: '256MiB' },
        'peer-mbit': { type: 'string', default: '100' },
        'origin-mbit': { type: 'string', default: '100' },
        'supernode-mbit': { type: 'string', default: '100' },
        systems: { type: 'string', default: SYSTEM_IDS.join(',') },
        out: { type: 'string' },
        svg: { type: 'string', default: 'docs/bench/swarm-cdf.svg' },
        json: { type: 'string' },
        'timeout-s': { type: 'string' },
        'origin-port': { type: 'string', default: '8080' },
        keep: { type: 'boolean', default: false },
        'from-json': { type: 'string' }
      }
    })
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; see --help`)
  }
  const values = parsed.values

  const systems = values.systems.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
  for (const system of systems) {
    if (!(SYSTEM_IDS as readonly string[]).includes(system)) throw new UsageError(`invalid --systems entry ${JSON.stringify(system)}: expected some of ${SYSTEM_IDS.join(', ')}`)
  }
  if (systems.length === 0) throw new UsageError('invalid --systems: empty list')

  const peerCounts = values.peers.split(',').map((entry) => parseInteger('--peers', entry.trim(), 1, 240))

  return {
    help: values.help,
    cleanup: values.cleanup,
    peerCounts,
    fileBytes: parseSize(values.size),
    peerMbit: parseRate('--peer-mbit', values['peer-mbit']),
    originMbit: parseRate('--origin-mbit', values['origin-mbit']),
    supernodeMbit: parseRate('--supernode-mbit', values['supernode-mbit']),
    systems,
    out: values.out,
    svg: values.svg,
    json: values.json,
    timeoutSeconds: values['timeout-s'] != null ? parseInteger('--timeout-s', values['timeout-s'], 1, 86_400) : undefined,
    keepFiles: values.keep,
    originPort: parseInteger('--origin-port', values['origin-port'], 1, 65_535),
    fromJson: values['from-json']
  }
}

/** Parses `123`, `64KiB`, `256MiB` or `1GiB` into bytes. */
export function parseSize (text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?$/i.exec(text.trim())
  if (match == null) throw new UsageError(`invalid --size ${JSON.stringify(text)}: expected bytes or a number with KiB, MiB or GiB, e.g. 256MiB`)
  const units: Record<string, number> = { b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30 }
  const bytes = Math.round(Number(match[1]) * (units[(match[2] ?? 'b').toLowerCase()] ?? 1))
  if (bytes < 1 || bytes > 64 * 2 ** 30) throw new UsageError(`invalid --size ${text}: expected 1 byte to 64 GiB`)
  return bytes
}

function parseRate (flag: string, text: string): number {
  const value = Number(text)
  if (!Number.isFinite(value) || value <= 0 || value > 100_000) throw new UsageError(`invalid ${flag} ${JSON.stringify(text)}: expected Mbit/s between 0 and 100000`)
  return value
}

function parseInteger (flag: string, text: string, min: number, max: number): number {
  const value = Number(text)
  if (!/^\d+$/.test(text) || value < min || value > max) throw new UsageError(`invalid ${flag} value ${JSON.stringify(text)}: expected an integer from ${min} to ${max}`)
  return value
}
