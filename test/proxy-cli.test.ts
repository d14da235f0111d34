/**
 * The proxy's commands through the CLI's main(): gen-ca, containerd-config,
 * and `dfnode proxy` run as a child process until SIGTERM.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { request } from 'undici'
import { main } from '../src/cli/main.ts'
import type { CommandIo } from '../src/cli/command.ts'
import { containerdConfigCommand } from '../src/cli/containerd-config.ts'
import { genCaCommand } from '../src/cli/gen-ca.ts'
import { proxyCommand } from '../src/cli/proxy.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'

const COMMANDS = [genCaCommand, containerdConfigCommand]

function captureIo (cwd: string): CommandIo & { out: () => string, err: () => string } {
  let out = ''
  let err = ''
  return {
    stdout: { write: (text: string) => { out += text } },
    stderr: { write: (text: string) => { err += text } },
    env: { HOME: cwd },
    cwd,
    out: () => out,
    err: () => err
  }
}

describe('proxy commands', () => {
  let work: string

  before(async () => { work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-cli-')) })
  after(async () => { await rm(work, { recursive: true, force: true }) })

  it('gen-ca writes a CA pair and refuses to overwrite it', async () => {
    const io = captureIo(work)
    assert.equal(await main(['node', 'dfnode', 'gen-ca', '--out', 'ca'], io, COMMANDS), 0, io.err())
    assert.equal(io.out(), `${join(work, 'ca', 'ca.crt')}\n${join(work, 'ca', 'ca.key')}\n`)
    assert.ok(new X509Certificate(await readFile(join(work, 'ca', 'ca.crt'))).ca)
    assert.equal((await stat(join(work, 'ca', 'ca.key'))).mode & 0o777, 0o600)

    const again = captureIo(work)
    assert.equal(await main(['node', 'dfnode', 'gen-ca', '--out', 'ca'], again, COMMANDS), 2)
    assert.match(again.err(), /already exists: pass --force/)
    assert.equal(await main(['node', 'dfnode', 'gen-ca', '--out', 'ca', '--force'], captureIo(work), COMMANDS), 0)
  })

  it('gen-ca --force replaces both files or neither', async () => {
    const dir = join(work, 'ca-force')
    await mkdir(join(dir, 'ca.crt'), { recursive: true })
    await writeFile(join(dir, 'ca.key'), 'old key', { mode: 0o644 })
    const io = captureIo(work)
    assert.equal(await main(['node', 'dfnode', 'gen-ca', '--out', 'ca-force', '--force'], io, COMMANDS), 2)
    assert.equal(io.err().trim(), `dfnode: ${join(dir, 'ca.crt')} exists and is not a regular file: remove it or pass another --out`)
    assert.equal(await readFile(join(dir, 'ca.key'), 'utf8'), 'old key')

    await rm(join(dir, 'ca.crt'), { recursive: true })
    assert.equal(await main(['node', 'dfnode', 'gen-ca', '--out', 'ca-force', '--force'], captureIo(work), COMMANDS), 0)
    assert.equal((await stat(join(dir, 'ca.key'))).mode & 0o777, 0o600, 'the replaced key is private')
    assert.ok(new X509Certificate(await readFile(join(dir, 'ca.crt'))).ca)
  })

  it('gen-ca --days errors give the range', async () => {
    for (const days of ['0', '-3', '1.5', 'abc', '36501']) {
      const io = captureIo(work)
      assert.equal(await main(['node', 'dfnode', 'gen-ca', '--out', 'ca-days', '--days', days], io, COMMANDS), 2, days)
      assert.equal(io.err().trim(), `dfnode: invalid --days "${days}": expected a whole number of days from 1 to 36500`)
    }
  })

  it('containerd-config writes hosts.toml for a registry', async () => {
    const io = captureIo(work)
    const code = await main(['node', 'dfnode', 'containerd-config', '--registry', 'registry.example.com:5000', '--dir', 'certs.d', '--proxy', 'http://127.0.0.1:7001'], io, COMMANDS)
    assert.equal(code, 0, io.err())
    const path = join(work, 'certs.d', 'registry.example.com:5000', 'hosts.toml')
    assert.equal(io.out(), `${path}\n`)
    const text = await readFile(path, 'utf8')
    assert.match(text, /server = "https:\/\/registry\.example\.com:5000"/)
    assert.match(text, /\[host\."http:\/\/127\.0\.0\.1:7001"\]/)

    const missing = captureIo(work)
    assert.equal(await main(['node', 'dfnode', 'containerd-config'], missing, COMMANDS), 2)
    assert.match(missing.err(), /missing --registry/)
  })

  it('containerd-config keeps other hosts.toml unless forced', async () => {
    const args = ['node', 'dfnode', 'containerd-config', '--registry', 'mirror.example.com', '--dir', 'kept.d']
    const path = join(work, 'kept.d', 'mirror.example.com', 'hosts.toml')
    assert.equal(await main([...args, '--proxy', 'http://127.0.0.1:7001'], captureIo(work), COMMANDS), 0)
    const first = await readFile(path, 'utf8')
    // The same settings again: nothing to replace.
    assert.equal(await main([...args, '--proxy', 'http://127.0.0.1:7001'], captureIo(work), COMMANDS), 0)

    const other = captureIo(work)
    assert.equal(await main([...args, '--proxy', 'http://127.0.0.1:7002'], other, COMMANDS), 2)
    assert.equal(other.err().trim(), `dfnode: ${path} already exists with other settings: pass --force to replace it (the old file is then kept as hosts.toml.bak, or hosts.toml.bak.N when that exists)`)
    assert.equal(await readFile(path, 'utf8'), first)

    const forced = captureIo(work)
    assert.equal(await main([...args, '--proxy', 'http://127.0.0.1:7002', '--force'], forced, COMMANDS), 0, forced.err())
    assert.equal(forced.out(), `${path}\n`)
    assert.equal(forced.err(), `dfnode: kept the replaced ${path} as ${path}.bak\n`)
    const second = await readFile(path, 'utf8')
    assert.match(second, /\[host\."http:\/\/127\.0\.0\.1:7002"\]/)
    assert.equal(await readFile(`${path}.bak`, 'utf8'), first)

    // A second replacement keeps the first backup, which may be a file written by hand.
    assert.equal(await main([...args, '--proxy', 'http://127.0.0.1:7003', '--force'], captureIo(work), COMMANDS), 0)
    assert.equal(await readFile(`${path}.bak`, 'utf8'), first)
    assert.equal(await readFile(`${path}.bak.1`, 'utf8'), second)
  })

  it('containerd-config rejects bad registry port', async () => {
    for (const registry of ['reg.local:0', 'reg.local:65536', 'reg.local:99999']) {
      const io = captureIo(work)
      assert.equal(await main(['node', 'dfnode', 'containerd-config', '--registry', registry, '--dir', 'ports.d'], io, COMMANDS), 2, registry)
      assert.equal(io.err().trim(), `dfnode: invalid port ${registry.split(':')[1] ?? ''} in --registry "${registry}": use a port from 1 to 65535`)
    }
  })

  it('containerd-config rejects bad proxy URLs', async () => {
    const base = ['node', 'dfnode', 'containerd-config', '--registry', 'reg.local', '--dir', 'proxy-url.d']
    const port = captureIo(work)
    assert.equal(await main([...base, '--proxy', 'http://127.0.0.1:99999'], port, COMMANDS), 2)
    assert.equal(port.err().trim(), 'dfnode: invalid port 99999 in --proxy "http://127.0.0.1:99999": use a port from 1 to 65535')

    const credentials = captureIo(work)
    assert.equal(await main([...base, '--proxy', 'http://user:secret@127.0.0.1:65001'], credentials, COMMANDS), 2)
    assert.match(credentials.err(), /invalid --proxy: a URL with a user name or password/)
    assert.ok(!credentials.err().includes('secret'), 'the password is not echoed')
  })

  it('uncreatable directory is a usage error', { timeout: 30_000 }, async () => {
    // Node's recursive mkdir did not return for /proc/x, so both commands hung there before.
    const file = join(work, 'plain-file')
    await writeFile(file, 'not a directory')
    const cases: Array<[string[], RegExp]> = [
      [['gen-ca', '--out', '/proc/dfnode-test'], /cannot create directory \/proc\/dfnode-test: ENOENT.*pass a writable --out/],
      [['gen-ca', '--out', join(file, 'ca')], /cannot create directory .*plain-file\/ca: ENOTDIR.*pass a writable --out/],
      [['containerd-config', '--registry', 'registry.example.com', '--dir', '/proc/dfnode-test'], /cannot create directory \/proc\/dfnode-test\/registry\.example\.com: ENOENT.*pass a writable --dir/],
      [['containerd-config', '--registry', 'registry.example.com', '--dir', file], /cannot create directory .*plain-file\/registry\.example\.com: ENOTDIR.*pass a writable --dir/]
    ]
    for (const [args, message] of cases) {
      const io = captureIo(work)
      assert.equal(await main(['node', 'dfnode', ...args], io, COMMANDS), 2, args.join(' '))
      assert.match(io.err(), message)
    }
  })

  it('proxy names the flag or file of a bad setting', async () => {
    const settings = join(work, 'bad-port.yaml')
    await writeFile(settings, 'port: 70000\n')
    const typo = join(work, 'typo.yaml')
    await writeFile(typo, 'prot: 8080\n')
    const cases: Array<[string[], string]> = [
      [['--port', '70000'], 'invalid --port "70000": expected an integer from 0 to 65535'],
      [['--registry', 'notaurl'], 'invalid --registry "notaurl": expected an http:// or https:// URL'],
      [['--hijack-host', '(['], 'invalid --hijack-host "([": expected a regular expression'],
      [['--auth-cache-ttl', '2h'], 'invalid --auth-cache-ttl "2h": expected seconds or a duration up to 1h'],
      [['--proxy-config', settings], `invalid port 70000 in ${settings}: expected an integer from 0 to 65535`],
      [['--origin-only', '--no-back-source'], '--origin-only and --no-back-source exclude each other'],
      [['--proxy-config', typo], `unknown key "prot" in ${typo}: did you mean port? expected one of`]
    ]
    for (const [args, message] of cases) {
      const io = captureIo(work)
      assert.equal(await main(['node', 'dfnode', 'proxy', ...args, '--data-dir', join(work, 'bad-settings')], io, [proxyCommand]), 2, args.join(' '))
      assert.ok(io.err().startsWith(`dfnode: ${message}`), io.err())
    }
  })

  it('proxy serves until SIGTERM', async () => {
    const registry = await TestRegistry.start()
    const settings = join(work, 'proxy.yaml')
    await writeFile(settings, `registries:\n  - host: ${registry.host}\n    url: ${registry.url}\nauthCacheTtlMs: 1000\n`)
    const script = [
      "import { main } from './src/cli/main.ts'",
      "import { proxyCommand } from './src/cli/proxy.ts'",
      "process.exitCode = await main(['node', 'dfnode', ...process.argv.slice(1)], undefined, [proxyCommand])"
    ].join('\n')
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, 'proxy', '--port', '0', '--registry', registry.url, '--proxy-config', settings, '--data-dir', join(work, 'data'), '--origin-only'], { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    try {
      const lines = createInterface({ input: child.stdout })
      const url = await new Promise<string>((resolve, reject) => {
        lines.once('line', resolve)
        child.once('exit', code => { reject(new Error(`proxy exited with ${String(code)}: ${stderr}`)) })
      })
      assert.match(url, /^http:\/\/127\.0\.0\.1:[0-9]+$/)

      const health = await request(`${url}/healthz`)
      assert.equal(await health.body.text(), 'ok\n')
      const base = await request(`${url}/v2/?ns=${registry.host}`)
      await base.body.dump()
      assert.equal(base.statusCode, 200)

      const exited = new Promise<number | null>(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      assert.equal(await exited, 0, stderr)
      const log = await readFile(join(work, 'data', 'logs', 'dfnode.log'), 'utf8')
      assert.match(log, /"msg":"proxy listening"/)
      assert.match(log, /"url":"\/v2\/","mode":"mirror","route":"direct","status":200.*"msg":"request"/)
    } finally {
      child.kill('SIGKILL')
      await registry.stop()
    }
  })
})
