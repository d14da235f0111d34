/**
 * Failures around a download: a supernode that dies half-way, a peer whose
 * output file serves corrupt pieces, origins that fail, hang or ignore Range, and a
 * wrong --digest. Every process is a real dfnode on loopback.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { mkdtemp, readdir, readFile, rm, open, stat, truncate, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { TestOrigin } from './helpers/origin-server.ts'
import { freePort } from '../e2e/lib/free-port.ts'
import { DfnodeProcess, dfnodeArgv, NODE, sha256, startSupernodeProcess, type FetchSummary } from './helpers/dfnode-process.ts'
import { taskKeyOf } from '../src/content/keys.ts'
import { rankSupernodes } from '../src/swarm/supernodes.ts'

const execFileAsync = promisify(execFile)

const MiB = 1024 * 1024




/**
 * Bytes on disk of the partial output that `dfnode fetch -o <dir>/<output>` is writing. The file
 * is sparse, so this counts the pieces written so far, whatever their offsets.
 */
async function partialBytes (dir: string, output: string): Promise<number> {
  const parts = (await readdir(dir)).filter(name => name.startsWith(`.${output}.dfnode-`) && name.endsWith('.part'))
  let bytes = 0
  for (const name of parts) bytes += ((await stat(join(dir, name)).catch(() => undefined))?.blocks ?? 0) * 512
  return bytes
}

/** Lists files below a directory, recursively. */
async function filesUnder (path: string): Promise<string[]> {
  if (!existsSync(path)) return []
  const entries = await readdir(path, { recursive: true, withFileTypes: true })
  return entries.filter(entry => entry.isFile()).map(entry => join(entry.parentPath, entry.name))
}

describe('faults', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let dir = ''
  let base = ''

  const fetchArgs = (name: string, path: string, supernode: string | undefined, extra: string[] = []): string[] => [
    'fetch', `${base}${path}`, '-o', join(dir, `${name}.out`),
    ...(supernode != null ? ['--supernode', supernode] : []),
    '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, name), '--json', ...extra
  ]

  const run = (args: string[]): DfnodeProcess => {
    const child = new DfnodeProcess(args)
    processes.push(child)
    return child
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-faults-'))
    base = await origin.start()
  })

  after(async () => {
    await Promise.all(processes.map(async child => await child.stop('SIGKILL')))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('supernode killed half-way: peers finish', async () => {
    // A slow origin that also ignores Range, so the back-to-source path must skip bytes itself.
    const body = randomBytes(32 * MiB)
    origin.files.set('/half.bin', { body, bytesPerSecond: 4 * MiB, ignoreRange: true })
    const supernode = await startSupernodeProcess(join(dir, 'half-supernode'), '127.0.0.1', ['--piece-size', '1MiB'])
    processes.push(supernode.process)
    const peers = [0, 1, 2].map(index => run(fetchArgs(`half-${index}`, '/half.bin', supernode.address, ['--seed-time', '60s'])))

    // Kill the supernode once every peer has written two pieces and before the origin has sent everything.
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      const written = await Promise.all(peers.map(async (_, index) => await partialBytes(dir, `half-${index}.out`)))
      if (written.every(bytes => bytes >= 2 * MiB)) break
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    await supernode.process.stop('SIGKILL')
    const servedBeforeKill = origin.served.get('/half.bin') ?? 0
    assert.ok(servedBeforeKill < body.byteLength, 'the supernode died before it had the whole file')
    // The peers' own requests need not be slow: each skips up to 32 MiB to reach its range.
    origin.files.set('/half.bin', { body, ignoreRange: true })

    const summaries = await Promise.all(peers.map(async peer => await peer.json<FetchSummary>(120_000)))
    // Once the origin sends byte 0 onwards for a piece request, each peer reads the content in one
    // pass instead of once per piece. The bound leaves room for the bytes the origin wrote into the
    // aborted piece requests. One read per piece took 1.9 GB in this test, one pass per peer 125 MB.
    const servedAfterKill = (origin.served.get('/half.bin') ?? 0) - servedBeforeKill
    assert.ok(servedAfterKill <= 2 * peers.length * body.byteLength, `the origin served ${servedAfterKill} bytes to the peers`)
    for (const [index, summary] of summaries.entries()) {
      assert.equal(summary.digest, sha256(body))
      assert.equal(sha256(await readFile(join(dir, `half-${index}.out`))), sha256(body))
      // Each peer fetched from the origin at most what the supernode had not verified yet.
      assert.ok(summary.fromOrigin <= body.byteLength - summary.fromSupernode, `peer ${index} took ${summary.fromOrigin} bytes from the origin`)
      assert.ok(summary.fromOrigin < body.byteLength, `peer ${index} fetched everything from the origin: ${JSON.stringify(summary)}\n${peers[index]!.stderr.slice(-4000)}`)
    }
  })

  it('corrupt peer is dropped, download completes', async () => {
    const body = randomBytes(16 * MiB)
    const digest = sha256(body)
    origin.files.set('/corrupt.bin', { body })

    // Peer A downloads the file straight from the origin and keeps serving it on a known port.
    const port = await freePort()
    const holder = run([...fetchArgs('corrupt-holder', '/corrupt.bin', undefined, ['--digest', digest, '--seed-time', '120s']).filter(arg => arg !== '/ip4/127.0.0.1/tcp/0' && arg !== '--listen'), '--listen', `/ip4/127.0.0.1/tcp/${port}`])
    const held = await holder.json<FetchSummary>()
    assert.equal(held.fromOrigin, body.byteLength)

    // Its pieces live in its output, not in its store. The output rots on disk after the holder
    // wrote it: same inode, same modification time. The time goes back through touch with the
    // nanoseconds stat printed, because utimes takes float seconds, which can land a nanosecond
    // off and so change the holder's file stamp.
    assert.deepEqual((await filesUnder(join(dir, 'corrupt-holder', 'store', 'pieces'))).filter(path => !path.includes('.tmp-')), [])
    const output = join(dir, 'corrupt-holder.out')
    const mtime = (await execFileAsync('stat', ['-c', '%.9Y', output])).stdout.trim()
    const file = await open(output, 'r+')
    for (let offset = 0; offset < body.byteLength; offset += MiB) await file.write(Buffer.from('corrupt!'), 0, 8, offset)
    await file.close()
    await execFileAsync('touch', ['-m', '-d', `@${mtime}`, output])
    assert.equal((await execFileAsync('stat', ['-c', '%.9Y', output])).stdout.trim(), mtime)
    const servedBefore = origin.served.get('/corrupt.bin') ?? 0

    // Peer B has only A's address: A is no supernode, so B finds it as a DHT provider, takes its
    // manifest, rejects every piece A sends, drops A and falls back to the origin.
    const fetcher = run(fetchArgs('corrupt-fetcher', '/corrupt.bin', `/ip4/127.0.0.1/tcp/${port}`, ['--digest', digest, '--verbose']))
    const summary = await fetcher.json<FetchSummary>()
    assert.match(fetcher.stderr, /dropped a peer that sent bytes failing verification/)
    assert.equal(summary.digest, digest)
    assert.equal(sha256(await readFile(join(dir, 'corrupt-fetcher.out'))), digest)
    assert.equal(summary.fromPeers, 0)
    assert.equal((origin.served.get('/corrupt.bin') ?? 0) - servedBefore, body.byteLength)
  })

  for (const [name, file, exitCode] of [
    ['origin 404', undefined, 3],
    ['origin 500', { body: Buffer.alloc(0), status: 500 }, 6]
  ] as const) {
    it(`${name}: clear error, nothing kept`, async () => {
      const path = `/${name.replace(' ', '-')}.bin`
      if (file != null) origin.files.set(path, file)
      const supernode = await startSupernodeProcess(join(dir, `${name}-supernode`))
      processes.push(supernode.process)
      const child = run(fetchArgs(name, path, supernode.address))
      const code = await child.exited
      assert.equal(code, exitCode)
      assert.match(child.stderr, new RegExp(`dfnode: .*${file?.status ?? 404}`))
      assert.equal(existsSync(join(dir, `${name}.out`)), false)
      assert.deepEqual((await readdir(dir)).filter(entry => entry.startsWith(`.${name}.out`)), [])
      assert.deepEqual(await filesUnder(join(dir, `${name}-supernode`, 'store', 'contents')), [])
      assert.deepEqual(await filesUnder(join(dir, name, 'store', 'contents')), [])
    })
  }

  it('hung origin: timeout error, no output', async () => {
    origin.files.set('/hung.bin', { body: Buffer.alloc(1024), hang: true })
    const supernode = await startSupernodeProcess(join(dir, 'hung-supernode'))
    processes.push(supernode.process)
    const child = run(fetchArgs('hung', '/hung.bin', supernode.address, ['--timeout', '3s']))
    assert.equal(await child.exited, 5)
    assert.match(child.stderr, /dfnode: .*tim/i)
    assert.equal(existsSync(join(dir, 'hung.out')), false)
    assert.deepEqual(await filesUnder(join(dir, 'hung', 'store', 'contents')), [])
  })

  it('digest request reuses content seeded by URL', async () => {
    const body = randomBytes(5 * MiB)
    origin.files.set('/by-url.bin', { body })
    const supernode = await startSupernodeProcess(join(dir, 'by-url-supernode'))
    processes.push(supernode.process)
    const first = await run(fetchArgs('by-url-first', '/by-url.bin', supernode.address)).json<FetchSummary>()
    assert.equal(first.fromSupernode, body.byteLength)

    // The same file asked for by digest: the supernode finds it by its content and fetches nothing.
    const second = await run(fetchArgs('by-url-second', '/by-url.bin', supernode.address, ['--digest', sha256(body)])).json<FetchSummary>()
    assert.equal(second.digest, sha256(body))
    assert.equal(second.fromSupernode, body.byteLength)
    assert.equal(second.fromOrigin, 0)
    assert.equal(origin.served.get('/by-url.bin'), body.byteLength)
  })

  it('digest mismatch: error, no output', async () => {
    // Several pieces, so that some arrive while the supernode reports the mismatch.
    const body = randomBytes(24 * MiB)
    origin.files.set('/mismatch.bin', { body })
    const supernode = await startSupernodeProcess(join(dir, 'mismatch-supernode'))
    processes.push(supernode.process)
    const wrong = sha256(Buffer.from('something else'))
    const child = run(fetchArgs('mismatch', '/mismatch.bin', supernode.address, ['--digest', wrong]))
    assert.equal(await child.exited, 4)
    assert.match(child.stderr, /dfnode: .*(digest|hash)/)
    assert.equal(existsSync(join(dir, 'mismatch.out')), false)
    assert.deepEqual(await filesUnder(join(dir, 'mismatch', 'store', 'contents')), [])

    // The supernode keeps the bytes under their own digest only, so a fetch with that digest
    // needs no second download from the origin.
    assert.equal((await filesUnder(join(dir, 'mismatch-supernode', 'store', 'contents'))).length, 1)
    const retry = run(fetchArgs('mismatch-retry', '/mismatch.bin', supernode.address, ['--digest', sha256(body)]))
    const summary = await retry.json<FetchSummary>()
    assert.equal(summary.digest, sha256(body))
    assert.equal(summary.fromSupernode, body.byteLength)
    assert.equal(origin.served.get('/mismatch.bin'), body.byteLength)
  })

  it('origin not allowed: peer fetches itself', async () => {
    const body = randomBytes(1 * MiB)
    origin.files.set('/refused.bin', { body })
    const supernode = await startSupernodeProcess(join(dir, 'refused-supernode'), 'registry.invalid')
    processes.push(supernode.process)
    const child = run(fetchArgs('refused', '/refused.bin', supernode.address))
    const summary = await child.json<FetchSummary>()
    assert.equal(summary.fromOrigin, body.byteLength)
    assert.match(child.stderr, /supernode may not fetch from this origin/)

    const strict = run(fetchArgs('refused-strict', '/refused.bin', supernode.address, ['--no-back-source']))
    assert.equal(await strict.exited, 7)
    assert.match(strict.stderr, /dfnode: .*--allow-origin/)
  })

  it('file size limit: error, no output', async () => {
    // One piece of 1 MiB, written under a limit of 512 KiB (ulimit -f counts KiB). The first
    // write call stops at the limit without an error; the next one fails with EFBIG.
    origin.files.set('/limited.bin', { body: randomBytes(MiB) })
    const supernode = await startSupernodeProcess(join(dir, 'limited-supernode'))
    processes.push(supernode.process)
    const argv = [NODE, ...dfnodeArgv(fetchArgs('limited', '/limited.bin', supernode.address))]
    const result = await execFileAsync('bash', ['-c', 'ulimit -f 512 && exec "$@"', 'bash', ...argv]).then(() => undefined, (err: { code: number, stdout: string, stderr: string }) => err)
    assert.notEqual(result, undefined, 'the fetch succeeded under the file size limit')
    assert.equal(result!.code, 1, result!.stderr)
    assert.match(result!.stderr, /writing .*limited\.out.* failed \(EFBIG/)
    assert.equal(JSON.parse(result!.stdout.trim().split('\n').at(-1)!).error.code, 'ERR_STORE')
    assert.equal(existsSync(join(dir, 'limited.out')), false)
    assert.deepEqual((await readdir(dir)).filter(name => name.startsWith('.limited.out.')), [])
  })

  it('zero-byte file downloads', async () => {
    origin.files.set('/empty.bin', { body: Buffer.alloc(0) })
    const supernode = await startSupernodeProcess(join(dir, 'empty-supernode'))
    processes.push(supernode.process)
    const child = run(fetchArgs('empty', '/empty.bin', supernode.address))
    const summary = await child.json<FetchSummary>()
    assert.equal(summary.size, 0)
    assert.equal((await readFile(join(dir, 'empty.out'))).byteLength, 0)
    assert.equal(await child.exited, 0)
  })

  it('two fetches of one URL on one host', async () => {
    const body = randomBytes(8 * MiB)
    origin.files.set('/twice.bin', { body })
    const supernode = await startSupernodeProcess(join(dir, 'twice-supernode'))
    processes.push(supernode.process)
    const shared = join(dir, 'twice-host')
    const first = run(['fetch', `${base}/twice.bin`, '-o', join(dir, 'twice-1.out'), '--supernode', supernode.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', shared, '--json'])
    const second = run(['fetch', `${base}/twice.bin`, '-o', join(dir, 'twice-2.out'), '--supernode', supernode.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', shared, '--json'])
    assert.deepEqual(await Promise.all([first.exited, second.exited]), [0, 0])
    assert.equal(sha256(await readFile(join(dir, 'twice-1.out'))), sha256(body))
    assert.equal(sha256(await readFile(join(dir, 'twice-2.out'))), sha256(body))
    assert.equal(origin.served.get('/twice.bin'), body.byteLength)
  })

  it('no supernode, no back-source: exit 7', async () => {
    origin.files.set('/nosource.bin', { body: randomBytes(1024) })
    const child = run(fetchArgs('nosource', '/nosource.bin', undefined, ['--no-back-source']))
    assert.equal(await child.exited, 7)
    assert.match(child.stderr, /dfnode: no supernode or peer/)
    assert.match(child.stderr, /no supernode is configured: pass --supernode/)
    assert.equal(origin.requests.get('/nosource.bin'), undefined)
  })

  it('unreachable supernode: back-source completes', async () => {
    const body = randomBytes(2 * MiB)
    origin.files.set('/unreachable.bin', { body })
    // Port 1 on loopback: nothing listens there, so the dial is refused at once.
    const child = run(fetchArgs('unreachable', '/unreachable.bin', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ'))
    const summary = await child.json<FetchSummary>()
    assert.equal(summary.fromOrigin, body.byteLength)
    assert.match(child.stderr, /cannot connect to the supernode, and no other supernode is configured/)

    // Without back-source, the error names the address and why it failed.
    const strict = run(fetchArgs('unreachable-strict', '/unreachable.bin', '/ip4/127.0.0.1/tcp/1/p2p/12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ', ['--no-back-source']))
    assert.equal(await strict.exited, 7)
    assert.match(strict.stderr, /dfnode: .*no supernode answered\. \/ip4\/127\.0\.0\.1\/tcp\/1\/p2p\/12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ: connection refused: nothing listens at that address\. Correct the supernode address, or drop --no-back-source/)
  })

  it('wrong supernode peer id is named', async () => {
    origin.files.set('/wrong-id.bin', { body: randomBytes(MiB) })
    const supernode = await startSupernodeProcess(join(dir, 'wrong-id-supernode'))
    processes.push(supernode.process)
    const actual = supernode.address.split('/p2p/')[1] ?? ''
    const wrong = '12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ'
    const address = supernode.address.replace(actual, wrong)
    const child = run(fetchArgs('wrong-id', '/wrong-id.bin', address, ['--no-back-source']))
    assert.equal(await child.exited, 7)
    assert.ok(child.stderr.includes(`the node at that address has peer id ${actual}, not ${wrong}: correct the /p2p/ part of the address`), child.stderr)
  })
})

describe('several supernodes', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-supernodes-'))
    base = await origin.start()
  })

  after(async () => {
    await Promise.all(processes.map(async child => await child.stop('SIGKILL')))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('rendezvous choice seeds; the next takes over', async () => {
    const first = await startSupernodeProcess(join(dir, 'supernode-a'))
    const second = await startSupernodeProcess(join(dir, 'supernode-b'))
    processes.push(first.process, second.process)
    const addresses = [first.address, second.address]
    const dataDirOf = new Map([[first.address, 'supernode-a'], [second.address, 'supernode-b']])

    // Find a URL whose first choice is supernode A, and one whose first choice is B.
    const pathFor = async (wanted: string): Promise<string> => {
      for (let index = 0; index < 64; index++) {
        const path = `/content-${index}.bin`
        const { key } = await taskKeyOf(`${base}${path}`)
        if (rankSupernodes(key, addresses)[0] === wanted) return path
      }
      throw new Error('no URL maps to the wanted supernode')
    }
    const pathA = await pathFor(first.address)
    const pathB = await pathFor(second.address)
    const bodyA = randomBytes(2 * MiB)
    const bodyB = randomBytes(2 * MiB)
    origin.files.set(pathA, { body: bodyA })
    origin.files.set(pathB, { body: bodyB })

    // Both supernodes configured: the content lands on its rendezvous choice only.
    const fetchVia = (name: string, path: string): DfnodeProcess => {
      const child = new DfnodeProcess(['fetch', `${base}${path}`, '-o', join(dir, `${name}.out`), ...addresses.flatMap(address => ['--supernode', address]), '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, name), '--json', '--no-back-source'])
      processes.push(child)
      return child
    }
    const viaA = await fetchVia('peer-a', pathA).json<FetchSummary>()
    assert.equal(viaA.fromSupernode, bodyA.byteLength)
    assert.equal((await filesUnder(join(dir, dataDirOf.get(first.address)!, 'store', 'contents'))).length, 1)
    assert.equal((await filesUnder(join(dir, dataDirOf.get(second.address)!, 'store', 'contents'))).length, 0)

    // Supernode B down: its content goes to A, the next in rank.
    await second.process.stop('SIGKILL')
    const viaB = await fetchVia('peer-b', pathB).json<FetchSummary>()
    assert.equal(viaB.digest, sha256(bodyB))
    assert.equal(viaB.fromSupernode, bodyB.byteLength)
    assert.equal(viaB.fromOrigin, 0)
    assert.equal((await filesUnder(join(dir, dataDirOf.get(first.address)!, 'store', 'contents'))).length, 2)
  })
})

describe('local store', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-local-'))
    base = await origin.start()
  })

  after(async () => {
    await Promise.all(processes.map(async child => await child.stop('SIGKILL')))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('second fetch reads the first output', async () => {
    const body = randomBytes(5_000_000)
    origin.files.set('/again.bin', { body })
    // The checks below count in 4 MiB pieces, which a content this small gets only when configured.
    const supernode = await startSupernodeProcess(join(dir, 'supernode'), '127.0.0.1', ['--piece-size', '4MiB'])
    processes.push(supernode.process)
    const fetchOnce = (output: string): DfnodeProcess => {
      const child = new DfnodeProcess(['fetch', `${base}/again.bin`, '-o', join(dir, output), '--supernode', supernode.address, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, 'host'), '--json', '--timeout', '60s'])
      processes.push(child)
      return child
    }
    const first = await fetchOnce('first.out').json<FetchSummary>()
    assert.equal(first.fromSupernode, body.byteLength)
    const second = fetchOnce('second.out')
    const summary = await second.json<FetchSummary>()
    assert.equal(summary.fromLocal, body.byteLength)
    assert.equal(summary.fromSupernode, 0)
    assert.equal(await second.exited, 0)
    assert.equal(sha256(await readFile(join(dir, 'second.out'))), sha256(body))
    assert.equal(origin.served.get('/again.bin'), body.byteLength)

    // The bytes were written once, into first.out: the store keeps no copy of the pieces.
    assert.deepEqual((await filesUnder(join(dir, 'host', 'store', 'pieces'))).filter(path => !path.includes('.tmp-')), [])

    // second.out is now the copy on record. After a byte of it changed, only the piece with that
    // byte comes from the supernode again.
    const changed = await readFile(join(dir, 'second.out'))
    changed[10] = (changed[10] ?? 0) ^ 0xff
    await writeFile(join(dir, 'second.out'), changed)
    const third = fetchOnce('third.out')
    const thirdSummary = await third.json<FetchSummary>()
    assert.equal(sha256(await readFile(join(dir, 'third.out'))), sha256(body))
    assert.equal(thirdSummary.fromLocal, body.byteLength - 4 * MiB)
    assert.equal(thirdSummary.fromSupernode, 4 * MiB)
    assert.equal(origin.served.get('/again.bin'), body.byteLength)

    // third.out cut short: the first piece, still whole in it, is read from it.
    await truncate(join(dir, 'third.out'), 4_500_000)
    const fourth = await fetchOnce('fourth.out').json<FetchSummary>()
    assert.equal(sha256(await readFile(join(dir, 'fourth.out'))), sha256(body))
    assert.equal(fourth.fromLocal, 4 * MiB)
    assert.equal(fourth.fromSupernode, body.byteLength - 4 * MiB)
  })
})

describe('killed fetch', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-killed-'))
    base = await origin.start()
  })

  after(async () => {
    await Promise.all(processes.map(async child => await child.stop('SIGKILL')))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('next fetch removes the temporary file left by SIGKILL', async () => {
    const body = randomBytes(8 * MiB)
    origin.files.set('/killed.bin', { body, bytesPerSecond: 2 * MiB })
    const args = ['fetch', `${base}/killed.bin`, '-o', join(dir, 'killed.out'), '--data-dir', join(dir, 'host'), '--listen', '/ip4/127.0.0.1/tcp/0', '--json', '--verbose']

    // A fetch straight from the slow origin is killed once it has written some bytes.
    const killed = new DfnodeProcess(args)
    processes.push(killed)
    const deadline = Date.now() + 60_000
    while (await partialBytes(dir, 'killed.out') === 0 && killed.child.exitCode === null && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    killed.child.kill('SIGKILL')
    await killed.exited
    const left = (await readdir(dir)).filter(name => name.endsWith('.part'))
    assert.equal(left.length, 1, `the killed fetch left no temporary file; its log ends with:\n${killed.stderr.slice(-3000)}`)

    // Another file whose process still runs (this test's own) stays.
    const alive = `.killed.out.dfnode-${process.pid}-00000000.part`
    await writeFile(join(dir, alive), 'in use')

    origin.files.set('/killed.bin', { body })
    const again = new DfnodeProcess(args)
    processes.push(again)
    const summary = await again.json<FetchSummary>()
    assert.equal(summary.digest, sha256(body))
    assert.deepEqual((await readdir(dir)).filter(name => name.endsWith('.part')), [alive])
  })
})

describe('stalled holder', () => {
  const origin = new TestOrigin()
  const processes: DfnodeProcess[] = []
  let dir = ''
  let base = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dfnode-stall-'))
    base = await origin.start()
  })

  after(async () => {
    for (const child of processes) child.child.kill('SIGCONT')
    await Promise.all(processes.map(async child => await child.stop('SIGKILL')))
    await origin.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('frozen peer mid-piece: pieces come elsewhere', async () => {
    const body = randomBytes(8 * MiB)
    const digest = sha256(body)
    origin.files.set('/stall.bin', { body })

    // Holder A has the whole file and uploads slowly, on a known port.
    const port = await freePort()
    const holder = new DfnodeProcess(['fetch', `${base}/stall.bin`, '-o', join(dir, 'holder.out'), '--digest', digest, '--data-dir', join(dir, 'holder'), '--listen', `/ip4/127.0.0.1/tcp/${port}`, '--json', '--seed-time', '300s', '--upload-rate', '256KiB'])
    processes.push(holder)
    await holder.json()
    const servedBefore = origin.served.get('/stall.bin') ?? 0

    // Peer C finds A as a DHT provider and starts fetching from it.
    const fetcher = new DfnodeProcess(['fetch', `${base}/stall.bin`, '-o', join(dir, 'fetcher.out'), '--digest', digest, '--supernode', `/ip4/127.0.0.1/tcp/${port}`, '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', join(dir, 'fetcher'), '--json', '--verbose'])
    processes.push(fetcher)
    const deadline = Date.now() + 60_000
    while (await partialBytes(dir, 'fetcher.out') === 0 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 50))
    }

    // A freezes with C's requests in flight; C gives up on it and takes the rest from the origin.
    holder.child.kill('SIGSTOP')
    const summary = await fetcher.json<FetchSummary>(120_000)
    assert.equal(summary.digest, digest)
    assert.equal(sha256(await readFile(join(dir, 'fetcher.out'))), digest)
    assert.ok(summary.fromPeers > 0, 'C got pieces from A before A froze')
    assert.ok(summary.fromOrigin > 0, 'C fetched the stalled pieces elsewhere')
    assert.equal((origin.served.get('/stall.bin') ?? 0) - servedBefore, summary.fromOrigin)
    // libp2p's connection monitor (ping) or the piece stall timer notices the frozen peer, whichever fires first.
    assert.match(fetcher.stderr, /"err":"(peer sent nothing for \d+ ms|The operation was aborted due to timeout)","failures":1,"msg":"piece stream failed"/)
  })
})
