/**
 * `dfnode fetch` on a host where `dfnode proxy` runs goes through the
 * daemon's control socket, so the host keeps one node and one store.
 */
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { request } from 'node:http'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { TestOrigin } from './helpers/origin-server.ts'
import { DfnodeProcess, sha256, startSupernodeProcess, type FetchSummary } from './helpers/dfnode-process.ts'



describe('fetch through the host daemon', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-daemon-'))
    base = await origin.start()
  })

  /** Starts a supernode and a host daemon (`dfnode proxy`) with its own data dir, and returns that dir. */
  const startDaemon = async (name: string): Promise<string> => {
    const supernode = await startSupernodeProcess(join(dir, `supernode-${name}`))
    processes.push(supernode.process)
    const hostDir = join(dir, `host-${name}`)
    const daemon = new DfnodeProcess(['proxy', '--port', '0', '--supernode', supernode.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', hostDir])
    processes.push(daemon)
    await daemon.line(line => line.startsWith('http://'), 30_000)
    return hostDir
  }

  after(async () => {
    await Promise.all(processes.map(async child => await child.stop()))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('uses the control socket', async () => {
    const body = randomBytes(6 * 1024 * 1024)
    origin.files.set('/via-daemon.bin', { body })
    const hostDir = await startDaemon('1')
    assert.ok(existsSync(join(hostDir, 'dfnode.sock')))

    const fetchOnce = async (output: string, flags: string[] = ['--verbose'], env: NodeJS.ProcessEnv = {}): Promise<{ summary: FetchSummary, child: DfnodeProcess }> => {
      const child = new DfnodeProcess(['fetch', `${base}/via-daemon.bin`, '-o', join(dir, output), '--data-dir', hostDir, '--json', ...flags], env)
      processes.push(child)
      const summary = await child.json<FetchSummary>()
      assert.equal(await child.exited, 0)
      return { summary, child }
    }

    // The first fetch is downloaded by the daemon's node from the supernode.
    const first = await fetchOnce('first.out')
    assert.equal(first.summary.digest, sha256(body))
    assert.equal(first.summary.fromSupernode, body.byteLength)
    assert.match(first.child.stderr, /fetching through the local daemon/)
    assert.doesNotMatch(first.child.stderr, /piece store started/)
    assert.equal(sha256(await readFile(join(dir, 'first.out'))), sha256(body))

    // The second comes from the daemon's store.
    const second = await fetchOnce('second.out')
    assert.equal(second.summary.fromLocal, body.byteLength)
    assert.equal(sha256(await readFile(join(dir, 'second.out'))), sha256(body))
    assert.equal(origin.served.get('/via-daemon.bin'), body.byteLength)
    const log = await readFile(join(hostDir, 'logs', 'dfnode.log'), 'utf8')
    assert.equal(log.split('"control fetch served"').length - 1, 2)

    // Flags that only an embedded node would use get a warning instead of being dropped without a word.
    const third = await fetchOnce('third.out', ['--no-back-source', '--supernode', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ', '--seed-time', '5s'], { DFNODE_UPLOAD_RATE: '1MiB' })
    assert.equal(third.summary.fromLocal, body.byteLength)
    assert.match(third.child.stderr, /a local daemon uses this data dir and fetches with its own settings: --supernode, --no-back-source, --seed-time, DFNODE_UPLOAD_RATE not applied/)
    assert.doesNotMatch(second.child.stderr, /not applied/)
  })

  it('ends a read for a client that left', async () => {
    const body = randomBytes(32 * 1024 * 1024)
    origin.files.set('/left.bin', { body })
    const hostDir = await startDaemon('3')

    // A client reads the first bytes, stops reading until the daemon's writes wait for the socket
    // to drain, then closes the connection.
    await new Promise<void>((resolve, reject) => {
      const req = request({ socketPath: join(hostDir, 'dfnode.sock'), method: 'POST', path: '/v1/fetch', headers: { 'content-type': 'application/json' } }, res => {
        res.once('data', () => {
          res.pause()
          setTimeout(() => { req.destroy(); resolve() }, 2000)
        })
      })
      req.on('error', err => { if (!req.destroyed) reject(err) })
      req.end(JSON.stringify({ url: `${base}/left.bin` }))
    })

    // The daemon ends that read and logs it, instead of waiting for a drain that never comes.
    const deadline = Date.now() + 10_000
    let log = ''
    while (!log.includes('"control fetch failed"') && Date.now() < deadline) {
      await sleep(200)
      log = await readFile(join(hostDir, 'logs', 'dfnode.log'), 'utf8')
    }
    assert.match(log, /"control fetch failed"/)
  })

  it('reports daemon errors with their code', async () => {
    const hostDir = await startDaemon('2')

    const child = new DfnodeProcess(['fetch', `${base}/missing.bin`, '-o', join(dir, 'missing.out'), '--data-dir', hostDir])
    processes.push(child)
    assert.equal(await child.exited, 3)
    assert.match(child.stderr, /dfnode: .*404/)
    assert.equal(existsSync(join(dir, 'missing.out')), false)

    // A failure after the bytes started flowing arrives in the trailer, with its code.
    const body = randomBytes(1024 * 1024)
    origin.files.set('/wrong.bin', { body })
    const wrong = `sha256:${'0'.repeat(64)}`
    const mismatch = new DfnodeProcess(['fetch', `${base}/wrong.bin`, '-o', join(dir, 'wrong.out'), '--digest', wrong, '--data-dir', hostDir])
    processes.push(mismatch)
    assert.equal(await mismatch.exited, 4)
    assert.match(mismatch.stderr, /dfnode: .*expected sha256:0{64}/)
    assert.equal(existsSync(join(dir, 'wrong.out')), false)
  })
})
