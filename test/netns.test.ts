/**
 * The swarm benchmark's testbed on real network namespaces: an origin and
 * two hosts on one bridge, shaped links, one curl transfer through the
 * bridge and, when the CLI exists, one dfnode fetch. Skipped where
 * namespaces cannot be created.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { test } from 'node:test'
import { runCommand } from '../e2e/bench/swarm/commands.ts'
import { HostProcess, TIME_BINARY } from '../e2e/bench/swarm/host-process.ts'
import { readOriginStats, startOrigin } from '../e2e/bench/swarm/origin.ts'
import { sha256File, writeRandomFile } from '../e2e/bench/swarm/random-file.ts'
import { egressRateBits } from '../e2e/bench/swarm/shaping.ts'
import { parseFetchResult } from '../e2e/bench/swarm/systems/dfnode.ts'
import type { BenchFile } from '../e2e/bench/swarm/systems/system.ts'
import { namespacesWithPrefix, Testbed, testbedPrefix, type HostSpec } from '../e2e/bench/swarm/testbed.ts'

const FAMILY = 'dfbt-'
const PROJECT_ROOT = resolve(import.meta.dirname, '..')
const FILE_BYTES = 4 * 1024 * 1024 + 123
const HOSTS: HostSpec[] = [
  { name: 'origin', address: '198.18.0.1', uploadMbit: 50, downloadMbit: 50 },
  { name: 'h1', address: '198.18.0.10', uploadMbit: 40, downloadMbit: 30 },
  { name: 'h2', address: '198.18.0.11', uploadMbit: 40, downloadMbit: 30 }
]

/** Returns why namespaces cannot be used here, or undefined when they can. */
async function namespaceSupport (): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'network namespaces need root; run the test as root to include it'
  for (const [command, args] of [['ip', ['-V']], ['tc', ['-V']], ['curl', ['--version']], [TIME_BINARY, ['--version']]] as const) {
    try {
      await runCommand(command, args)
    } catch (err) {
      return `${command} is not usable (${(err as Error).message}); install iproute2, curl and time`
    }
  }
  const probe = `${FAMILY}${process.pid}-probe`
  try {
    await runCommand('ip', ['netns', 'add', probe])
    await runCommand('ip', ['netns', 'delete', probe])
  } catch (err) {
    return `ip netns add failed: ${(err as Error).message}`
  }
  return undefined
}

function nodeBinary (): string {
  const local = join(PROJECT_ROOT, 'node_modules', '.bin', 'node')
  return existsSync(local) ? local : process.execPath
}

test('netns testbed transfers through the bridge', async (t) => {
  const unsupported = await namespaceSupport()
  if (unsupported != null) {
    t.skip(unsupported)
    return
  }

  const workDir = await mkdtemp(join(tmpdir(), 'dfbt-'))
  const prefix = testbedPrefix(FAMILY)
  const file: BenchFile = { path: join(workDir, 'blob.bin'), name: 'blob.bin', size: FILE_BYTES, sha256: '' }
  file.sha256 = await writeRandomFile(file.path, file.size)
  const testbed = await Testbed.create(prefix, HOSTS)
  const processes: HostProcess[] = []
  const spawnIn = (hostName: string, label: string, command: string, args: string[]): HostProcess => {
    const host = testbed.host(hostName)
    const process = new HostProcess({ label, namespace: host.namespace, command, args, cwd: PROJECT_ROOT, usageFile: join(workDir, `${label}.usage`) })
    processes.push(process)
    process.start()
    return process
  }

  try {
    const origin = await startOrigin({ host: testbed.host('origin'), port: 8080, file, nodeBinary: nodeBinary(), usageDir: workDir })
    processes.push(origin.process)

    await t.test('every link carries its rate limits', async () => {
      for (const spec of HOSTS) {
        const host = testbed.host(spec.name)
        assert.equal(await egressRateBits(host.namespace, host.device), spec.uploadMbit * 1e6, `upload of ${spec.name}`)
        assert.equal(await egressRateBits(testbed.bridgeNamespace, host.bridgePort), spec.downloadMbit * 1e6, `download of ${spec.name}`)
      }
    })

    await t.test('second testbed with same prefix rejected', async () => {
      const before = await namespacesWithPrefix(prefix)
      await assert.rejects(Testbed.create(prefix, HOSTS), (err: Error) => err.name === 'TestbedError' && err.message.includes('already exist'))
      assert.deepEqual(await namespacesWithPrefix(prefix), before)
    })

    await t.test('curl fetches the file through the bridge', async () => {
      const output = join(workDir, 'h1-curl.bin')
      const countersBefore = await testbed.allCounters()
      const statsBefore = await readOriginStats(origin.endpoint)

      const curl = spawnIn('h1', 'h1-curl', 'curl', ['-sS', '--fail', '--max-time', '60', '-o', output, origin.endpoint.url])
      const result = await curl.exited
      assert.equal(result.exitCode, 0, `curl failed: ${result.stderrTail}`)
      assert.ok(result.usage != null, 'GNU time wrote no usage report')
      assert.ok(result.usage.maxRssKiB > 0)

      const countersAfter = await testbed.allCounters()
      const statsAfter = await readOriginStats(origin.endpoint)
      assert.equal((await readFile(output)).length, FILE_BYTES)
      assert.equal(await sha256File(output), file.sha256)
      assert.equal(statsAfter.bodyBytes - statsBefore.bodyBytes, FILE_BYTES)
      assert.equal(statsAfter.requests - statsBefore.requests, 1)

      const delta = (host: string, field: 'txBytes' | 'rxBytes'): number => (countersAfter.get(host)?.[field] ?? 0) - (countersBefore.get(host)?.[field] ?? 0)
      assert.ok(delta('origin', 'txBytes') >= FILE_BYTES, `origin sent ${delta('origin', 'txBytes')} bytes`)
      assert.ok(delta('h1', 'rxBytes') >= FILE_BYTES, `h1 received ${delta('h1', 'rxBytes')} bytes`)
      assert.ok(delta('h2', 'rxBytes') < FILE_BYTES / 100, `h2 received ${delta('h2', 'rxBytes')} bytes of a transfer to h1`)
    })

    await t.test('origin serves a byte range', async () => {
      const output = join(workDir, 'h2-range.bin')
      const statsBefore = await readOriginStats(origin.endpoint)
      const curl = spawnIn('h2', 'h2-range', 'curl', ['-sS', '--fail', '--max-time', '60', '-r', '1000-1099', '-o', output, origin.endpoint.url])
      assert.equal((await curl.exited).exitCode, 0)

      const expected = (await readFile(file.path)).subarray(1000, 1100)
      assert.deepEqual(await readFile(output), expected)
      const statsAfter = await readOriginStats(origin.endpoint)
      assert.equal(statsAfter.bodyBytes - statsBefore.bodyBytes, 100)
      assert.equal(statsAfter.rangeRequests - statsBefore.rangeRequests, 1)
    })

    await t.test('dfnode fetch through a supernode', async (st) => {
      if (!existsSync(join(PROJECT_ROOT, 'bin', 'dfnode'))) {
        st.skip('bin/dfnode does not exist yet')
        return
      }
      const cli = join(PROJECT_ROOT, 'bin', 'dfnode')
      const h1 = testbed.host('h1')
      const h2 = testbed.host('h2')
      await mkdir(join(workDir, 'super-data'))
      await mkdir(join(workDir, 'peer-data'))
      const statsBefore = await readOriginStats(origin.endpoint)

      const supernode = spawnIn('h1', 'h1-supernode', nodeBinary(), [cli, 'supernode', '--listen', `/ip4/${h1.address}/tcp/8002`, '--allow-origin', `${origin.endpoint.host.address}:${origin.endpoint.port}`, '--data-dir', join(workDir, 'super-data')])
      const ready = await supernode.waitForLine((line) => /^\/ip4\/198\.18\.0\.10\/.*\/p2p\/\w+$/.test(line.trim()), 60_000)

      const output = join(workDir, 'h2-dfnode.bin')
      const fetch = spawnIn('h2', 'h2-fetch', nodeBinary(), [cli, 'fetch', origin.endpoint.url, '-o', output, '--supernode', ready.line.trim(), '--listen', `/ip4/${h2.address}/tcp/0`, '--data-dir', join(workDir, 'peer-data'), '--json', '--seed-time', '120s'])
      const done = await fetch.waitForLine((line) => parseFetchResult(line) != null, 120_000)
      const reported = parseFetchResult(done.line)

      assert.ok(reported != null)
      assert.equal(reported.size, FILE_BYTES)
      assert.equal(reported.output, output)
      assert.equal(reported.fromSupernode + reported.fromPeers + reported.fromOrigin + reported.fromLocal, FILE_BYTES)
      assert.equal(await sha256File(output), file.sha256)
      const statsAfter = await readOriginStats(origin.endpoint)
      assert.equal(statsAfter.bodyBytes - statsBefore.bodyBytes, FILE_BYTES, 'the origin should send the file once, to the supernode')
    })
  } finally {
    await Promise.all(processes.filter((process) => process.isStarted).map(async (process) => await process.stop(5_000)))
    await testbed.destroy()
    await rm(workDir, { recursive: true, force: true })
  }

  assert.deepEqual(await namespacesWithPrefix(prefix), [])
})
