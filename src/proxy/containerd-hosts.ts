/**
 * containerd registry host configuration (`certs.d/<host>/hosts.toml`, read by
 * containerd 1.5 and later when `config_path` or `--hosts-dir` points at the
 * directory) that sends pulls through the proxy and falls back to the registry.
 */
import { isIPv6 } from 'node:net'
import { UsageError } from '../errors.ts'

export interface ContainerdHostsInput {
  /** Registry name as images refer to it: `docker.io`, `registry.example.com:5000`. */
  registry: string
  /** Registry URL; default https://registry-1.docker.io for docker.io, https://<registry> otherwise. */
  server?: string
  /** Proxy URL; default http://127.0.0.1:65001. */
  proxy?: string
}

/**
 * Checks a registry name for use as a directory name under certs.d: a host name or an IPv6
 * address in brackets, with an optional port. On Linux, containerd names the directory after the
 * host as image references write it, so `[::1]:5000` stays as it is.
 */
export function checkRegistryName (value: string): string {
  const ipv6 = /^\[([0-9a-f:.]+)\](:[0-9]{1,5})?$/i.exec(value)
  const hostName = /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/i.test(value) && !value.includes('..')
  if (!hostName && (ipv6 == null || !isIPv6(ipv6[1]!))) {
    throw new UsageError(`invalid --registry "${value}": expected a registry host such as docker.io, registry.example.com:5000 or [fd00::1]:5000`)
  }
  const portText = ipv6 != null ? ipv6[2]?.slice(1) : (value.includes(':') ? value.slice(value.lastIndexOf(':') + 1) : undefined)
  const port = portText != null ? Number(portText) : undefined
  if (port != null && (port < 1 || port > 65535)) throw new UsageError(`invalid port ${port} in --registry "${value}": use a port from 1 to 65535`)
  return value.toLowerCase()
}

/** Renders hosts.toml for one registry. */
export function renderContainerdHosts (input: ContainerdHostsInput): string {
  const registry = checkRegistryName(input.registry)
  const server = input.server ?? (registry === 'docker.io' ? 'https://registry-1.docker.io' : `https://${registry}`)
  const proxy = input.proxy ?? 'http://127.0.0.1:65001'
  for (const [flag, value] of [['--server', server], ['--proxy', proxy]] as const) {
    let url: URL | undefined
    try {
      url = new URL(value)
    } catch {}
    const port = /^[a-z]+:\/\/[^/]*:([0-9]+)(?:[/?#]|$)/i.exec(value)?.[1]
    if (url == null && port != null && Number(port) > 65535) throw new UsageError(`invalid port ${port} in ${flag} "${value}": use a port from 1 to 65535`)
    if (url == null || (url.protocol !== 'http:' && url.protocol !== 'https:') || value.includes('"')) {
      throw new UsageError(`invalid ${flag} "${value}": expected an http:// or https:// URL`)
    }
    // hosts.toml is readable by every user, and containerd sends its own registry credentials.
    if (url.username !== '' || url.password !== '') throw new UsageError(`invalid ${flag}: a URL with a user name or password would be readable by every user in hosts.toml; give containerd the credentials instead`)
  }
  return [
    '# Written by `dfnode containerd-config`: containerd pulls this registry\'s',
    '# content through the dfnode proxy and names the registry in the ?ns=',
    '# query parameter. When the proxy fails, containerd goes to the server itself.',
    `server = "${server.replace(/\/+$/, '')}"`,
    '',
    `[host."${proxy.replace(/\/+$/, '')}"]`,
    '  capabilities = ["pull", "resolve"]',
    ''
  ].join('\n')
}
