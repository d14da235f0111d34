/**
 * `dfnode proxy`: runs the registry mirror and HTTP proxy on this host until
 * SIGINT or SIGTERM.
 */
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { closestName } from '../config/load.ts'
import { parseDuration } from '../config/units.ts'
import { startDaemon } from '../daemon/start.ts'
import { ConfigError, ExitCode, UsageError } from '../errors.ts'
import type { BlobHandle, BlobRequest, BlobSource } from '../proxy/blob-source.ts'
import { OriginBlobSource } from '../proxy/origin-blob-source.ts'
import { resolveProxyOptions, type ProxyOptionsInput } from '../proxy/options.ts'
import { ProxyServer } from '../proxy/server.ts'
import { Upstream } from '../proxy/upstream.ts'
import { loadUpstreamTls } from '../proxy/upstream-tls.ts'
import { booleanOption, listOption, stringOption, type Command, type Invocation, type ParsedOptions } from './command.ts'
import { loadCommandConfig, runWithLogger } from './setup.ts'
import { onTermination } from './signals.ts'

/** Keys a proxy settings file may contain. */
const SETTINGS_KEYS: ReadonlyArray<keyof ProxyOptionsInput> = ['host', 'port', 'registry', 'registries', 'rules', 'hijackHttps', 'hijack', 'caCert', 'caKey', 'authCacheTtlMs', 'maxHeaderSize', 'headersTimeoutMs', 'bodyTimeoutMs']

export const proxyCommand: Command = {
  name: 'proxy',
  description: [
    'Run the registry mirror and HTTP proxy of this host: blob GETs go through the swarm, everything else to the registry.',
    'Mirror: point containerd (dfnode containerd-config), Docker registry-mirrors or skopeo/podman mirrors at it.',
    'Proxy: set HTTP_PROXY/HTTPS_PROXY to it; with --hijack-https, HTTPS to the configured registries is intercepted.'
  ],
  options: [
    { name: 'host', type: 'string', description: 'Address to listen on (default: 127.0.0.1)' },
    { name: 'port', type: 'string', description: 'TCP port to listen on (default: 65001)' },
    { name: 'registry', type: 'string', description: 'Default upstream registry URL for /v2/ requests without ?ns=; in HTTP-proxy mode, blobs of configured registries only go through the swarm (default: none)' },
    { name: 'proxy-config', type: 'string', description: 'YAML file with proxy settings: registries, rules, hijack and the keys of these flags (default: none)' },
    { name: 'hijack-https', type: 'boolean', description: 'Intercept HTTPS CONNECT tunnels to the configured registries or --hijack-host patterns (default: off, plain tunnels)' },
    { name: 'hijack-host', type: 'string', description: 'Regular expression matched against host:port of CONNECT requests to intercept; repeatable (default: the configured registries)' },
    { name: 'ca-cert', type: 'string', description: 'CA certificate that signs intercepted hosts\' certificates (default: <data dir>/ca/ca.crt)' },
    { name: 'ca-key', type: 'string', description: 'Private key of that CA (default: <data dir>/ca/ca.key)' },
    { name: 'auth-cache-ttl', type: 'string', description: 'How long an allowed blob authorization check is reused: seconds or a duration such as 30s (default: 30s)' },
    { name: 'supernode', type: 'string', description: 'Supernode multiaddr; repeatable, replaces the configured list (default: the config, else /etc/dragonfly.conf)' },
    { name: 'listen', type: 'string', description: 'Multiaddr the swarm node listens on for other peers; repeatable (default: /ip4/0.0.0.0/tcp/0)' },
    { name: 'announce', type: 'string', description: 'Extra multiaddr to advertise to peers; repeatable (default: none)' },
    { name: 'store-quota', type: 'string', description: 'Size limit of the piece store: bytes or with a unit such as 50GiB (default: 20GiB)' },
    { name: 'upload-rate', type: 'string', description: 'Upload limit for pieces sent to other peers: bytes per second or a size such as 10MiB (default: 0, no limit)' },
    { name: 'data-port', type: 'string', description: 'TCP port of direct links, which carry pieces over TLS beside libp2p: 1 to 65535, 0 for one the system picks, off for none (default: 0)' },
    { name: 'no-back-source', type: 'boolean', description: 'When no supernode or peer has a blob, do not let this host download it from the registry into the swarm; the proxy then passes the request through to the registry (default: download into the swarm)' },
    { name: 'origin-only', type: 'boolean', description: 'Do not join the swarm: download each blob from the registry once per host, into <data dir>/proxy-blobs (default: off)' }
  ],
  examples: [
    'proxy --registry https://registry.example.com',
    'proxy --registry https://registry.example.com --hijack-https --ca-cert /etc/dfnode/ca/ca.crt --ca-key /etc/dfnode/ca/ca.key'
  ],
  run: async invocation => await runProxy(invocation)
}

async function runProxy (invocation: Invocation): Promise<number> {
  const { options, io } = invocation
  const config = await loadCommandConfig(invocation, 'proxy', {
    supernodes: listOption(options, 'supernode'),
    listen: listOption(options, 'listen'),
    announce: listOption(options, 'announce'),
    storeQuotaBytes: stringOption(options, 'store-quota'),
    uploadRate: stringOption(options, 'upload-rate'),
    dataPort: stringOption(options, 'data-port'),
    backSource: booleanOption(options, 'back-source')
  })
  const originOnly = booleanOption(options, 'origin-only') === true
  if (originOnly && booleanOption(options, 'back-source') === false) {
    throw new UsageError('--origin-only and --no-back-source exclude each other, because --origin-only downloads every blob from the registry into this host\'s store: drop one of them')
  }

  // 1. Settings file first, then flags.
  const settingsPath = stringOption(options, 'proxy-config')
  const settingsFile = settingsPath != null ? resolve(io.cwd, settingsPath) : undefined
  const input: ProxyOptionsInput = settingsFile != null ? await readSettings(settingsFile) : {}
  const flagged = applyFlags(input, options, io.cwd)
  if (input.hijackHttps === true) {
    input.caCert ??= join(config.dataDir, 'ca', 'ca.crt')
    input.caKey ??= join(config.dataDir, 'ca', 'ca.key')
  }
  const proxyOptions = resolveProxyOptions(input, (key, value) => {
    const flag = flagged.get((key.split(/[.[]/)[0] ?? key) as keyof ProxyOptionsInput)
    if (flag != null) return `${flag.name} ${JSON.stringify(flag.value)}`
    return `${key} ${JSON.stringify(value)}${settingsFile != null ? ` in ${settingsFile}` : ''}`
  })

  return await runWithLogger(config, 'proxy', async logger => {
    // 1. Listen for termination first, so that a signal during start-up stops the proxy once it is up.
    const stopRequested = Promise.withResolvers<NodeJS.Signals>()
    const removeHandlers = onTermination(['SIGINT', 'SIGTERM'], signal => stopRequested.resolve(signal))
    const upstream = new Upstream({ tlsFor: await loadUpstreamTls(proxyOptions), headersTimeoutMs: proxyOptions.headersTimeoutMs, bodyTimeoutMs: proxyOptions.bodyTimeoutMs })
    const stops: Array<() => Promise<void>> = [async () => { await upstream.close() }]

    try {
      // 2. Bind the port first, so that a port in use stops the proxy before its node starts.
      const pending = new PendingBlobSource()
      const server = new ProxyServer({ logger, blobSource: pending, upstream }, proxyOptions)
      await server.start()
      stops.unshift(async () => { await server.stop() })

      // 3. Start the blob source: the swarm node of this host, or downloads straight from the registry.
      // Its stop goes after the server's, so that no request is still served when it stops.
      try {
        if (originOnly) {
          const origin = new OriginBlobSource({ directory: join(config.dataDir, 'proxy-blobs'), upstream, logger })
          await origin.start()
          stops.splice(1, 0, async () => { await origin.stop() })
          pending.resolve(origin)
        } else {
          const daemon = await startDaemon(config, logger)
          stops.splice(1, 0, async () => { await daemon.stop() })
          pending.resolve(daemon.blobSource)
        }
      } catch (err) {
        pending.fail(err as Error)
        throw err
      }

      // 4. Serve until a signal.
      io.stdout.write(`${server.url}\n`)

      const signal = await stopRequested.promise
      logger.info({ signal }, 'stopping proxy')
      return ExitCode.ok
    } finally {
      removeHandlers()
      for (const stop of stops) await stop()
    }
  })
}

/** A flag that set a proxy setting, with the value as the user wrote it. */
interface FlagValue {
  name: string
  value: unknown
}

/** Copies the proxy flags into `input`; returns the flag of each setting they set, for messages. */
function applyFlags (input: ProxyOptionsInput, options: ParsedOptions, cwd: string): Map<keyof ProxyOptionsInput, FlagValue> {
  const flagged = new Map<keyof ProxyOptionsInput, FlagValue>()
  const host = stringOption(options, 'host')
  if (host != null) {
    input.host = host
    flagged.set('host', { name: '--host', value: host })
  }
  const port = stringOption(options, 'port')
  if (port != null) {
    if (!/^[0-9]+$/.test(port)) throw new UsageError(`invalid --port "${port}": expected a TCP port number from 0 to 65535`)
    input.port = Number(port)
    flagged.set('port', { name: '--port', value: port })
  }
  const registry = stringOption(options, 'registry')
  if (registry != null) {
    input.registry = registry
    flagged.set('registry', { name: '--registry', value: registry })
  }
  const hijackHttps = booleanOption(options, 'hijack-https')
  if (hijackHttps != null) input.hijackHttps = hijackHttps
  const hijackHosts = listOption(options, 'hijack-host')
  if (hijackHosts != null) {
    input.hijack = hijackHosts.map(pattern => ({ host: pattern }))
    flagged.set('hijack', { name: '--hijack-host', value: hijackHosts.length === 1 ? hijackHosts[0] : hijackHosts })
  }
  const caCert = stringOption(options, 'ca-cert')
  if (caCert != null) input.caCert = resolve(cwd, caCert)
  const caKey = stringOption(options, 'ca-key')
  if (caKey != null) input.caKey = resolve(cwd, caKey)
  const ttl = stringOption(options, 'auth-cache-ttl')
  if (ttl != null) {
    const ms = parseDuration(ttl, 's')
    if (ms == null || ms > 3_600_000) throw new UsageError(`invalid --auth-cache-ttl "${ttl}": expected seconds or a duration up to 1h, such as 30s or 2m`)
    input.authCacheTtlMs = ms
    flagged.set('authCacheTtlMs', { name: '--auth-cache-ttl', value: ttl })
  }
  return flagged
}

/** Reads a YAML mapping of proxy settings; relative file paths in it resolve against its directory. */
async function readSettings (path: string): Promise<ProxyOptionsInput> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read proxy settings ${path}: ${(err as Error).message}; fix the path given by --proxy-config`, { cause: err })
  }
  const document = parseDocument(text)
  if (document.errors[0] != null) throw new ConfigError(`invalid YAML in ${path}: ${(document.errors[0].message.split('\n')[0] ?? '').replace(/:\s*$/, '')}`)
  const value: unknown = document.toJS()
  if (value == null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`invalid proxy settings ${path}: expected a mapping of keys such as "registry: https://registry.example.com"`)
  for (const key of Object.keys(value)) {
    if (!(SETTINGS_KEYS as readonly string[]).includes(key)) {
      const near = closestName(key, SETTINGS_KEYS)
      throw new ConfigError(`unknown key "${key}" in ${path}: ${near != null ? `did you mean ${near}? ` : ''}expected one of ${SETTINGS_KEYS.join(', ')}`)
    }
  }

  const settings = value as ProxyOptionsInput
  const base = resolve(path, '..')
  if (typeof settings.caCert === 'string') settings.caCert = resolve(base, settings.caCert)
  if (typeof settings.caKey === 'string') settings.caKey = resolve(base, settings.caKey)
  for (const entry of [...(Array.isArray(settings.registries) ? settings.registries : []), ...(Array.isArray(settings.hijack) ? settings.hijack : [])]) {
    if (typeof entry?.ca === 'string') entry.ca = resolve(base, entry.ca)
  }
  return settings
}

/**
 * A blob source that waits for the one the proxy starts after binding its port. A blob request
 * that arrives meanwhile waits, and fails if that start fails.
 */
class PendingBlobSource implements BlobSource {
  private readonly source = Promise.withResolvers<BlobSource>()

  constructor () {
    // The start raises its own failure, and requests that wait get it through open.
    this.source.promise.catch(() => {})
  }

  resolve (source: BlobSource): void {
    this.source.resolve(source)
  }

  fail (err: Error): void {
    this.source.reject(err)
  }

  async open (request: BlobRequest): Promise<BlobHandle> {
    return await (await this.source.promise).open(request)
  }
}
