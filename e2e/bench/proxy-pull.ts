/**
 * Image pull benchmark through `dfnode proxy` on loopback. A test image of
 * random layers is pushed to a docker-registry; each run then pulls it with
 * `ctr content fetch` three ways, each into a fresh containerd:
 *
 *   direct  from the registry, no proxy
 *   cold    through the first host's proxy, whose swarm has nothing yet: the
 *           supernode fetches each blob from the registry and streams pieces on
 *   warm    through the second host's proxy, while the first host has every blob stored
 *
 * With --primed, each proxy first serves another image of two 8 MiB layers, cold through the first
 * host and warm through the second. A proxy that has run for a while has done so: its code is
 * compiled and optimised, and its links are up. The timed pulls follow.
 *
 * Every run starts a fresh supernode and two proxies. The registry must serve
 * each blob once for cold and warm together, or the run is rejected (containerd
 * falls back to the registry when a mirror fails, which would hide a broken proxy).
 *
 *   node e2e/bench/proxy-pull.ts [--layers 24,20,12,8] [--runs 3] [--primed] [--json FILE] [--keep]
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { writeContainerdConfig } from '../../src/cli/containerd-config.ts'
import { TestContainerd } from '../registry/containerd.ts'
import { buildImage, pushImage, type TestImage } from '../registry/image.ts'
import { REGISTRY_BINARY, TestRegistry } from '../registry/registry.ts'
import { TestSwarm } from '../registry/swarm.ts'
import { cpuSecondsOf, peakRssKiBOf } from './single-link/proc-usage.ts'
import { readMachineFacts } from './single-link/report.ts'

const MiB = 1024 * 1024

const HELP = `Usage: node e2e/bench/proxy-pull.ts [options]

  --layers LIST   layer sizes in MiB, comma-separated (default: 24,20,12,8, 64 MiB in all)
  --runs N        runs, each with a fresh supernode, proxies and containerds (default: 3)
  --primed        before the timed pulls, pull another image through both proxies
  --json FILE     also write every measurement to FILE as JSON
  --keep          keep the work directory with every process's log, and print its path
  --help          print this text
`

/** Components started and not stopped yet. A SIGINT or SIGTERM stops them, so that no process outlives the benchmark. */
const running = new Set<{ stop: () => Promise<unknown> }>()

/** Starts a component with `start` and tracks it until its stop function runs. */
async function tracked<T extends { stop: () => Promise<unknown> }> (start: () => Promise<T>): Promise<T> {
  const component = await start()
  const stop = component.stop.bind(component)
  running.add(component)
  component.stop = async () => {
    running.delete(component)
    return await stop()
  }
  return component
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`proxy-pull benchmark: ${signal}, stopping ${running.size} components\n`)
    void Promise.allSettled([...running].map(async component => await component.stop()))
      .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  })
}

/** Time limit of one ctr pull, in ms. */
const PULL_TIMEOUT_MS = 600_000

interface BenchOptions {
  layerSizes: number[]
  runs: number
  primed: boolean
  json?: string
  keep: boolean
}

/** CPU and memory over one pull through a proxy. */
interface ProxyUsage {
  /** User plus system CPU seconds of the pulling host's proxy during the pull. */
  cpuSeconds: number
  /** User plus system CPU seconds of every dfnode process (supernode and both proxies) during the pull. */
  swarmCpuSeconds: number
  /** CPU seconds per process: the supernode, then the proxy of each host. Only the JSON output has them. */
  processCpuSeconds: { supernode: number, hosts: number[] }
  /** VmHWM of the pulling host's proxy after the pull: its peak RSS since start-up, in KiB. */
  peakRssKiB: number
}

interface RunResult {
  run: number
  directMs: number
  /** CPU seconds of the registry and the direct pull's containerd during that pull. */
  directCpuSeconds: number
  coldMs: number
  warmMs: number
  cold: ProxyUsage
  warm: ProxyUsage
  /** VmRSS of the first proxy after start-up, before any pull, in KiB. */
  idleRssKiB: number
  /** Layer bytes the warm host received from peers and from the supernode. */
  warmFromPeers: number
  warmFromSupernode: number
  /** Piece bytes the warm host received for nothing: copies that arrived after another copy, or that were cancelled. */
  warmWastedBytes: number
  /** 1-minute load average before the run. */
  loadAverage: number
}

function parseOptions (argv: string[]): BenchOptions & { help: boolean } {
  const { values } = parseArgs({
    args: argv,
    options: {
      layers: { type: 'string', default: '24,20,12,8' },
      runs: { type: 'string', default: '3' },
      json: { type: 'string' },
      keep: { type: 'boolean', default: false },
      primed: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  const layerSizes = values.layers.split(',').map(entry => Number(entry.trim()))
  if (layerSizes.length === 0 || layerSizes.some(size => !Number.isInteger(size) || size < 1 || size > 4096)) {
    throw new Error(`invalid --layers "${values.layers}": expected comma-separated whole MiB from 1 to 4096, such as 24,20,12,8`)
  }
  const runs = Number(values.runs)
  if (!Number.isInteger(runs) || runs < 1 || runs > 50) throw new Error(`invalid --runs "${values.runs}": expected a whole number from 1 to 50`)
  return { layerSizes: layerSizes.map(size => size * MiB), runs, primed: values.primed, keep: values.keep, help: values.help, ...(values.json != null ? { json: values.json } : {}) }
}

async function main (): Promise<void> {
  const options = parseOptions(process.argv.slice(2))
  if (options.help) {
    process.stdout.write(HELP)
    return
  }
  const command = ['node', 'e2e/bench/proxy-pull.ts', ...process.argv.slice(2)].join(' ')

  // 1. The registry with the test image, shared by every run.
  const work = await mkdtemp(join(tmpdir(), 'dfnode-bench-proxy-'))
  const registry = await tracked(async () => await TestRegistry.start())
  let finished = false
  try {
    const image = await buildImage(join(work, 'image'), options.layerSizes)
    await pushImage(registry.url, 'bench/app', 'v1', image)
    if (options.primed) await pushImage(registry.url, 'bench/prime', 'v1', await buildImage(join(work, 'prime'), [8 * MiB, 8 * MiB]))
    const imageBytes = [...image.layers, image.config].reduce((sum, blob) => sum + blob.size, 0)
    process.stderr.write(`image: ${image.layers.length} layers, ${(imageBytes / MiB).toFixed(1)} MiB\n`)

    // 2. The runs, one after the other.
    const results: RunResult[] = []
    for (let run = 1; run <= options.runs; run++) {
      const result = await measureRun(run, join(work, `run-${run}`), registry, image, options.primed)
      results.push(result)
      process.stderr.write(`run ${run}: direct ${seconds(result.directMs)} s, cold ${seconds(result.coldMs)} s, warm ${seconds(result.warmMs)} s\n`)
    }

    // 3. The report.
    const facts = { ...await readMachineFacts(work), containerd: await versionOf('containerd'), registry: await versionOf(REGISTRY_BINARY) }
    const report = [
      `Command: \`${command}\``,
      '',
      `Machine: ${facts.cpus} CPUs (${facts.cpuModel}), ${facts.memoryGiB} GiB RAM, Linux ${facts.kernel}, Node ${facts.node}, work directory on ${facts.filesystem}.`,
      `${facts.containerd}; ${facts.registry}.`,
      `Image: ${image.layers.length} layers (${options.layerSizes.map(size => size / MiB).join(', ')} MiB) and a config blob, ${(imageBytes / MiB).toFixed(1)} MiB in all.`,
      ...(options.primed ? ['Primed: before the timed pulls, each proxy served another image of two 8 MiB layers.'] : []),
      '',
      renderTable(results),
      ''
    ].join('\n')
    process.stdout.write(report)
    if (options.json != null) await writeFile(options.json, JSON.stringify({ command, facts, imageBytes, results }, null, 2) + '\n')
    finished = true
  } finally {
    await registry.stop()
    if (!finished) process.stderr.write(`the dfnode logs of the failed run are kept in ${work}\n`)
    else if (options.keep) process.stderr.write(`the work directory with every log is kept in ${work}\n`)
    else await rm(work, { recursive: true, force: true })
  }
}

/** Runs direct, cold and warm pulls with a fresh supernode, two proxies and three containerds. With `primed`, the other image goes through both proxies first. */
async function measureRun (run: number, dir: string, registry: TestRegistry, image: TestImage, primed: boolean): Promise<RunResult> {
  const loadAverage = loadavg()[0] ?? 0
  const reference = `${registry.host}/bench/app:v1`
  const before = await blobGetCounts(registry, image)
  const containerds: TestContainerd[] = []
  let swarm: TestSwarm | undefined
  try {
    for (let i = 0; i < 3; i++) containerds.push(await tracked(async () => await TestContainerd.start()))
    const [direct, coldClient, warmClient] = containerds as [TestContainerd, TestContainerd, TestContainerd]

    // 1. Direct from the registry.
    const directPids = [pidOf(registry.pid, 'registry'), pidOf(direct.pid, 'containerd')]
    const directCpuBefore = await Promise.all(directPids.map(cpuSecondsOf))
    const directMs = await timedPull(direct, ['--plain-http', reference], 'direct')
    const directCpuAfter = await Promise.all(directPids.map(cpuSecondsOf))
    const directCpuSeconds = directCpuAfter.reduce((sum, after, i) => sum + after - (directCpuBefore[i] ?? 0), 0)

    // 2. Cold and warm through the proxies; the registry count excludes the direct pull.
    swarm = await tracked(async () => await TestSwarm.start({ dir, hosts: 2, allowOrigins: [registry.host], proxyArgs: ['--registry', registry.url] }))
    const afterDirect = await blobGetCounts(registry, image)
    const idleRssKiB = await rssKiBOf(pidOf(swarm.proxies[0]?.child.pid, 'proxy of host 0'))
    if (primed) {
      for (const host of [0, 1]) await pullThroughProxy(swarm, host, containerds[host + 1]!, join(dir, `hosts-${host}`), registry, `${registry.host}/bench/prime:v1`)
    }
    const cold = await pullThroughProxy(swarm, 0, coldClient, join(dir, 'hosts-0'), registry, reference)
    const warm = await pullThroughProxy(swarm, 1, warmClient, join(dir, 'hosts-1'), registry, reference)

    // 3. Check that the proxies, not a fallback to the registry, served every blob.
    const afterProxies = await blobGetCounts(registry, image)
    for (const blob of [...image.layers, image.config]) {
      const direct = (afterDirect.get(blob.digest) ?? 0) - (before.get(blob.digest) ?? 0)
      const proxied = (afterProxies.get(blob.digest) ?? 0) - (afterDirect.get(blob.digest) ?? 0)
      if (direct !== 1 || proxied !== 1) {
        throw new Error(`run ${run}: the registry served ${blob.digest} ${direct} times to the direct pull and ${proxied} times through the proxies, expected once each; a proxy failed and containerd fell back to the registry, see ${dir}`)
      }
    }
    for (const host of [0, 1]) {
      for (const layer of image.layers) {
        const lines = await swarm.requests(host, `/v2/bench/app/blobs/${layer.digest}`)
        if (!lines.some(line => line.status === 200 && (line.route === 'p2p' || line.route === 'local'))) {
          throw new Error(`run ${run}: the proxy of host ${host} logged no 200 from the swarm for ${layer.digest}`)
        }
      }
    }
    let warmFromPeers = 0
    let warmFromSupernode = 0
    let warmWastedBytes = 0
    for (const layer of image.layers) {
      const line = (await swarm.downloads(1, layer.digest))[0]
      warmFromPeers += line?.fromPeers ?? 0
      warmFromSupernode += line?.fromSupernode ?? 0
      warmWastedBytes += (line?.duplicateBytes ?? 0) + (line?.cancelledBytes ?? 0)
    }

    return { run, directMs, directCpuSeconds, coldMs: cold.ms, warmMs: warm.ms, cold: cold.usage, warm: warm.usage, idleRssKiB, warmFromPeers, warmFromSupernode, warmWastedBytes, loadAverage }
  } finally {
    for (const containerd of containerds) await containerd.stop()
    await swarm?.stop()
  }
}

/** Pulls through host `host`'s proxy and measures the CPU of every dfnode process over the pull, and the proxy's peak RSS after it. */
async function pullThroughProxy (swarm: TestSwarm, host: number, containerd: TestContainerd, hostsDir: string, registry: TestRegistry, reference: string): Promise<{ ms: number, usage: ProxyUsage }> {
  await writeContainerdConfig({ registry: registry.host, dir: hostsDir, proxy: swarm.url(host), server: registry.url })
  const pid = pidOf(swarm.proxies[host]?.child.pid, `proxy of host ${host}`)
  const pids = [pidOf(swarm.supernode.child.pid, 'supernode'), ...swarm.proxies.map((proxy, i) => pidOf(proxy.child.pid, `proxy of host ${i}`))]
  const cpuBefore = await Promise.all(pids.map(cpuSecondsOf))
  const ms = await timedPull(containerd, ['--hosts-dir', hostsDir, reference], `host ${host}`)
  const cpuAfter = await Promise.all(pids.map(cpuSecondsOf))

  const cpuSeconds = (cpuAfter[pids.indexOf(pid)] ?? 0) - (cpuBefore[pids.indexOf(pid)] ?? 0)
  const perProcess = cpuAfter.map((after, i) => after - (cpuBefore[i] ?? 0))
  const swarmCpuSeconds = perProcess.reduce((sum, seconds) => sum + seconds, 0)
  const processCpuSeconds = { supernode: perProcess[0] ?? 0, hosts: perProcess.slice(1) }
  return { ms, usage: { cpuSeconds, swarmCpuSeconds, processCpuSeconds, peakRssKiB: await peakRssKiBOf(pid) } }
}

/** Runs `ctr content fetch` and returns its wall time in ms; throws when it fails. */
async function timedPull (containerd: TestContainerd, args: string[], label: string): Promise<number> {
  const started = performance.now()
  const result = await containerd.ctr(['content', 'fetch', ...args], PULL_TIMEOUT_MS)
  const ms = performance.now() - started
  if (result.code !== 0) throw new Error(`${label} pull failed with exit code ${result.code}: ${result.stderr.slice(-2000)}`)
  return ms
}

/** Counts the registry's successful GETs of each blob of the image so far. */
async function blobGetCounts (registry: TestRegistry, image: TestImage): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  for (const blob of [...image.layers, image.config]) counts.set(blob.digest, await registry.blobGets(blob.digest))
  return counts
}

/** Returns the current resident set size (VmRSS) of a process in KiB. */
async function rssKiBOf (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status)
  if (match?.[1] == null) throw new Error(`no VmRSS line in /proc/${pid}/status`)
  return Number(match[1])
}

/** Returns the first line of `command --version`, or a note that it is unknown when the command fails. */
async function versionOf (command: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(command, ['--version'])
    return stdout.split('\n')[0]?.trim() ?? 'unknown'
  } catch {
    return `${command}: version unknown`
  }
}

function pidOf (pid: number | undefined, name: string): number {
  if (pid == null) throw new Error(`the ${name} has no process id: it did not start`)
  return pid
}

function renderTable (results: RunResult[]): string {
  const header = ['run', 'direct s', 'cold s', 'warm s', 'cold ÷ direct', 'warm ÷ direct', 'direct: registry + containerd CPU s', 'cold: proxy CPU s', 'cold: all dfnode CPU s', 'warm: proxy CPU s', 'warm: all dfnode CPU s', 'idle proxy RSS MiB', 'cold proxy peak RSS MiB', 'warm proxy peak RSS MiB', 'warm MiB from peers / supernode', 'warm MiB received for nothing', 'load avg']
  const rows = results.map(result => [
    String(result.run),
    seconds(result.directMs),
    seconds(result.coldMs),
    seconds(result.warmMs),
    (result.coldMs / result.directMs).toFixed(2),
    (result.warmMs / result.directMs).toFixed(2),
    result.directCpuSeconds.toFixed(2),
    result.cold.cpuSeconds.toFixed(2),
    result.cold.swarmCpuSeconds.toFixed(2),
    result.warm.cpuSeconds.toFixed(2),
    result.warm.swarmCpuSeconds.toFixed(2),
    mebibytes(result.idleRssKiB),
    mebibytes(result.cold.peakRssKiB),
    mebibytes(result.warm.peakRssKiB),
    `${(result.warmFromPeers / MiB).toFixed(0)} / ${(result.warmFromSupernode / MiB).toFixed(0)}`,
    (result.warmWastedBytes / MiB).toFixed(0),
    result.loadAverage.toFixed(1)
  ])
  if (results.length > 1) {
    rows.push([
      'median',
      seconds(median(results.map(r => r.directMs))),
      seconds(median(results.map(r => r.coldMs))),
      seconds(median(results.map(r => r.warmMs))),
      median(results.map(r => r.coldMs / r.directMs)).toFixed(2),
      median(results.map(r => r.warmMs / r.directMs)).toFixed(2),
      median(results.map(r => r.directCpuSeconds)).toFixed(2),
      median(results.map(r => r.cold.cpuSeconds)).toFixed(2),
      median(results.map(r => r.cold.swarmCpuSeconds)).toFixed(2),
      median(results.map(r => r.warm.cpuSeconds)).toFixed(2),
      median(results.map(r => r.warm.swarmCpuSeconds)).toFixed(2),
      mebibytes(median(results.map(r => r.idleRssKiB))),
      mebibytes(median(results.map(r => r.cold.peakRssKiB))),
      mebibytes(median(results.map(r => r.warm.peakRssKiB))),
      '',
      (median(results.map(r => r.warmWastedBytes)) / MiB).toFixed(0),
      ''
    ])
  }
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map(row => `| ${row.join(' | ')} |`)
  ].join('\n')
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

function mebibytes (kibibytes: number): string {
  return (kibibytes / 1024).toFixed(0)
}

function seconds (ms: number): string {
  return (ms / 1000).toFixed(2)
}

await main().catch((err: Error) => {
  process.stderr.write(`proxy-pull benchmark failed: ${err.message}\n`)
  process.exitCode = 1
})
