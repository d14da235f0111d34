/** Command-line flags of the single-link benchmark, parsed and validated once. */
import { tmpdir } from 'node:os'
import { parseArgs } from 'node:util'
import { parseSize } from '../../../src/config/units.ts'
import { UsageError } from '../../../src/errors.ts'

export interface SingleLinkOptions {
  help: boolean
  /** File size in bytes. */
  fileBytes: number
  /** Repetitions of the curl, cold and warm cases. */
  runs: number
  /** Parent of the work directory (file, data dirs, outputs). */
  dir: string
  /** Directory for CPU profiles of one extra, profiled warm transfer; undefined skips profiling. */
  profileDir: string | undefined
  /** Functions listed per profile summary. */
  top: number
  /** Also write the results as JSON to this file. */
  json: string | undefined
  /** Keep the work directory. */
  keep: boolean
}

export const HELP = `Usage: node e2e/bench/single-link.ts [options]

Measures one transfer over loopback, side by side: curl from an HTTP origin
(baseline), a dfnode peer fetching through a supernode that seeds from the
origin (cold), and a fresh peer fetching from a supernode that already has
the file (warm, supernode to peer only). Prints a markdown table with MB/s
(10^6 bytes/s), CPU seconds and peak RSS of each process.

Options:
  --size SIZE      file size, bytes or with KiB/MiB/GiB (default 1GiB)
  --runs N         repetitions of every case (default 1)
  --dir DIR        parent of the work directory (default ${tmpdir()})
  --profile DIR    afterwards, profile one more warm transfer with --cpu-prof
                   for the supernode and the peer; writes the .cpuprofile files
                   and summary.md to DIR
  --top N          functions listed per profile summary (default 25)
  --json FILE      also write the results as JSON
  --keep           keep the work directory
  -h, --help       show this help
`

/** Parses and validates argv (without node and script); raises UsageError. */
export function parseOptions (argv: readonly string[]): SingleLinkOptions {
  let parsed
  try {
    parsed = parseArgs({
      args: [...argv],
      options: {
        size: { type: 'string', default: '1GiB' },
        runs: { type: 'string', default: '1' },
        dir: { type: 'string', default: tmpdir() },
        profile: { type: 'string' },
        top: { type: 'string', default: '25' },
        json: { type: 'string' },
        keep: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false }
      }
    })
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; run with --help for the options`, { cause: err })
  }
  const { values } = parsed

  const fileBytes = parseSize(values.size)
  if (fileBytes == null || fileBytes < 1) throw new UsageError(`invalid --size ${values.size}: expected a positive size such as 256MiB or 1GiB`)
  const runs = Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new UsageError(`invalid --runs ${values.runs}: expected a whole number from 1 to 20`)
  const top = Number(values.top)
  if (!Number.isInteger(top) || top < 1) throw new UsageError(`invalid --top ${values.top}: expected a positive whole number`)

  return {
    help: values.help,
    fileBytes,
    runs,
    dir: values.dir,
    profileDir: values.profile,
    top,
    json: values.json,
    keep: values.keep
  }
}
