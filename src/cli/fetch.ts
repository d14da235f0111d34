/**
 * `dfnode fetch URL`: downloads one file through the swarm.
 */
import { DEFAULT_QUERY_FILTER, parseHttpUrl } from '../content/url.ts'
import { formatDuration } from '../config/units.ts'
import { ExitCode, TimeoutError } from '../errors.ts'
import type { fetchFile, FetchResult } from '../swarm/fetch-file.ts'
import { PipeReaderWaitError } from '../swarm/fetch-output.ts'
import type { Environment } from '../config/load.ts'
import { booleanOption, listOption, stringOption, type Command, type Invocation, type ParsedOptions } from './command.ts'
import { checkDigest, parseHeaders, resolveOutput } from './fetch-input.ts'
import { formatSummary, ProgressBar } from './progress.ts'
import { loadCommandConfig, runWithLogger } from './setup.ts'
import { InterruptedError, onTermination } from './signals.ts'

/**
 * Builds the command around a download function, by default the swarm's fetchFile, which is
 * imported only once the arguments are valid because loading libp2p takes about half a second.
 */
export function createFetchCommand (fetch?: typeof fetchFile): Command {
  return {
    name: 'fetch',
    arguments: '<url>',
    description: [
      'Download a file through the swarm: from peers and supernodes, from the origin only as a last resort.',
      'Exit codes: 0 done, 1 other failure (a file or system error), 2 invalid input or a setting that cannot be used (such as a port in use), 3 not found at the origin, 4 verification failed, 5 timed out, 6 origin unreachable or other origin error, 7 no supernode, peer or origin to fetch from, 130 interrupted (SIGINT), 143 stopped (SIGTERM).'
    ],
    options: [
      { name: 'output', short: 'o', type: 'string', description: 'File to write (default: the last segment of the URL path, in the current directory)' },
      { name: 'digest', type: 'string', description: 'Expected digest sha256:<64 hex>; keys the download and is checked at the end (default: none, the URL is the key)' },
      { name: 'header', short: 'H', type: 'string', description: "Header sent to the origin, as 'Name: value'; repeatable; Host, Range and other headers that dfnode sets are rejected (default: none)" },
      { name: 'filter', type: 'string', description: `Comma-separated query parameters left out of the URL key, exact names or prefixes ending in * such as X-Amz-*; replaces the default list (default: ${DEFAULT_QUERY_FILTER.join(',')})` },
      { name: 'supernode', type: 'string', description: 'Supernode multiaddr; repeatable, replaces the configured list (default: the config, else /etc/dragonfly.conf)' },
      { name: 'timeout', type: 'string', description: 'Time limit: seconds, or a duration such as 90s, 5m, 1h (default: 0, no limit)' },
      { name: 'no-back-source', type: 'boolean', description: 'Fail instead of downloading from the origin when no supernode or peer has the file (default: download from the origin)' },
      { name: 'json', type: 'boolean', description: 'Print the result as one JSON object on stdout and nothing else there; on failure {"error":{"code","message"},"exitCode"} (default: off)' },
      { name: 'listen', type: 'string', description: 'Multiaddr to listen on for other peers while fetching; repeatable (default: /ip4/0.0.0.0/tcp/0)' },
      { name: 'seed-time', type: 'string', description: 'Time to keep serving pieces to other peers after the download: seconds or a duration (default: 0)' },
      { name: 'upload-rate', type: 'string', description: 'Upload limit for pieces sent to other peers: bytes per second or a size such as 10MiB (default: 0, no limit)' },
      { name: 'data-port', type: 'string', description: 'TCP port of direct links, which carry pieces over TLS beside libp2p: 1 to 65535, 0 for one the system picks, off for none (default: 0)' }
    ],
    examples: [
      'fetch https://example.com/images/base.tar -o base.tar',
      'fetch https://registry.example.com/v2/app/blobs/sha256:<hex> --digest sha256:<hex> -H "Authorization: Bearer $TOKEN"'
    ],
    // On failure, main prints the error, and with --json the JSON object of it too.
    run: async invocation => await runFetch(invocation, fetch)
  }
}

export const fetchCommand = createFetchCommand()

async function runFetch (invocation: Invocation, fetchOverride: typeof fetchFile | undefined): Promise<number> {
  const { args, options, io } = invocation

  // 1. Check the arguments before anything starts.
  const url = parseHttpUrl(args[0] ?? '')
  const digest = stringOption(options, 'digest')
  if (digest != null) checkDigest(digest)
  const headers = parseHeaders(listOption(options, 'header') ?? [])
  const output = await resolveOutput(stringOption(options, 'output'), url, io.cwd)
  const json = booleanOption(options, 'json') === true

  // 2. Load the configuration.
  const config = await loadCommandConfig(invocation, 'fetch', {
    supernodes: listOption(options, 'supernode'),
    filter: listOption(options, 'filter'),
    timeoutMs: stringOption(options, 'timeout'),
    backSource: booleanOption(options, 'back-source'),
    listen: listOption(options, 'listen'),
    seedMs: stringOption(options, 'seed-time'),
    uploadRate: stringOption(options, 'upload-rate'),
    dataPort: stringOption(options, 'data-port')
  })

  const fetch = fetchOverride ?? (await import('../swarm/fetch-file.ts')).fetchFile
  return await runWithLogger(config, 'fetch', async logger => {
    // 3. Wire termination signals and the time limit to one abort signal; the limit covers the download, not the seeding period.
    const interrupt = new AbortController()
    const removeHandlers = onTermination(['SIGINT', 'SIGTERM'], received => interrupt.abort(new InterruptedError(received)))
    const deadline = new AbortController()
    let complete = false
    if (config.timeoutMs > 0) {
      const timeout = AbortSignal.timeout(config.timeoutMs)
      timeout.addEventListener('abort', () => { if (!complete) deadline.abort(timeout.reason) }, { once: true })
    }
    const signal = AbortSignal.any([interrupt.signal, deadline.signal])

    // 4. Show progress on a terminal unless stdout is for JSON, and report the result once.
    const progress = !json && io.stderr.isTTY === true ? new ProgressBar(io.stderr) : undefined
    const report = (result: FetchResult): void => {
      if (complete) return
      complete = true
      progress?.clear()
      if (json) io.stdout.write(`${JSON.stringify(result)}\n`)
      else io.stderr.write(`${formatSummary(result)}\n`)
      if (!json && config.seedMs > 0 && !viaDaemon) io.stderr.write(`serving pieces to other peers for ${formatDuration(config.seedMs)}; press Ctrl-C to stop\n`)
    }
    // A local daemon downloads, stores and serves the file; this process only copies it out.
    let viaDaemon = false

    try {
      // 5. Report the result as soon as the file is complete, before the seeding period.
      const result = await fetch(config, logger, {
        url: url.href,
        output,
        ...(digest != null ? { digest } : {}),
        headers,
        signal,
        onProgress: update => progress?.update(update),
        onComplete: report,
        onDaemon: () => { viaDaemon = true },
        daemonIgnores: daemonOnlySettings(options, io.env)
      })
      report(result)
      return ExitCode.ok
    } catch (err) {
      progress?.clear()
      if (deadline.signal.aborted && err instanceof PipeReaderWaitError) {
        throw new TimeoutError(`${err.message} within ${formatDuration(config.timeoutMs)}: start the reader of the pipe, or raise --timeout`, { cause: err })
      }
      if (deadline.signal.aborted) {
        throw new TimeoutError(`download of ${url.origin}${url.pathname} timed out after ${formatDuration(config.timeoutMs)}: raise --timeout, or check that a supernode or the origin is reachable`, { cause: err })
      }
      if (interrupt.signal.aborted) throw interrupt.signal.reason
      throw err
    } finally {
      removeHandlers()
    }
  }, { stderrLevel: 'warn' })
}

/** Variables of settings that a local daemon, which fetches with its own settings, does not take from a fetch. */
const DAEMON_ONLY_VARIABLES = ['DFNODE_SUPERNODES', 'DFNODE_BACK_SOURCE', 'DFNODE_LISTEN', 'DFNODE_SEED_TIME', 'DFNODE_UPLOAD_RATE', 'DFNODE_DATA_PORT']

/** Returns the flags and variables given to this fetch that a local daemon does not take. */
function daemonOnlySettings (options: ParsedOptions, env: Environment): string[] {
  const settings: string[] = []
  if (listOption(options, 'supernode') != null) settings.push('--supernode')
  if (booleanOption(options, 'back-source') === false) settings.push('--no-back-source')
  for (const name of ['listen', 'seed-time', 'upload-rate', 'data-port']) {
    if (options[name] != null) settings.push(`--${name}`)
  }
  for (const name of DAEMON_ONLY_VARIABLES) {
    if (env[name] != null && env[name].trim() !== '') settings.push(name)
  }
  return settings
}
