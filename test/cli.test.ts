import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import packageJson from '../package.json' with { type: 'json' }
import { scanArguments } from '../src/cli/arguments.ts'
import type { CommandIo } from '../src/cli/command.ts'
import { createFetchCommand } from '../src/cli/fetch.ts'
import { parseHeaders, resolveOutput } from '../src/cli/fetch-input.ts'
import { COMMANDS, main } from '../src/cli/main.ts'
import { formatProgressLine, formatSummary, ProgressBar, REDRAW_INTERVAL_MS } from '../src/cli/progress.ts'
import { UsageError } from '../src/errors.ts'
import type { FetchProgress, FetchResult } from '../src/swarm/fetch-file.ts'
import { planOutput } from '../src/swarm/fetch-output.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const DFNODE = join(ROOT, 'bin', 'dfnode')
/** Node 24 installed by `npm ci`; the machine's own node may be older. */
const NODE = join(ROOT, 'node_modules', '.bin', 'node')
/** Upper bound of one CLI run, so that a hung child fails its test instead of the whole run. */
const RUN_LIMIT_MS = 120_000

const tempDirs: string[] = []

after(async () => {
  await Promise.all(tempDirs.map(async dir => { await rm(dir, { recursive: true, force: true }) }))
})

async function makeTempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dfnode-cli-'))
  tempDirs.push(dir)
  return dir
}

/** A sandbox for one CLI run: its own HOME, data dir and a config file that lists no supernodes. */
interface Sandbox {
  dir: string
  home: string
  dataDir: string
  configPath: string
  env: Record<string, string>
}

async function makeSandbox (): Promise<Sandbox> {
  const dir = await makeTempDir()
  const home = join(dir, 'home')
  await mkdir(home)
  const configPath = join(dir, 'config.yaml')
  // An explicit empty supernode list keeps the CLI from reading /etc/dragonfly.conf, and
  // DFNODE_CONFIG keeps it from reading /etc/dfnode/config.yaml.
  await writeFile(configPath, 'supernodes: []\nlisten: [/ip4/127.0.0.1/tcp/0]\n')

  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value != null && !name.startsWith('DFNODE_')) env[name] = value
  }
  env.HOME = home
  env.DFNODE_CONFIG = configPath
  return { dir, home, dataDir: join(dir, 'data'), configPath, env }
}

interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

interface RunOptions {
  env?: Record<string, string>
  cwd?: string
  /** Executable to run; default Node 24 with bin/dfnode as its first argument. */
  command?: string[]
  /** Called once the child runs, e.g. to send it a signal. */
  started?: (child: ReturnType<typeof spawn>) => void
}

/** Runs the CLI as a child process and collects its output. */
async function runDfnode (args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [executable, ...prefix] = options.command ?? [NODE, DFNODE]
  const child = spawn(executable ?? NODE, [...prefix, ...args], {
    env: options.env ?? process.env,
    cwd: options.cwd ?? ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    signal: AbortSignal.timeout(RUN_LIMIT_MS)
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8') })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
  child.on('error', () => { /* the exit event reports a kill by the run limit */ })
  options.started?.(child)
  const [code, signal] = await once(child, 'close') as [number | null, NodeJS.Signals | null]
  return { code, signal, stdout, stderr }
}

/** Returns the lines of stderr that are not pino log lines, which are JSON objects. */
function messageLines (stderr: string): string[] {
  return stderr.split('\n').filter(line => line !== '' && !line.startsWith('{'))
}

/** Asserts a usage error: exit 2, nothing on stdout, one `dfnode: ` line on stderr containing every fragment. */
function assertUsageError (result: RunResult, fragments: readonly string[], label: string): void {
  assert.equal(result.code, 2, `${label}: exit code; stderr: ${result.stderr}`)
  assert.equal(result.stdout, '', `${label}: stdout`)
  const lines = result.stderr.split('\n').filter(line => line !== '')
  assert.equal(lines.length, 1, `${label}: one stderr line, got ${JSON.stringify(result.stderr)}`)
  const line = lines[0] ?? ''
  assert.ok(line.startsWith('dfnode: '), `${label}: "${line}" starts with "dfnode: "`)
  for (const fragment of fragments) assert.ok(line.includes(fragment), `${label}: "${line}" lacks "${fragment}"`)
}

/** A real origin on 127.0.0.1: /files/<name> serves a body, and /hang/<name> never sends a response. */
class TinyOrigin {
  readonly bodies = new Map<string, Buffer>()
  readonly hanging = new Set<ServerResponse>()
  /** Resolves each time a request to /hang/ arrives. */
  private hangWaiters: Array<() => void> = []
  private readonly server: Server

  constructor () {
    this.server = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname
      if (path.startsWith('/hang/')) {
        this.hanging.add(res)
        for (const resolve of this.hangWaiters.splice(0)) resolve()
        return
      }
      const body = this.bodies.get(path)
      if (body == null) {
        res.writeHead(404).end('not found')
        return
      }
      res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' }).end(body)
    })
  }

  async start (): Promise<string> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async hangingRequest (): Promise<void> {
    await new Promise<void>(resolve => this.hangWaiters.push(resolve))
  }

  async stop (): Promise<void> {
    for (const res of this.hanging) res.destroy()
    this.server.closeAllConnections()
    this.server.close()
    await once(this.server, 'close')
  }
}

describe('cli help and version', () => {
  it('--help lists every command', async () => {
    const result = await runDfnode(['--help'])
    assert.equal(result.code, 0, result.stderr)
    for (const command of COMMANDS) assert.match(result.stdout, new RegExp(`^\\s+${command.name}\\s`, 'm'), command.name)
    for (const option of ['--config', '--data-dir', '--verbose', '--version']) assert.ok(result.stdout.includes(option), option)
  })

  it('each command --help lists every option with its default', async () => {
    for (const command of COMMANDS) {
      const result = await runDfnode([command.name, '--help'])
      assert.equal(result.code, 0, `${command.name}: ${result.stderr}`)
      const lines = result.stdout.split('\n')
      for (const option of [...command.options.map(spec => spec.name), 'config', 'data-dir', 'verbose']) {
        const line = lines.find(candidate => new RegExp(`--${option}\\s`).test(candidate))
        assert.ok(line != null, `${command.name} --help lacks --${option}`)
        assert.match(line, /\((?:default: [^)]+|required)\)/, `${command.name} --${option} has neither a default nor "(required)"`)
      }
    }
  })

  it('fetch --help documents every fetch option', async () => {
    const result = await runDfnode(['fetch', '--help'])
    for (const flag of ['-o, --output', '--digest', '-H, --header', '--filter', '--supernode', '--timeout', '--no-back-source', '--json', '--listen', '--seed-time']) {
      assert.ok(result.stdout.includes(flag), flag)
    }
    assert.ok(result.stdout.includes('dfnode fetch <url>'))
  })

  it('--version prints the package version', async () => {
    const result = await runDfnode(['--version'])
    assert.equal(result.code, 0)
    assert.equal(result.stdout, `dfnode ${packageJson.version}\n`)
    assert.equal(result.stderr, '')
    const short = await runDfnode(['fetch', '-v'])
    assert.equal(short.code, 0)
    assert.equal(short.stdout, `dfnode ${packageJson.version}\n`)
  })
})

describe('cli usage errors', () => {
  let sandbox: Sandbox

  before(async () => {
    sandbox = await makeSandbox()
  })

  const url = 'http://127.0.0.1:9/files/a.bin'
  const hex = 'ab'.repeat(32)

  it('rejects bad input with one line and exit code 2', async () => {
    const invalidYaml = join(sandbox.dir, 'invalid.yaml')
    await writeFile(invalidYaml, 'listen: [/ip4/0.0.0.0/tcp/0\n')
    const existingDir = join(sandbox.dir, 'existing')
    await mkdir(existingDir)

    const cases: Array<[string, string[], string[]]> = [
      ['invalid URL', ['fetch', 'not a url'], ['invalid URL "not a url"', 'http://']],
      ['ftp scheme', ['fetch', 'ftp://127.0.0.1/a.bin'], ['unsupported URL scheme "ftp"', 'use http or https']],
      ['digest too short', ['fetch', url, '--digest', 'sha256:abc'], ['invalid --digest "sha256:abc"', '64 lowercase hex']],
      ['digest too long', ['fetch', url, '--digest', `sha256:${hex}00`], [`invalid --digest "sha256:${hex}00"`]],
      ['digest uppercase', ['fetch', url, '--digest', `sha256:${hex.toUpperCase()}`], [`invalid --digest "sha256:${hex.toUpperCase()}"`]],
      ['digest without prefix', ['fetch', url, '--digest', hex], [`invalid --digest "${hex}"`]],
      ['digest of another hash', ['fetch', url, '--digest', `sha512:${hex}`], [`invalid --digest "sha512:${hex}"`]],
      ['header without colon', ['fetch', url, '-H', 'X-Token abc'], ['invalid header starting "X-Token"', 'Name: value']],
      ['header with empty name', ['fetch', url, '-H', ': abc'], ['invalid header with an empty name']],
      ['header with space in name', ['fetch', url, '--header', 'Bad Name: v'], ['invalid header starting "Bad"']],
      ['reserved header', ['fetch', url, '-H', 'Host: elsewhere.example'], ['header Host cannot be given with -H']],
      ['range header', ['fetch', url, '-H', 'range: bytes=0-1'], ['header range cannot be given with -H']],
      ['supernode without tcp', ['fetch', url, '--supernode', '/ip4/127.0.0.1'], ['invalid --supernode "/ip4/127.0.0.1"']],
      ['supernode not a multiaddr', ['fetch', url, '--supernode', '127.0.0.1:8002'], ['invalid --supernode "127.0.0.1:8002"', 'not a multiaddr']],
      ['missing config file', ['fetch', url, '--config', join(sandbox.dir, 'missing.yaml')], [join(sandbox.dir, 'missing.yaml'), 'no such file', '--config']],
      ['config is a directory', ['fetch', url, '--config', sandbox.dir], [sandbox.dir, 'is a directory']],
      ['config is invalid YAML', ['fetch', url, '--config', invalidYaml], ['invalid YAML', invalidYaml]],
      ['bad timeout', ['fetch', url, '--timeout', 'soon'], ['invalid --timeout "soon"']],
      ['negative timeout', ['fetch', url, '--timeout', '-5'], ['invalid --timeout "-5"']],
      ['negative upload rate', ['fetch', url, '--upload-rate', '-10'], ['invalid --upload-rate "-10"']],
      ['negative piece size', ['supernode', '--piece-size', '-1'], ['invalid --piece-size "-1"']],
      ['output is a directory', ['fetch', url, '-o', existingDir], [`output path ${existingDir} is a directory`]],
      ['no file name in URL', ['fetch', 'http://127.0.0.1:9/dir/'], ['cannot derive a file name', '-o']],
      ['output directory missing', ['fetch', url, '-o', join(sandbox.dir, 'nowhere', 'a.bin')], ['does not exist']],
      ['output folder is a file', ['fetch', url, '-o', join(invalidYaml, 'a.bin')], [`${invalidYaml} is a file, not a directory`]],
      ['URL without host', ['fetch', 'http:///a.bin'], ['missing host in URL "http:///a.bin"']],
      ['missing output value', ['fetch', url, '-o'], ['missing value for --output']],
      ['unknown option', ['fetch', url, '--bogus'], ['unknown option --bogus', 'dfnode fetch --help']],
      ['unknown short option', ['fetch', url, '-z'], ['unknown option -z']],
      ['unknown command', ['frobnicate'], ['unknown command "frobnicate"', 'supernode', 'fetch']],
      ['missing command', [], ['missing command']],
      ['missing URL', ['fetch'], ['missing url: usage dfnode fetch <url> [options]']],
      ['extra argument', ['fetch', url, 'extra'], ['unexpected argument "extra": usage dfnode fetch <url> [options]']],
      ['argument to supernode', ['supernode', 'extra'], ['unexpected argument "extra": usage dfnode supernode [options]']],
      ['bad piece size', ['supernode', '--piece-size', '3MiB'], ['invalid --piece-size "3MiB"', 'power of two']],
      ['empty allowed origin', ['supernode', '--allow-origin', ''], ['invalid --allow-origin "": expected a host such as registry.example.com']],
      ['bad environment value', ['fetch', url], ['invalid DFNODE_SEED_TIME "forever"']],
      ['bad log level', ['fetch', url], ['invalid DFNODE_LOG_LEVEL "bogus": expected one of fatal, error, warn, info, debug, trace']]
    ]
    for (const [label, args, fragments] of cases) {
      const env = label === 'bad environment value'
        ? { ...sandbox.env, DFNODE_SEED_TIME: 'forever' }
        : label === 'bad log level' ? { ...sandbox.env, DFNODE_LOG_LEVEL: 'bogus' } : sandbox.env
      const result = await runDfnode([...args, '--data-dir', sandbox.dataDir], { env, cwd: sandbox.dir })
      assertUsageError(result, fragments, label)
    }
    await assert.rejects(stat(sandbox.dataDir), { code: 'ENOENT' }, 'no command got as far as creating the data dir')
  })

  it('data dir under /proc exits 2', async () => {
    // Node's recursive mkdir did not return for /proc/x, so dfnode hung there before.
    for (const args of [['fetch', url], ['supernode'], ['proxy', '--port', '0']]) {
      const result = await runDfnode([...args, '--data-dir', '/proc/dfnode-test'], { env: sandbox.env, cwd: sandbox.dir })
      assertUsageError(result, ['cannot create data dir /proc/dfnode-test or its logs folder', 'pass a writable directory with --data-dir or DFNODE_DATA_DIR'], args[0] ?? '')
    }
  })

  it('unusable listen or output exits 2', async () => {
    const busy = createServer()
    await new Promise<void>(resolve => busy.listen(0, '127.0.0.1', resolve))
    const port = (busy.address() as AddressInfo).port
    try {
      const cases: Array<[string, string[], string[]]> = [
        ['libp2p port in use', ['supernode', '--listen', `/ip4/127.0.0.1/tcp/${port}`], [`cannot listen on /ip4/127.0.0.1/tcp/${port}: the port is in use`, 'pass other --listen addresses']],
        ['proxy port in use', ['proxy', '--port', String(port)], [`cannot listen on 127.0.0.1:${port}: the port is in use`, 'pass another --port']],
        // 198.18.0.0/15 is for benchmarks, so no interface here has it; binding fails without sending anything.
        ['proxy host not local', ['proxy', '--port', '0', '--host', '198.18.0.1'], ['198.18.0.1 is not an address of this machine', 'pass --host']],
        ['output folder takes no file', ['fetch', url, '-o', '/proc/dfnode-test.bin'], ['cannot create a file in output folder /proc', 'pass -o with a writable folder']]
      ]
      for (const [index, [label, args, fragments]] of cases.entries()) {
        const dataDir = join(sandbox.dir, `unusable-${index}`)
        const result = await runDfnode([...args, '--data-dir', dataDir], { env: sandbox.env, cwd: sandbox.dir })
        assertUsageError({ ...result, stderr: messageLines(result.stderr).join('\n') }, fragments, label)
        if (args[0] === 'proxy') {
          // The proxy binds its port before its libp2p node starts, and the node would create the identity key.
          await assert.rejects(stat(join(dataDir, 'identity.key')), { code: 'ENOENT' }, `${label}: the node started`)
        }
      }
    } finally {
      await new Promise(resolve => busy.close(resolve))
    }
  })

  it('a malformed header never echoes its value', async () => {
    const result = await runDfnode(['fetch', url, '-H', 'Authorization Bearer s3cr3t-token', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assertUsageError(result, ['invalid header starting "Authorization"'], 'header')
    assert.ok(!result.stderr.includes('s3cr3t-token'))
  })

  it('unknown option without a command is named', async () => {
    assertUsageError(await runDfnode(['--bogus']), ['unknown option --bogus: run dfnode --help for usage'], '--bogus')
    assertUsageError(await runDfnode(['--verbose']), ['missing command: expected one of'], '--verbose alone')
  })

  it('global options may come before the command', async () => {
    const result = await runDfnode(['--verbose', '--data-dir', sandbox.dataDir, 'fetch', 'ftp://127.0.0.1/a.bin'], { env: sandbox.env, cwd: sandbox.dir })
    assertUsageError(result, ['unsupported URL scheme "ftp"'], 'options first')
  })
})

describe('cli launcher Node version check', () => {
  const systemNode = '/usr/bin/node'
  const probe = spawnSync(systemNode, ['-p', 'process.versions.node'], { encoding: 'utf8' })
  const systemVersion = probe.status === 0 ? probe.stdout.trim() : undefined
  const skip = systemVersion == null
    ? `${systemNode} is not installed`
    : Number(systemVersion.split('.')[0]) >= 22 ? `${systemNode} is ${systemVersion}, not older than 22` : false

  it('old node prints one line and exits 1', { skip }, async () => {
    const result = await runDfnode(['--version'], { command: [systemNode, DFNODE] })
    assert.equal(result.code, 1)
    assert.equal(result.stdout, '')
    const lines = result.stderr.split('\n').filter(line => line !== '')
    assert.equal(lines.length, 1, result.stderr)
    for (const fragment of [`Node.js ${systemVersion ?? ''}`, 'Node.js 24 LTS', '>= 22', 'npm ci', 'node_modules/.bin/node', 'npx dfnode', 'npm exec dfnode']) {
      assert.ok(result.stderr.includes(fragment), `lacks "${fragment}": ${result.stderr}`)
    }
  })

  it('missing local Node suggests npm ci', { skip }, async () => {
    // A copy of the launcher in a folder without node_modules, as after `npm ci --ignore-scripts`.
    const dir = await mkdtemp(join(tmpdir(), 'dfnode-launcher-'))
    try {
      await mkdir(join(dir, 'bin'))
      await writeFile(join(dir, 'bin', 'dfnode'), await readFile(DFNODE))
      await writeFile(join(dir, 'package.json'), '{"type":"module"}')
      const result = await runDfnode(['--version'], { command: [systemNode, join(dir, 'bin', 'dfnode')] })
      assert.equal(result.code, 1)
      assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr)
      for (const fragment of [`Node.js ${systemVersion ?? ''}`, 'node_modules/.bin/node', 'is missing', 'without --ignore-scripts']) {
        assert.ok(result.stderr.includes(fragment), `lacks "${fragment}": ${result.stderr}`)
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('shebang finds the old node on a PATH without node_modules/.bin', { skip }, async () => {
    const result = await runDfnode(['fetch', 'http://127.0.0.1:9/a'], { command: [DFNODE], env: { PATH: '/usr/bin:/bin', HOME: tmpdir() } })
    assert.equal(result.code, 1)
    assert.ok(result.stderr.includes(`found Node.js ${systemVersion ?? ''}`), result.stderr)
  })

  it('shebang runs the CLI with Node 24 on PATH', async () => {
    const result = await runDfnode(['--version'], { command: [DFNODE], env: { PATH: `${join(ROOT, 'node_modules', '.bin')}:/usr/bin:/bin`, HOME: tmpdir() } })
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stdout, `dfnode ${packageJson.version}\n`)
  })
})

describe('cli fetch', () => {
  let origin: TinyOrigin
  let base: string
  const body = randomBytes(300 * 1024)
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`

  before(async () => {
    origin = new TinyOrigin()
    origin.bodies.set('/files/blob.bin', body)
    base = await origin.start()
  })

  after(async () => {
    await origin.stop()
  })

  it('--json prints one FetchResult object and nothing else on stdout', async () => {
    const sandbox = await makeSandbox()
    const output = join(sandbox.dir, 'out.bin')
    const result = await runDfnode(['fetch', `${base}/files/blob.bin?Signature=abc`, '-o', output, '--json', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 0, result.stderr)

    const lines = result.stdout.split('\n').filter(line => line !== '')
    assert.equal(lines.length, 1, result.stdout)
    const parsed = JSON.parse(lines[0] ?? '') as FetchResult
    assert.deepEqual(Object.keys(parsed).sort(), ['digest', 'fromLocal', 'fromOrigin', 'fromPeers', 'fromSupernode', 'key', 'ms', 'output', 'size'])
    assert.equal(parsed.digest, digest)
    assert.equal(parsed.size, body.length)
    assert.equal(parsed.output, output)
    assert.equal(parsed.fromOrigin, body.length, 'no supernode is configured, so every byte comes from the origin')
    assert.deepEqual(await readFile(output), body)
    assert.deepEqual(messageLines(result.stderr), [], 'no summary line in JSON mode')

    const log = await readFile(join(sandbox.dataDir, 'logs', 'dfnode.log'), 'utf8')
    assert.ok(log.includes('"role":"fetch"'), 'the log file receives the log lines')
  })

  it('-o /dev/stdout writes into a pipe', async () => {
    // In a shell pipe, /dev/stdout links to the anonymous pipe as pipe:[inode].
    const sandbox = await makeSandbox()
    const child = spawn('bash', ['-c', '"$@" | cat', 'bash', NODE, DFNODE, 'fetch', `${base}/files/blob.bin`, '-o', '/dev/stdout', '--data-dir', sandbox.dataDir], {
      env: sandbox.env, cwd: sandbox.dir, stdio: ['ignore', 'pipe', 'pipe'], signal: AbortSignal.timeout(RUN_LIMIT_MS)
    })
    const chunks: Buffer[] = []
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { chunks.push(chunk) })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
    const [code] = await once(child, 'close') as [number | null]
    assert.equal(code, 0, stderr)
    assert.equal(`sha256:${createHash('sha256').update(Buffer.concat(chunks)).digest('hex')}`, digest)
  })

  it('writes to the last URL segment and prints a summary', async () => {
    const sandbox = await makeSandbox()
    const result = await runDfnode(['fetch', `${base}/files/blob.bin`, '--digest', digest, '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stdout, '')
    assert.deepEqual(await readFile(join(sandbox.dir, 'blob.bin')), body)
    const summary = messageLines(result.stderr)
    assert.equal(summary.length, 1, result.stderr)
    assert.match(summary[0] ?? '', new RegExp(`^fetched ${join(sandbox.dir, 'blob.bin')} \\(300\\.0 KiB, ${digest}\\) in .*: supernode 0 B, peers 0 B, origin 300\\.0 KiB, local 0 B$`))
    assert.equal(result.stderr.split('\n').filter(line => line !== '').length, 1, `only the summary on stderr: ${result.stderr}`)
  })

  it('fetch logs info to the file only', async () => {
    const sandbox = await makeSandbox()
    const quiet = await runDfnode(['fetch', `${base}/files/blob.bin`, '-o', join(sandbox.dir, 'quiet.bin'), '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(quiet.code, 0, quiet.stderr)
    assert.ok(!quiet.stderr.includes('"msg":"download complete"'), quiet.stderr)
    const log = await readFile(join(sandbox.dataDir, 'logs', 'dfnode.log'), 'utf8')
    assert.match(log, /"msg":"download complete"/)

    const verbose = await runDfnode(['fetch', `${base}/files/blob.bin`, '-o', join(sandbox.dir, 'verbose.bin'), '--verbose', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(verbose.code, 0, verbose.stderr)
    assert.match(verbose.stderr, /"msg":"download complete"/)

    const fromEnv = await runDfnode(['fetch', `${base}/files/blob.bin`, '-o', join(sandbox.dir, 'env.bin'), '--data-dir', sandbox.dataDir], { env: { ...sandbox.env, DFNODE_LOG_LEVEL: 'info' }, cwd: sandbox.dir })
    assert.equal(fromEnv.code, 0, fromEnv.stderr)
    assert.match(fromEnv.stderr, /"msg":"download complete"/)
  })

  it('-o through a link keeps it', async () => {
    const sandbox = await makeSandbox()
    const real = join(sandbox.dir, 'real.bin')
    const link = join(sandbox.dir, 'link.bin')
    await writeFile(real, 'old content')
    await symlink(real, link)
    const result = await runDfnode(['fetch', `${base}/files/blob.bin`, '-o', link, '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 0, result.stderr)
    assert.ok((await lstat(link)).isSymbolicLink(), 'the link is still a link')
    assert.deepEqual(await readFile(real), body)
  })

  it('-o a named pipe writes into it', async () => {
    const sandbox = await makeSandbox()
    const pipe = join(sandbox.dir, 'out.pipe')
    const created = spawnSync('mkfifo', [pipe])
    assert.equal(created.status, 0, `mkfifo: ${String(created.stderr)}`)
    // cat reads the pipe as a user's reader would. It is killed if no writer ever opens the pipe.
    const reader = spawn('cat', [pipe], { stdio: ['ignore', 'pipe', 'ignore'], signal: AbortSignal.timeout(RUN_LIMIT_MS) })
    reader.on('error', () => { /* the close event reports a kill */ })
    const chunks: Buffer[] = []
    reader.stdout.on('data', (chunk: Buffer) => { chunks.push(chunk) })
    const read = once(reader, 'close')

    const result = await runDfnode(['fetch', `${base}/files/blob.bin`, '-o', pipe, '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 0, result.stderr)
    assert.ok((await lstat(pipe)).isFIFO(), 'the pipe is still a pipe')
    // A pipe replaced by a regular file would leave cat waiting for a writer, so it is stopped after 10 s.
    const stopReader = setTimeout(() => { reader.kill() }, 10_000)
    await read
    clearTimeout(stopReader)
    assert.deepEqual(Buffer.concat(chunks), body)
    assert.deepEqual(await readdir(join(sandbox.dataDir, 'partial')), [], 'no temporary file is left')
  })

  it('a pipe nobody reads ends at --timeout', { timeout: 60_000 }, async () => {
    const sandbox = await makeSandbox()
    const pipe = join(sandbox.dir, 'unread.pipe')
    const created = spawnSync('mkfifo', [pipe])
    assert.equal(created.status, 0, `mkfifo: ${String(created.stderr)}`)
    const result = await runDfnode(['fetch', `${base}/files/blob.bin`, '-o', pipe, '--timeout', '2', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 5, result.stderr)
    assert.deepEqual(messageLines(result.stderr), [`dfnode: no process opened ${pipe} for reading within 2s: start the reader of the pipe, or raise --timeout`])
    assert.deepEqual(await readdir(join(sandbox.dataDir, 'partial')), [], 'no temporary file is left')
  })

  it('--digest reuses a file fetched by URL', async () => {
    const sandbox = await makeSandbox()
    const args = ['fetch', `${base}/files/blob.bin`, '--json', '--data-dir', sandbox.dataDir]
    const first = await runDfnode([...args, '-o', join(sandbox.dir, 'by-url.bin')], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(first.code, 0, first.stderr)
    assert.equal((JSON.parse(first.stdout) as FetchResult).fromOrigin, body.length)

    const second = await runDfnode([...args, '-o', join(sandbox.dir, 'by-digest.bin'), '--digest', digest], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(second.code, 0, second.stderr)
    const result = JSON.parse(second.stdout) as FetchResult
    assert.equal(result.fromOrigin, 0, 'the content came from the first output')
    assert.equal(result.fromLocal, body.length)
    assert.deepEqual(await readFile(join(sandbox.dir, 'by-digest.bin')), body)
  })

  it('--json reports a failure on stdout', async () => {
    const sandbox = await makeSandbox()
    const result = await runDfnode(['fetch', `${base}/files/absent.bin`, '--json', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 3, result.stderr)
    const lines = result.stdout.split('\n').filter(line => line !== '')
    assert.equal(lines.length, 1, result.stdout)
    const failure = JSON.parse(lines[0] ?? '') as { error: { code: string, message: string }, exitCode: number }
    assert.equal(failure.exitCode, 3)
    assert.equal(typeof failure.error.code, 'string')
    assert.equal(`dfnode: ${failure.error.message}`, messageLines(result.stderr)[0])

    const usage = await runDfnode(['fetch', 'ftp://127.0.0.1/x', '--json', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(usage.code, 2, usage.stderr)
    assert.equal((JSON.parse(usage.stdout) as { exitCode: number }).exitCode, 2)

    // An option the command line parser rejects is reported the same way.
    const unknown = await runDfnode(['fetch', `${base}/files/blob.bin`, '--json', '--bogus', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(unknown.code, 2, unknown.stderr)
    const rejected = JSON.parse(unknown.stdout) as { error: { code: string, message: string }, exitCode: number }
    assert.equal(rejected.exitCode, 2)
    assert.equal(rejected.error.code, 'ERR_USAGE')
    assert.match(rejected.error.message, /unknown option --bogus/)

    // With --no-json after --json, stdout stays empty.
    const plain = await runDfnode(['fetch', `${base}/files/blob.bin`, '--json', '--no-json', '--bogus', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(plain.code, 2, plain.stderr)
    assert.equal(plain.stdout, '')
  })

  it('origin 404 exits 3', async () => {
    const sandbox = await makeSandbox()
    const result = await runDfnode(['fetch', `${base}/files/absent.bin`, '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 3, result.stderr)
    const lines = messageLines(result.stderr)
    assert.equal(lines.length, 1, result.stderr)
    assert.match(lines[0] ?? '', /^dfnode: /)
    const log = await readFile(join(sandbox.dataDir, 'logs', 'dfnode.log'), 'utf8')
    assert.match(log, /"level":50,.*"msg":"fetch failed"/, 'the log file ends with the error')
  })

  it('fetch warns in plain text', async () => {
    const sandbox = await makeSandbox()
    // Port 9 (discard) has no listener here, so every origin request fails and is retried.
    const result = await runDfnode(['fetch', 'http://127.0.0.1:9/files/a.bin', '-o', join(sandbox.dir, 'a.bin'), '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 6, result.stderr)
    const lines = result.stderr.split('\n').filter(line => line !== '')
    assert.ok(lines.every(line => line.startsWith('dfnode: ')), result.stderr)
    assert.ok(lines.some(line => line.startsWith('dfnode: warning: origin request failed, retrying (err: ')), result.stderr)
  })

  it('--no-back-source without supernodes exits 7', async () => {
    const sandbox = await makeSandbox()
    const result = await runDfnode(['fetch', `${base}/files/blob.bin`, '--no-back-source', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 7, result.stderr)
    assert.match(messageLines(result.stderr)[0] ?? '', /^dfnode: .*back-to-source/)
    await assert.rejects(stat(join(sandbox.dir, 'blob.bin')), { code: 'ENOENT' })
  })

  it('--timeout on a hung origin exits 5', async () => {
    const sandbox = await makeSandbox()
    const result = await runDfnode(['fetch', `${base}/hang/slow.bin`, '--timeout', '1', '--data-dir', sandbox.dataDir], { env: sandbox.env, cwd: sandbox.dir })
    assert.equal(result.code, 5, result.stderr)
    assert.deepEqual(messageLines(result.stderr), [`dfnode: download of ${base}/hang/slow.bin timed out after 1s: raise --timeout, or check that a supernode or the origin is reachable`])
  })

  it('SIGINT aborts the download and exits 130', async () => {
    const sandbox = await makeSandbox()
    const requested = origin.hangingRequest()
    const result = await runDfnode(['fetch', `${base}/hang/forever.bin`, '--data-dir', sandbox.dataDir], {
      env: sandbox.env,
      cwd: sandbox.dir,
      started: child => { void requested.then(() => child.kill('SIGINT')) }
    })
    assert.equal(result.code, 130, result.stderr)
    assert.deepEqual(messageLines(result.stderr), ['dfnode: interrupted by SIGINT'])
    await assert.rejects(stat(join(sandbox.dir, 'forever.bin')), { code: 'ENOENT' })
  })
})

describe('fetch output plan', () => {
  it('/dev/null plans a copy in data dir', async () => {
    // Only planned, never written: a rename onto /dev/null would replace the device.
    const dataDir = join(await makeTempDir(), 'data')
    const plan = await planOutput('/dev/null', dataDir)
    assert.equal(plan.target, '/dev/null')
    assert.equal(plan.kind, 'device')
    assert.equal(dirname(plan.temp), join(dataDir, 'partial'))
  })

  it('rejects a link to a missing file', async () => {
    const dir = await makeTempDir()
    const link = join(dir, 'dangling.bin')
    await symlink(join(dir, 'missing', 'file.bin'), link)
    await assert.rejects(planOutput(link, join(dir, 'data')), new UsageError(`output path ${link} is a symbolic link to a missing file: create the file it points to, or name another file with -o`))
  })
})

describe('cli supernode', () => {
  it('prints its multiaddrs and exits 0 on SIGTERM', async () => {
    const sandbox = await makeSandbox()
    let stdout = ''
    const result = await runDfnode(['supernode', '--listen', '/ip4/127.0.0.1/tcp/0', '--data-dir', sandbox.dataDir], {
      env: sandbox.env,
      cwd: sandbox.dir,
      started: child => {
        child.stdout?.on('data', (chunk: Buffer) => {
          stdout += chunk.toString('utf8')
          if (stdout.includes('\n')) child.kill('SIGTERM')
        })
      }
    })
    assert.equal(result.code, 0, result.stderr)
    const lines = result.stdout.split('\n').filter(line => line !== '')
    assert.ok(lines.length >= 1)
    for (const line of lines) assert.match(line, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/12D3KooW\w+$/)
    // Started without --allow-origin, it warns that it rejects every seed request.
    assert.match(result.stderr, /no allowed origin: this supernode rejects every seed request/)
  })
})

describe('cli argument scan', () => {
  const valueOptions = new Set(['config', 'data-dir', 'output', 'o', 'header', 'H'])

  it('finds the command after options and their values', () => {
    assert.deepEqual(scanArguments(['--config', 'fetch', 'fetch', 'u'], valueOptions), { commandIndex: 2, positionals: ['u'], helpOrVersion: false })
    assert.deepEqual(scanArguments(['--verbose', 'fetch', 'u'], valueOptions), { commandIndex: 1, positionals: ['u'], helpOrVersion: false })
    assert.deepEqual(scanArguments(['--data-dir=x', 'fetch', '-o', 'out', 'u'], valueOptions), { commandIndex: 1, positionals: ['u'], helpOrVersion: false })
    assert.deepEqual(scanArguments(['fetch', '-o', '-', 'u'], valueOptions), { commandIndex: 0, positionals: ['-', 'u'], helpOrVersion: false })
  })

  it('treats everything after -- as positional', () => {
    assert.deepEqual(scanArguments(['fetch', '--', '--help'], valueOptions), { commandIndex: 0, positionals: ['--help'], helpOrVersion: false })
  })

  it('notices help and version', () => {
    assert.equal(scanArguments(['fetch', '-h'], valueOptions).helpOrVersion, true)
    assert.equal(scanArguments(['--version'], valueOptions).helpOrVersion, true)
    assert.equal(scanArguments(['fetch', '-H', 'X: y'], valueOptions).helpOrVersion, false)
  })
})

describe('cli fetch input', () => {
  it('parses headers and joins repeated names', () => {
    assert.deepEqual(parseHeaders(['Authorization: Bearer abc', 'accept: a/b', 'Accept:c/d', 'X-Empty:']), {
      Authorization: 'Bearer abc',
      accept: 'a/b, c/d',
      'X-Empty': ''
    })
  })

  it('rejects header values with line breaks', () => {
    assert.throws(() => parseHeaders(['X-A: b\r\nX-Injected: c']), UsageError)
  })

  it('derives the output name from the URL', async () => {
    const dir = await makeTempDir()
    assert.equal(await resolveOutput(undefined, new URL('http://h/a/b/My%20File.iso?x=1'), dir), join(dir, 'My File.iso'))
    assert.equal(await resolveOutput('sub/../named.bin', new URL('http://h/a'), dir), join(dir, 'named.bin'))
    for (const url of ['http://h/', 'http://h/dir/', 'http://h/a/..%2F..%2Fetc%2Fpasswd', 'http://h/%2E%2E']) {
      await assert.rejects(resolveOutput(undefined, new URL(url), dir), { name: 'UsageError', message: /cannot derive a file name/ }, url)
    }
  })
})

describe('cli progress', () => {
  const progress: FetchProgress = { received: 45 * 1024 * 1024, size: 100 * 1024 * 1024, peers: 3, fromSupernode: 40 * 1024 * 1024, fromPeers: 5 * 1024 * 1024, fromOrigin: 0 }

  it('formats a line with percent, bytes, rate, peers and sources', () => {
    const line = formatProgressLine(progress, 12.3 * 1024 * 1024, 200)
    assert.ok(line.startsWith(' 45% ['), line)
    for (const part of ['45.0 MiB / 100.0 MiB', '12.3 MiB/s', '3 peers', 'supernode 40.0 MiB, peers 5.0 MiB, origin 0 B']) assert.ok(line.includes(part), part)
  })

  it('fits the terminal width', () => {
    for (const columns of [20, 60, 80, 120, 300]) {
      assert.ok(formatProgressLine(progress, 1000, columns).length <= columns - 1, `${columns} columns`)
    }
    assert.ok(!formatProgressLine(progress, 1000, 80).includes('['), 'no bar without room')
  })

  it('leaves out percent and bar while the size is unknown', () => {
    const line = formatProgressLine({ received: 2048, peers: 1, fromSupernode: 2048, fromPeers: 0, fromOrigin: 0 }, undefined, 200)
    assert.ok(line.startsWith('2.0 KiB  -- B/s  1 peer  '), line)
  })

  it('redraws at most every 250 ms', () => {
    const writes: string[] = []
    let now = 0
    const bar = new ProgressBar({ write: text => writes.push(text), columns: 200 }, { now: () => now })
    for (let step = 0; step < 10; step++) {
      bar.update({ ...progress, received: step * 1024 * 1024 })
      now += 20
    }
    assert.equal(writes.length, 1, '10 reports within 200 ms draw once')
    now = REDRAW_INTERVAL_MS
    bar.update({ ...progress, received: 20 * 1024 * 1024 })
    assert.equal(writes.length, 2)
    assert.ok((writes[1] ?? '').startsWith('\r'))
    assert.ok((writes[1] ?? '').includes('/s'), 'a rate once two samples exist')
    bar.clear()
    assert.equal(writes[2], '\r\x1b[K')
    bar.clear()
    assert.equal(writes.length, 3, 'clearing an erased line writes nothing')
  })

  it('draws 80 columns on a terminal of width 0', () => {
    const writes: string[] = []
    const bar = new ProgressBar({ write: text => writes.push(text), columns: 0 }, { now: () => 0 })
    bar.update(progress)
    const line = (writes[0] ?? '').replace(/^\r/, '').replace('\x1b[K', '')
    assert.ok(line.includes('45%'), JSON.stringify(line))
    assert.ok(line.length <= 79, `${line.length} characters`)
  })

  it('summarises a result in one line', () => {
    const summary = formatSummary({ key: 'k', digest: 'sha256:00', size: 2 * 1024 * 1024, output: '/tmp/x.bin', fromSupernode: 1024 * 1024, fromPeers: 1024 * 1024, fromOrigin: 0, fromLocal: 0, ms: 2000 })
    assert.equal(summary, 'fetched /tmp/x.bin (2.0 MiB, sha256:00) in 2.0s, 1.0 MiB/s: supernode 1.0 MiB, peers 1.0 MiB, origin 0 B, local 0 B')
  })

  it('fetch draws progress on a terminal and clears it before the summary', async () => {
    // A child's stderr is a pipe, never a terminal, so this runs the command in-process with a
    // terminal-like stderr and a stand-in download that reports progress without a network.
    const sandbox = await makeSandbox()
    const result: FetchResult = { key: 'k', digest: 'sha256:00', size: 1000, output: join(sandbox.dir, 'x.bin'), fromSupernode: 1000, fromPeers: 0, fromOrigin: 0, fromLocal: 0, ms: 10 }
    const stderr: string[] = []
    const stdout: string[] = []
    const io: CommandIo = {
      stdout: { write: text => stdout.push(text) },
      stderr: { write: text => stderr.push(text), isTTY: true, columns: 120 },
      env: sandbox.env,
      cwd: sandbox.dir
    }
    const command = createFetchCommand(async (_config, _logger, options) => {
      options.onProgress?.({ received: 500, size: 1000, peers: 1, fromSupernode: 500, fromPeers: 0, fromOrigin: 0 })
      options.onComplete?.(result)
      return result
    })

    const code = await main(['node', 'dfnode', 'fetch', 'http://127.0.0.1:9/x.bin', '--data-dir', sandbox.dataDir], io, [command])
    assert.equal(code, 0, stderr.join(''))
    assert.deepEqual(stdout, [])
    assert.match(stderr[0] ?? '', /^\r 50% \[#+ +\] 500 B \/ 1000 B/)
    assert.equal(stderr[1], '\r\x1b[K')
    assert.equal(stderr[2], `${formatSummary(result)}\n`)
    assert.equal(stderr.length, 3, 'the summary is printed once although the download reports completion twice')
  })
})
