/**
 * Swarm benchmark runner. For each peer count it builds a shaped testbed of
 * network namespaces and runs every selected system on it, one after
 * another. It prints a markdown report and writes a CDF plot (SVG), and on
 * request the report and raw JSON as files. See `--help`.
 */
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, release, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { exitCodeOf } from '../../../src/errors.ts'
import { createLogger } from '../../../src/log.ts'
import { renderCdfSvg } from './cdf-svg.ts'
import { runCommand } from './commands.ts'
import { TestbedError } from './errors.ts'
import { TIME_BINARY } from './host-process.ts'
import { lowerBound } from './lower-bound.ts'
import { measureSystem } from './measure.ts'
import { HELP, parseOptions, type BenchOptions } from './options.ts'
import { startOrigin } from './origin.ts'
import { writeRandomFile } from './random-file.ts'
import { renderReport } from './report-table.ts'
import type { BenchResults, ScenarioResult } from './results.ts'
import { bittorrentSystem } from './systems/bittorrent.ts'
import { dfnodeSystem } from './systems/dfnode.ts'
import { directSystem } from './systems/direct.ts'
import { ipfsSystem } from './systems/ipfs.ts'
import type { BenchFile, BenchSystem } from './systems/system.ts'
import { namespacesWithPrefix, removeLeftovers, removeNamespacesWithPrefix, Testbed, testbedPrefix } from './testbed.ts'
import { ORIGIN, scenarioHosts, SUPERNODE } from './topology.ts'

/** Namespace family of the runner; each run uses `dfb-<pid>-`. */
export const NAMESPACE_FAMILY = 'dfb-'
const SYSTEMS: Record<string, BenchSystem> = { direct: directSystem, bittorrent: bittorrentSystem, ipfs: ipfsSystem, dfnode: dfnodeSystem }
const PROJECT_ROOT = resolve(import.meta.dirname, '..', '..', '..')
const log = createLogger({ role: 'bench' })
/** Set on SIGINT or SIGTERM; errors of the interrupted run are then expected and not reported. */
let interrupted = false

async function main (argv: readonly string[]): Promise<void> {
  const options = parseOptions(argv)
  if (options.help) {
    process.stdout.write(HELP)
    return
  }
  if (options.fromJson != null) {
    const results = JSON.parse(await readFile(resolve(options.fromJson), 'utf8')) as BenchResults
    await writeReports(results, options)
    return
  }
  await checkPrerequisites()
  if (options.cleanup) {
    const report = await removeLeftovers(NAMESPACE_FAMILY)
    process.stdout.write(`removed ${report.removed.length} namespace(s)${report.removed.length > 0 ? ': ' + report.removed.join(', ') : ''}\n`)
    if (report.inUse.length > 0) process.stdout.write(`kept ${report.inUse.length} namespace(s) of runs that are still alive: ${report.inUse.join(', ')}\n`)
    return
  }
  await runBenchmark(options, argv)
}

async function runBenchmark (options: BenchOptions, argv: readonly string[]): Promise<void> {
  const prefix = testbedPrefix(NAMESPACE_FAMILY)
  const existing = await namespacesWithPrefix(prefix)
  if (existing.length > 0) throw new TestbedError(`namespaces with prefix ${prefix} already exist (${existing.join(', ')}): remove them with --cleanup`)
  const others = await namespacesWithPrefix(NAMESPACE_FAMILY)
  if (others.length > 0) log.warn({ namespaces: others }, 'namespaces of another benchmark run exist; its processes compete for CPU (remove leftovers with --cleanup)')

  const workDir = await mkdtemp(join(tmpdir(), 'dfb-'))
  let testbed: Testbed | undefined
  // Removes the current testbed, then every namespace of the prefix, in case a signal came while a testbed was being built.
  const cleanUp = async (): Promise<void> => {
    const current = testbed
    testbed = undefined
    await current?.destroy().catch((err: unknown) => { log.error({ err }, 'could not remove the testbed') })
    await removeNamespacesWithPrefix(prefix)
    if (!options.keepFiles) await rm(workDir, { recursive: true, force: true })
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupted = true
    log.warn({ signal }, 'interrupted: removing the testbed')
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    // 1. The file every system distributes.
    const file: BenchFile = { path: join(workDir, 'origin', 'blob.bin'), name: 'blob.bin', size: options.fileBytes, sha256: '' }
    await mkdir(dirname(file.path), { recursive: true })
    log.info({ bytes: file.size, path: file.path }, 'writing the random file')
    file.sha256 = await writeRandomFile(file.path, file.size)

    const results: BenchResults = {
      command: ['node', 'e2e/bench/swarm/run.ts', ...argv].join(' '),
      startedAt: new Date().toISOString(),
      machine: await describeMachine(),
      settings: { fileBytes: file.size, peerMbit: options.peerMbit, originMbit: options.originMbit, supernodeMbit: options.supernodeMbit },
      scenarios: []
    }

    // 2. One testbed per peer count; every system runs on the same one.
    for (const peerCount of options.peerCounts) {
      const hosts = scenarioHosts(peerCount, options)
      const peerHosts = hosts.slice(2)
      const bound = lowerBound({
        fileBytes: file.size,
        originUploadMbit: options.originMbit,
        peerUploadMbit: peerHosts.map((host) => host.uploadMbit),
        peerDownloadMbit: peerHosts.map((host) => host.downloadMbit)
      })
      const timeoutMs = 1000 * (options.timeoutSeconds ?? Math.ceil(3 * peerCount * file.size * 8 / (options.originMbit * 1e6) + 60))
      log.info({ peerCount, lowerBoundSeconds: bound.seconds, timeoutMs }, 'building the testbed')
      testbed = await Testbed.create(prefix, hosts)
      const origin = await startOrigin({ host: testbed.host(ORIGIN.name), port: options.originPort, file, nodeBinary: nodeBinary(), usageDir: workDir })

      const scenario: ScenarioResult = { peerCount, lowerBound: bound, records: [] }
      results.scenarios.push(scenario)
      for (const id of options.systems) {
        const system = SYSTEMS[id]
        if (system == null) continue
        const record = await measureSystem(system, {
          testbed,
          projectRoot: PROJECT_ROOT,
          nodeBinary: nodeBinary(),
          workDir,
          file,
          origin: origin.endpoint,
          supernode: testbed.host(SUPERNODE.name),
          peers: peerHosts.map((host) => testbed?.host(host.name)).filter((host) => host != null),
          timeoutMs,
          keepFiles: options.keepFiles,
          log: (message) => { log.info(message) }
        })
        scenario.records.push(record)
        const times = record.peers.map((peer) => peer.completedSeconds).filter((value) => value != null)
        log.info({ system: id, peerCount, status: record.status, lastSeconds: times.length > 0 ? Math.max(...times) : undefined, failure: record.failure }, 'system done')

        // A run cut short keeps every finished system, and --from-json renders what the file contains.
        if (options.json != null) await writeOutput(options.json, JSON.stringify(results, null, 2) + '\n')
      }

      await origin.process.stop()
      await testbed.destroy()
      testbed = undefined
    }

    // 3. Raw results, report and plot.
    if (options.json != null) await writeOutput(options.json, JSON.stringify(results, null, 2) + '\n')
    await writeReports(results, options)
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await cleanUp()
  }
}

/** Prints the markdown report and writes it (with --out) and the CDF plot. */
async function writeReports (results: BenchResults, options: BenchOptions): Promise<void> {
  const report = renderReport(results)
  process.stdout.write(report)
  if (options.out != null) await writeOutput(options.out, report)
  await writeOutput(options.svg, renderCdfSvg(results))
}

async function writeOutput (path: string, text: string): Promise<void> {
  const absolute = resolve(PROJECT_ROOT, path)
  await mkdir(dirname(absolute), { recursive: true })
  await writeFile(absolute, text)
  log.info({ path: absolute }, 'wrote output')
}

/** Returns the Node 24 binary the project installs, or this process's node. */
function nodeBinary (): string {
  const local = join(PROJECT_ROOT, 'node_modules', '.bin', 'node')
  return existsSync(local) ? local : process.execPath
}

async function checkPrerequisites (): Promise<void> {
  if (process.getuid?.() !== 0) throw new TestbedError('the swarm benchmark must run as root: it creates network namespaces and tc qdiscs')
  for (const [command, args] of [['ip', ['-V']], ['tc', ['-V']], [TIME_BINARY, ['--version']]] as const) {
    await runCommand(command, args).catch((err: unknown) => {
      throw new TestbedError(`${command} is required but did not run (${(err as Error).message}); install iproute2 and time`)
    })
  }
}

async function describeMachine (): Promise<string> {
  const aria2 = await runCommand('aria2c', ['--version']).then((text) => text.split('\n')[0] ?? '').catch(() => 'aria2c missing')
  return `${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}, Node ${process.version}, ${aria2}`
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (interrupted) return
  log.error({ err }, 'swarm benchmark failed')
  process.stderr.write(`swarm benchmark failed: ${(err as Error).message}\n`)
  process.exitCode = exitCodeOf(err)
})
