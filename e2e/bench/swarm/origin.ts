/**
 * Starts origin-server.ts inside the origin host's namespace and reads its
 * counters with curl from the same namespace, so the stats request travels
 * over the namespace's loopback path and adds nothing to the veth counters.
 */
import { basename, join } from 'node:path'
import { runInNamespace } from './commands.ts'
import { HostProcess } from './host-process.ts'
import type { OriginStats } from './origin-server.ts'
import type { BenchFile, OriginEndpoint } from './systems/system.ts'
import type { Host } from './testbed.ts'

export interface StartOriginOptions {
  host: Host
  port: number
  file: BenchFile
  nodeBinary: string
  /** Directory for GNU time's report. */
  usageDir: string
}

export interface RunningOrigin {
  process: HostProcess
  endpoint: OriginEndpoint
}

/** Starts the origin server and waits until it listens. */
export async function startOrigin (options: StartOriginOptions): Promise<RunningOrigin> {
  const { host, port, file } = options
  const script = join(import.meta.dirname, 'origin-server.ts')
  const process = new HostProcess({
    label: `${host.name} origin-server`,
    namespace: host.namespace,
    command: options.nodeBinary,
    args: [script, '--file', file.path, '--host', host.address, '--port', String(port), '--path', `/${basename(file.name)}`],
    usageFile: join(options.usageDir, `${host.name}-origin-server.txt`)
  })
  process.start()
  await process.waitForLine((line) => line.startsWith('listening '), 15_000)
  return { process, endpoint: { host, port, url: `http://${host.address}:${port}/${file.name}` } }
}

/** Reads GET /__stats of the origin. */
export async function readOriginStats (endpoint: OriginEndpoint): Promise<OriginStats> {
  const body = await runInNamespace(endpoint.host.namespace, ['curl', '-sS', '--fail', '--max-time', '5', `http://${endpoint.host.address}:${endpoint.port}/__stats`])
  return JSON.parse(body) as OriginStats
}
