import assert from 'node:assert/strict'
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parseHostPort, tcpMultiaddrProblem } from '../src/config/addresses.ts'
import { parseDragonflyConf } from '../src/config/dragonfly.ts'
import { loadConfig, type LoadOptions } from '../src/config/load.ts'
import { CONFIG_KEYS, defaultConfig, KEY_SOURCES, type Config } from '../src/config/schema.ts'
import { formatDuration, formatSize, parseDuration, parseSize } from '../src/config/units.ts'
import { DEFAULT_QUERY_FILTER } from '../src/content/url.ts'
import { ConfigError } from '../src/errors.ts'

const EXAMPLE_CONFIG = fileURLToPath(new URL('../config/dfnode.example.yaml', import.meta.url))
const PEER_ID = '12D3KooWGzLHvLAX6uR2JgEFnCJZ8YqAj2JkoGkY5ft3qD7Y2jSe'
const MiB = 1024 * 1024

const tempDirs: string[] = []

after(async () => {
  await Promise.all(tempDirs.map(async dir => { await rm(dir, { recursive: true, force: true }) }))
})

async function makeTempDir (): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dfnode-config-'))
  tempDirs.push(dir)
  return dir
}

/** Writes `text` to `name` in a fresh temp dir and returns its path. */
async function writeTemp (name: string, text: string): Promise<string> {
  const path = join(await makeTempDir(), name)
  await writeFile(path, text)
  return path
}

/**
 * Loads a config with every system path pointed into a temp dir, so that no test reads /etc,
 * the real environment or the real home directory.
 */
async function load (options: Partial<LoadOptions> = {}): Promise<Config> {
  const dir = await makeTempDir()
  return await loadConfig({
    role: 'fetch',
    env: {},
    home: join(dir, 'home'),
    cwd: dir,
    defaultConfigPath: join(dir, 'absent-config.yaml'),
    dragonflyConfPath: join(dir, 'absent-dragonfly.conf'),
    ...options
  })
}

/** Asserts that loading fails with a ConfigError whose message contains every fragment. */
async function assertConfigError (options: Partial<LoadOptions>, fragments: readonly string[]): Promise<void> {
  await assert.rejects(load(options), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
    for (const fragment of fragments) assert.ok(err.message.includes(fragment), `message "${err.message}" lacks "${fragment}"`)
    assert.ok(!err.message.includes('\n'), `message "${err.message}" spans lines`)
    return true
  })
}

describe('config defaults', () => {
  it('defaults without file, environment or flags', async () => {
    const dir = await makeTempDir()
    const config = await load({ home: dir })
    assert.deepEqual(config, {
      dataDir: join(dir, '.dfnode'),
      verbose: false,
      supernodes: [],
      listen: ['/ip4/0.0.0.0/tcp/0'],
      announce: [],
      allowOrigins: [],
      pieceSize: undefined,
      backSource: true,
      filter: [...DEFAULT_QUERY_FILTER],
      timeoutMs: 0,
      seedMs: 0,
      storeQuotaBytes: 20 * 1024 ** 3,
      uploadRate: 0,
      dataPort: 0
    })
  })

  it('supernode listens on port 8002 by default', async () => {
    const config = await load({ role: 'supernode' })
    assert.deepEqual(config.listen, ['/ip4/0.0.0.0/tcp/8002'])
  })

  it('every key has an environment variable and a flag', () => {
    for (const key of CONFIG_KEYS) {
      assert.match(KEY_SOURCES[key].env, /^DFNODE_[A-Z_]+$/, key)
      assert.match(KEY_SOURCES[key].flag, /^--[a-z-]+$/, key)
    }
    assert.deepEqual(new Set(CONFIG_KEYS), new Set(Object.keys(defaultConfig('fetch'))))
  })

  it('example file sets every key to its default', async () => {
    const dir = await makeTempDir()
    const config = await load({ configPath: EXAMPLE_CONFIG, home: dir })
    assert.deepEqual(config, defaultConfig('fetch', dir))
  })
})

describe('config precedence', () => {
  it('file overrides defaults, environment overrides file, flags override environment', async () => {
    const file = await writeTemp('config.yaml', [
      'pieceSize: 1MiB',
      'timeoutMs: 1000',
      'backSource: false',
      `supernodes: [/ip4/198.18.0.1/tcp/8002/p2p/${PEER_ID}]`,
      'dataDir: /data/from-file',
      'verbose: true'
    ].join('\n'))
    const env = {
      DFNODE_PIECE_SIZE: '2MiB',
      DFNODE_TIMEOUT: '2',
      DFNODE_BACK_SOURCE: 'true',
      DFNODE_SUPERNODES: '/ip4/198.18.0.2/tcp/8002,/ip4/198.18.0.3/tcp/8002',
      DFNODE_DATA_DIR: '/data/from-env'
    }
    const flags = { pieceSize: '8MiB', timeoutMs: '3s', supernodes: ['/ip4/198.18.0.4/tcp/8002'] }

    const fromFile = await load({ configPath: file })
    assert.equal(fromFile.pieceSize, 1 * MiB)
    assert.equal(fromFile.timeoutMs, 1000)
    assert.equal(fromFile.backSource, false)
    assert.deepEqual(fromFile.supernodes, [`/ip4/198.18.0.1/tcp/8002/p2p/${PEER_ID}`])
    assert.equal(fromFile.dataDir, '/data/from-file')
    assert.equal(fromFile.verbose, true)

    const fromEnv = await load({ configPath: file, env })
    assert.equal(fromEnv.pieceSize, 2 * MiB)
    assert.equal(fromEnv.timeoutMs, 2000)
    assert.equal(fromEnv.backSource, true)
    assert.deepEqual(fromEnv.supernodes, ['/ip4/198.18.0.2/tcp/8002', '/ip4/198.18.0.3/tcp/8002'])
    assert.equal(fromEnv.dataDir, '/data/from-env')
    assert.equal(fromEnv.verbose, true, 'a key the environment does not set keeps its file value')

    const fromFlags = await load({ configPath: file, env, flags })
    assert.equal(fromFlags.pieceSize, 8 * MiB)
    assert.equal(fromFlags.timeoutMs, 3000)
    assert.deepEqual(fromFlags.supernodes, ['/ip4/198.18.0.4/tcp/8002'])
    assert.equal(fromFlags.backSource, true, 'a key the flags do not set keeps its environment value')
    assert.equal(fromFlags.dataDir, '/data/from-env')
  })

  it('flag false overrides environment true', async () => {
    const config = await load({ env: { DFNODE_BACK_SOURCE: 'yes', DFNODE_VERBOSE: '1' }, flags: { backSource: false, verbose: false } })
    assert.equal(config.backSource, false)
    assert.equal(config.verbose, false)
  })

  it('empty environment variable counts as unset', async () => {
    const file = await writeTemp('config.yaml', 'seedMs: 5000\n')
    const config = await load({ configPath: file, env: { DFNODE_SEED_TIME: '', DFNODE_FILTER: ' ' } })
    assert.equal(config.seedMs, 5000)
    assert.deepEqual(config.filter, [...DEFAULT_QUERY_FILTER])
  })

  it('empty flag list replaces the default filter', async () => {
    const config = await load({ flags: { filter: [''] } })
    assert.deepEqual(config.filter, [])
  })

  it('comma lists and repeated flags both give lists', async () => {
    const config = await load({
      env: { DFNODE_ALLOW_ORIGINS: 'registry.example.com, files.example.com:8443 ,*', DFNODE_FILTER: 'token,sig' },
      flags: { listen: ['/ip4/127.0.0.1/tcp/0', '/ip6/::1/tcp/0'], announce: '/dns/node.example.com/tcp/8002' }
    })
    assert.deepEqual(config.allowOrigins, ['registry.example.com', 'files.example.com:8443', '*'])
    assert.deepEqual(config.filter, ['token', 'sig'])
    assert.deepEqual(config.listen, ['/ip4/127.0.0.1/tcp/0', '/ip6/::1/tcp/0'])
    assert.deepEqual(config.announce, ['/dns/node.example.com/tcp/8002'])
  })
})

describe('config file location', () => {
  it('reads the default path when present', async () => {
    const file = await writeTemp('config.yaml', 'seedMs: 7000\n')
    const config = await load({ defaultConfigPath: file })
    assert.equal(config.seedMs, 7000)
  })

  it('DFNODE_CONFIG wins over the default path', async () => {
    const defaultFile = await writeTemp('config.yaml', 'seedMs: 7000\n')
    const envFile = await writeTemp('env.yaml', 'seedMs: 8000\n')
    const config = await load({ defaultConfigPath: defaultFile, env: { DFNODE_CONFIG: envFile } })
    assert.equal(config.seedMs, 8000)
  })

  it('--config wins over DFNODE_CONFIG', async () => {
    const envFile = await writeTemp('env.yaml', 'seedMs: 8000\n')
    const flagFile = await writeTemp('flag.yaml', 'seedMs: 9000\n')
    const config = await load({ configPath: flagFile, env: { DFNODE_CONFIG: envFile } })
    assert.equal(config.seedMs, 9000)
  })

  it('relative --config resolves against cwd', async () => {
    const file = await writeTemp('config.yaml', 'seedMs: 9000\n')
    const config = await load({ configPath: 'config.yaml', cwd: join(file, '..') })
    assert.equal(config.seedMs, 9000)
  })

  it('auto piece size overrides a set one', async () => {
    const file = await writeTemp('config.yaml', 'pieceSize: 1MiB\n')
    assert.equal((await load({ configPath: file })).pieceSize, 1024 * 1024)
    assert.equal((await load({ configPath: file, env: { DFNODE_PIECE_SIZE: 'auto' } })).pieceSize, undefined)
    assert.equal((await load({ configPath: file, flags: { pieceSize: 'auto' } })).pieceSize, undefined)
  })

  it('empty file gives the defaults', async () => {
    const file = await writeTemp('config.yaml', '# nothing set\n')
    const config = await load({ configPath: file })
    assert.equal(config.pieceSize, undefined, "no piece size set: chosen by content size")
  })

  it('paths in the file resolve against its directory', async () => {
    const file = await writeTemp('config.yaml', 'dataDir: state/dfnode\n')
    const config = await load({ configPath: file })
    assert.equal(config.dataDir, join(file, '..', 'state', 'dfnode'))
  })

  it('paths from the environment resolve against cwd, ~ against home', async () => {
    const dir = await makeTempDir()
    const relative = await load({ cwd: dir, env: { DFNODE_DATA_DIR: 'data' } })
    assert.equal(relative.dataDir, join(dir, 'data'))
    const home = await load({ home: dir, env: { DFNODE_DATA_DIR: '~/dfnode-data' } })
    assert.equal(home.dataDir, join(dir, 'dfnode-data'))
  })
})

describe('config units', () => {
  it('parses sizes', () => {
    const cases: Array<[string, number | undefined]> = [
      ['4194304', 4194304],
      ['4MiB', 4 * MiB],
      ['4 MiB', 4 * MiB],
      ['4mib', 4 * MiB],
      ['4M', 4 * MiB],
      ['64KiB', 65536],
      ['512KB', 512_000],
      ['20GiB', 20 * 1024 ** 3],
      ['500GB', 500e9],
      ['1.5GiB', 1.5 * 1024 ** 3],
      ['1.1KB', 1100],
      ['0', 0],
      ['', undefined],
      ['4 MiBs', undefined],
      ['-4MiB', undefined],
      ['1.5B', undefined],
      ['4XB', undefined],
      ['lots', undefined]
    ]
    for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text)
  })

  it('parses durations', () => {
    const cases: Array<[string, 'ms' | 's' | undefined, number | undefined]> = [
      ['30', 's', 30_000],
      ['30s', 's', 30_000],
      ['5m', 's', 300_000],
      ['1h', 's', 3_600_000],
      ['1h30m', 's', 5_400_000],
      ['250ms', 's', 250],
      ['1.5s', 's', 1500],
      ['30', undefined, undefined],
      ['30s', undefined, 30_000],
      ['', 's', undefined],
      ['5 minutes', 's', undefined],
      ['-5s', 's', undefined],
      ['5d', 's', undefined]
    ]
    for (const [text, bare, ms] of cases) assert.equal(parseDuration(text, bare), ms, `${text} (bare ${String(bare)})`)
  })

  it('formats sizes and durations', () => {
    assert.equal(formatSize(4 * MiB), '4MiB')
    assert.equal(formatSize(65536), '64KiB')
    assert.equal(formatSize(1536), '1536B')
    assert.equal(formatDuration(5_400_000), '1h30m')
    assert.equal(formatDuration(30_000), '30s')
    assert.equal(formatDuration(250), '250ms')
  })

  it('config accepts sizes and durations with units', async () => {
    const file = await writeTemp('config.yaml', [
      'pieceSize: 64KiB',
      'storeQuotaBytes: 500GB',
      'timeoutMs: 1500',
      'seedMs: 2m'
    ].join('\n'))
    const fromFile = await load({ configPath: file })
    assert.equal(fromFile.pieceSize, 65536)
    assert.equal(fromFile.storeQuotaBytes, 500e9)
    assert.equal(fromFile.timeoutMs, 1500, 'a number in the file is milliseconds')
    assert.equal(fromFile.seedMs, 120_000)

    const fromEnv = await load({ env: { DFNODE_PIECE_SIZE: '16777216', DFNODE_STORE_QUOTA: '1TiB', DFNODE_TIMEOUT: '30', DFNODE_SEED_TIME: '500ms' } })
    assert.equal(fromEnv.pieceSize, 16 * MiB)
    assert.equal(fromEnv.storeQuotaBytes, 1024 ** 4)
    assert.equal(fromEnv.timeoutMs, 30_000, 'a bare number in the environment is seconds')
    assert.equal(fromEnv.seedMs, 500)
  })
})

describe('config validation', () => {
  it('invalid values name setting and value', async () => {
    const cases: Array<{ file?: string, env?: Record<string, string>, flags?: LoadOptions['flags'], fragments: string[] }> = [
      { file: 'pieceSize: 3MiB', fragments: ['pieceSize', '"3MiB"', 'power of two from 64KiB to 64MiB'] },
      { file: 'pieceSize: 32KiB', fragments: ['pieceSize', '"32KiB"', '64KiB'] },
      { file: 'pieceSize: 134217728', fragments: ['pieceSize', '134217728', '64MiB'] },
      { env: { DFNODE_PIECE_SIZE: 'big' }, fragments: ['invalid DFNODE_PIECE_SIZE', '"big"'] },
      { flags: { pieceSize: '5000' }, fragments: ['invalid --piece-size', '"5000"'] },
      { file: 'storeQuotaBytes: lots', fragments: ['storeQuotaBytes', '"lots"', 'size'] },
      { env: { DFNODE_STORE_QUOTA: '0' }, fragments: ['invalid DFNODE_STORE_QUOTA', '"0"', 'above zero'] },
      { file: 'timeoutMs: "30"', fragments: ['timeoutMs', '"30"', 'milliseconds as a number'] },
      { file: 'timeoutMs: -5', fragments: ['timeoutMs', '-5'] },
      { env: { DFNODE_TIMEOUT: 'soon' }, fragments: ['invalid DFNODE_TIMEOUT', '"soon"', 'seconds'] },
      { flags: { seedMs: '30d' }, fragments: ['invalid --seed-time', '"30d"'] },
      { flags: { timeoutMs: '999h' }, fragments: ['invalid --timeout', '"999h"', 'up to'] },
      { env: { DFNODE_BACK_SOURCE: 'maybe' }, fragments: ['invalid DFNODE_BACK_SOURCE', '"maybe"', 'true or false'] },
      { file: 'verbose: 2', fragments: ['verbose', '2', 'true or false'] },
      { file: 'supernodes: [/ip4/198.18.0.1]', fragments: ['supernodes', '"/ip4/198.18.0.1"', '/tcp/'] },
      { flags: { supernodes: ['198.18.0.1:8002'] }, fragments: ['invalid --supernode', '"198.18.0.1:8002"', 'not a multiaddr'] },
      { flags: { supernodes: ['/ip4/198.18.0.1/tcp/8002/p2p/QmNotAPeer'] }, fragments: ['invalid --supernode', 'QmNotAPeer', 'invalid peer id'] },
      { flags: { supernodes: ['/ip4/300.0.0.1/tcp/8002'] }, fragments: ['invalid --supernode', '"/ip4/300.0.0.1/tcp/8002"'] },
      { file: 'supernodes: 8002', fragments: ['supernodes', '8002', 'a list of multiaddrs'] },
      { env: { DFNODE_LISTEN: '/dns/node.example.com/tcp/0' }, fragments: ['invalid DFNODE_LISTEN', '"/dns/node.example.com/tcp/0"'] },
      { flags: { listen: ['/ip4/0.0.0.0/udp/8002'] }, fragments: ['invalid --listen', '/udp/8002'] },
      { flags: { announce: ['/ip4/1.2.3.4/tcp/1/ws'] }, fragments: ['invalid --announce', '/ws'] },
      { flags: { allowOrigins: ['https://registry.example.com'] }, fragments: ['invalid --allow-origin', '"https://registry.example.com"', 'without a scheme'] },
      { env: { DFNODE_ALLOW_ORIGINS: 'registry.example.com:99999' }, fragments: ['invalid DFNODE_ALLOW_ORIGINS', '"registry.example.com:99999"'] },
      { file: 'filter: ["X Sig"]', fragments: ['filter', '"X Sig"', 'without spaces'] },
      { file: 'filter: ["X-*-Date"]', fragments: ['filter', '"X-*-Date"', 'one * at its end'] },
      { file: 'dataDir: ""', fragments: ['dataDir', '""', 'directory path'] },
      { file: 'listen: ~', fragments: ['listen', 'null'] },
      { flags: { dataPort: '70000' }, fragments: ['invalid --data-port', '"70000"', 'from 1 to 65535', 'off'] },
      { env: { DFNODE_DATA_PORT: 'none' }, fragments: ['invalid DFNODE_DATA_PORT', '"none"', 'off to send pieces over libp2p only'] },
      { file: 'dataPort: -1', fragments: ['dataPort', '-1', '0 for one the system picks'] }
    ]
    for (const testCase of cases) {
      const configPath = testCase.file != null ? await writeTemp('config.yaml', `${testCase.file}\n`) : undefined
      const fragments = configPath != null ? [...testCase.fragments, `in ${configPath}`] : testCase.fragments
      await assertConfigError({
        ...(configPath != null ? { configPath } : {}),
        ...(testCase.env != null ? { env: testCase.env } : {}),
        ...(testCase.flags != null ? { flags: testCase.flags } : {})
      }, fragments)
    }
  })

  it('reads the port of direct links, or off', async () => {
    assert.equal((await load({ flags: { dataPort: '7000' } })).dataPort, 7000)
    assert.equal((await load({ env: { DFNODE_DATA_PORT: 'off' } })).dataPort, false)
    assert.equal((await load({ configPath: await writeTemp('config.yaml', 'dataPort: off\n') })).dataPort, false)
  })

  it('leaves library text out of peer id errors', async () => {
    await assert.rejects(load({ flags: { supernodes: ['/ip4/198.18.0.1/tcp/8002/p2p/notapeerid'] } }), (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`)
      assert.ok(err.message.endsWith('invalid peer id "notapeerid"'), err.message)
      assert.ok(!err.message.includes('multibase'), err.message)
      return true
    })
  })

  it('formats the message as key, value, source, expectation', async () => {
    const file = await writeTemp('config.yaml', 'pieceSize: 3MiB\n')
    await assert.rejects(load({ configPath: file }), {
      name: 'ConfigError',
      message: `invalid pieceSize "3MiB" in ${file}: expected "auto", or a power of two from 64KiB to 64MiB such as 1MiB or 4MiB (KB and MB count in powers of 1000, so 4MB is none)`
    })
  })

  it('validates a value even when a later layer replaces it', async () => {
    await assertConfigError({ env: { DFNODE_PIECE_SIZE: '3MiB' }, flags: { pieceSize: '4MiB' } }, ['invalid DFNODE_PIECE_SIZE "3MiB"'])
  })

  it('accepts supernode multiaddrs with and without peer id', async () => {
    const supernodes = [
      `/ip4/198.18.0.1/tcp/8002/p2p/${PEER_ID}`,
      '/ip4/198.18.0.1/tcp/8002',
      '/ip6/fd00::1/tcp/8002',
      '/dns/supernode.example.com/tcp/8002',
      `/dns4/supernode.example.com/tcp/8002/p2p/${PEER_ID}`
    ]
    const config = await load({ flags: { supernodes } })
    assert.deepEqual(config.supernodes, supernodes)
  })

  it('rejects a store quota smaller than a piece', async () => {
    await assertConfigError({ env: { DFNODE_STORE_QUOTA: '1MiB' } }, ['invalid DFNODE_STORE_QUOTA', '"1MiB"', 'at least pieceSize (4MiB)'])
  })

  it('rejects an unknown key and suggests the known one', async () => {
    const file = await writeTemp('config.yaml', 'pieceSize: 4MiB\npiece_size: 8MiB\n')
    await assertConfigError({ configPath: file }, ['unknown key "piece_size"', file, 'did you mean pieceSize?', 'storeQuotaBytes'])
    const typo = await writeTemp('config.yaml', 'supernode: []\n')
    await assertConfigError({ configPath: typo }, ['unknown key "supernode"', 'did you mean supernodes?'])
  })

  it('rejects a misspelt variable', async () => {
    await assertConfigError({ env: { DFNODE_SUPERNODE: '/ip4/127.0.0.1/tcp/8002' } }, ['unknown environment variable DFNODE_SUPERNODE', 'did you mean DFNODE_SUPERNODES?'])
    await assertConfigError({ env: { DFNODE_LOGLEVEL: 'debug' } }, ['unknown environment variable DFNODE_LOGLEVEL', 'did you mean DFNODE_LOG_LEVEL?'])
    const config = await load({ env: { DFNODE_NODE_OPTIONS: '--x', DFNODE_LOG_LEVEL: 'info' } })
    assert.equal(config.verbose, false, 'other DFNODE_* names are left alone')
  })
})

describe('config file errors', () => {
  it('missing --config file', async () => {
    const dir = await makeTempDir()
    const path = join(dir, 'missing.yaml')
    await assertConfigError({ configPath: path }, [path, 'no such file', '--config'])
  })

  it('missing DFNODE_CONFIG file', async () => {
    const dir = await makeTempDir()
    const path = join(dir, 'missing.yaml')
    await assertConfigError({ env: { DFNODE_CONFIG: path } }, [path, 'no such file', 'DFNODE_CONFIG'])
  })

  it('config path that is a directory', async () => {
    const dir = await makeTempDir()
    await assertConfigError({ configPath: dir }, [dir, 'is a directory'])
    await assertConfigError({ defaultConfigPath: dir }, [dir, 'is a directory'])
  })

  it('invalid YAML names the file and line', async () => {
    const file = await writeTemp('config.yaml', 'pieceSize: 4MiB\nlisten: [/ip4/0.0.0.0/tcp/0\n')
    await assertConfigError({ configPath: file }, ['invalid YAML', file, 'line'])
    const duplicate = await writeTemp('config.yaml', 'seedMs: 1\nseedMs: 2\n')
    await assertConfigError({ configPath: duplicate }, ['invalid YAML', duplicate, 'unique'])
    const alias = await writeTemp('config.yaml', 'seedMs: *nowhere\n')
    await assertConfigError({ configPath: alias }, ['invalid YAML', alias])
  })

  it('YAML that is not a mapping', async () => {
    const list = await writeTemp('config.yaml', '- pieceSize: 4MiB\n')
    await assertConfigError({ configPath: list }, [list, 'expected a mapping', 'a list'])
    const scalar = await writeTemp('config.yaml', 'pieceSize 4MiB\n')
    await assertConfigError({ configPath: scalar }, [scalar, 'expected a mapping', 'a string'])
  })
})

describe('dragonfly.conf', () => {
  it('parses hosts, ports, IPv6 and comments', () => {
    const text = [
      '# classic Dragonfly client config',
      '; another comment',
      '[node]',
      'address = 198.18.0.1, supernode.example.com:8003 ,[fd00::2]:9000,fd00::3,  SN.Example.com',
      '',
      '[totalLimit]',
      'rate = 200M'
    ].join('\n')
    assert.deepEqual(parseDragonflyConf(text, '/x/dragonfly.conf'), [
      '/ip4/198.18.0.1/tcp/8002',
      '/dns/supernode.example.com/tcp/8003',
      '/ip6/fd00::2/tcp/9000',
      '/ip6/fd00::3/tcp/8002',
      '/dns/sn.example.com/tcp/8002'
    ])
  })

  it('parses one host without spaces', () => {
    assert.deepEqual(parseDragonflyConf('[node]\naddress=127.0.0.1:8002\n', 'f'), ['/ip4/127.0.0.1/tcp/8002'])
  })

  it('strips a trailing comment and CRLF line ends', () => {
    assert.deepEqual(parseDragonflyConf('[node]\r\naddress=198.18.0.1 # primary\r\n', 'f'), ['/ip4/198.18.0.1/tcp/8002'])
  })

  it('returns no supernodes without a [node] address', () => {
    assert.deepEqual(parseDragonflyConf('[other]\naddress=198.18.0.1\n', 'f'), [])
    assert.deepEqual(parseDragonflyConf('address=198.18.0.1\n', 'f'), [], 'a key before any section is not in [node]')
    assert.deepEqual(parseDragonflyConf('', 'f'), [])
  })

  it('rejects a malformed line naming path and line', () => {
    assert.throws(() => parseDragonflyConf('[node]\naddress 198.18.0.1\n', '/x/dragonfly.conf'), {
      name: 'ConfigError',
      message: /malformed line in \/x\/dragonfly\.conf line 2/
    })
  })

  it('rejects an invalid address', () => {
    for (const address of ['bad host', '198.18.0.1:0', '198.18.0.1:http', '[198.18.0.1]:80', '999.0.0.1']) {
      assert.throws(() => parseDragonflyConf(`[node]\naddress=${address}\n`, '/x/dragonfly.conf'), (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.ok(err.message.includes(`"${address}"`), err.message)
        assert.ok(err.message.includes('/x/dragonfly.conf line 2'), err.message)
        return true
      }, address)
    }
  })

  it('is used only when no layer lists supernodes', async () => {
    const dragonflyConfPath = await writeTemp('dragonfly.conf', '[node]\naddress=198.18.0.9\n')
    const fromDragonfly = ['/ip4/198.18.0.9/tcp/8002']

    assert.deepEqual((await load({ dragonflyConfPath })).supernodes, fromDragonfly)

    const file = await writeTemp('config.yaml', 'supernodes: [/ip4/198.18.0.1/tcp/8002]\n')
    assert.deepEqual((await load({ dragonflyConfPath, configPath: file })).supernodes, ['/ip4/198.18.0.1/tcp/8002'])

    const empty = await writeTemp('config.yaml', 'supernodes: []\n')
    assert.deepEqual((await load({ dragonflyConfPath, configPath: empty })).supernodes, [], 'an explicit empty list counts as set')

    assert.deepEqual((await load({ dragonflyConfPath, env: { DFNODE_SUPERNODES: '/ip4/198.18.0.2/tcp/8002' } })).supernodes, ['/ip4/198.18.0.2/tcp/8002'])
    assert.deepEqual((await load({ dragonflyConfPath, flags: { supernodes: ['/ip4/198.18.0.3/tcp/8002'] } })).supernodes, ['/ip4/198.18.0.3/tcp/8002'])

    const other = await writeTemp('config.yaml', 'seedMs: 1000\n')
    assert.deepEqual((await load({ dragonflyConfPath, configPath: other })).supernodes, fromDragonfly, 'a file without supernodes still falls back')
  })

  it('unreadable or malformed dragonfly.conf is a ConfigError with its path', async () => {
    const dir = await makeTempDir()
    await assertConfigError({ dragonflyConfPath: dir }, [dir, 'is a directory'])

    const malformed = await writeTemp('dragonfly.conf', '[node]\nthis is not ini\n')
    await assertConfigError({ dragonflyConfPath: malformed }, [malformed, 'line 2'])
  })
})

describe('config addresses', () => {
  it('parses host and port forms', () => {
    assert.deepEqual(parseHostPort('Registry.Example.com'), { host: 'registry.example.com', family: 'dns' })
    assert.deepEqual(parseHostPort('198.18.0.1:5000'), { host: '198.18.0.1', family: 'ip4', port: 5000 })
    assert.deepEqual(parseHostPort('[::1]:8002'), { host: '::1', family: 'ip6', port: 8002 })
    assert.deepEqual(parseHostPort('::1'), { host: '::1', family: 'ip6' })
    assert.equal(parseHostPort('host:'), undefined)
    assert.equal(parseHostPort('-bad-.example.com'), undefined)
    assert.equal(parseHostPort('[not-v6]:80'), undefined)
  })

  it('checks TCP multiaddr rules', () => {
    assert.equal(tcpMultiaddrProblem('/ip4/0.0.0.0/tcp/0', { hostnames: false, peerId: false }), undefined)
    assert.match(tcpMultiaddrProblem(`/ip4/0.0.0.0/tcp/0/p2p/${PEER_ID}`, { hostnames: false, peerId: false }) ?? '', /unexpected \/p2p/)
    assert.match(tcpMultiaddrProblem('/dns/x.example.com/tcp/1', { hostnames: false, peerId: false }) ?? '', /\/ip4\|ip6/)
    assert.match(tcpMultiaddrProblem('nonsense', { hostnames: true, peerId: true }) ?? '', /not a multiaddr/)
  })

  it('loading creates no data dir', async () => {
    const dir = await makeTempDir()
    const config = await load({ home: dir })
    assert.equal(config.dataDir, join(dir, '.dfnode'))
    await assert.rejects(stat(config.dataDir), { code: 'ENOENT' })
  })
})
