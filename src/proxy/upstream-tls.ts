/**
 * TLS settings of upstreams from the proxy options: a registry's or an
 * intercepted host's CA file and `insecure` switch.
 */
import { readFile } from 'node:fs/promises'
import { ConfigError } from '../errors.ts'
import type { ProxyOptions } from './options.ts'
import type { TlsSettings } from './upstream.ts'

/** Adds :443 to a host without a port. */
export function withPort (host: string): string {
  return /:[0-9]+$/.test(host) ? host : `${host}:443`
}

/**
 * Reads the CA files the options name and returns the lookup Upstream uses:
 * a registry's settings by its host, else the first matching hijack entry's.
 */
export async function loadUpstreamTls (options: ProxyOptions): Promise<(host: string) => TlsSettings | undefined> {
  const read = async (key: string, path: string): Promise<string> => {
    try {
      return await readFile(path, 'utf8')
    } catch (err) {
      throw new ConfigError(`cannot read ${key} ${path}: ${(err as Error).message}`, { cause: err })
    }
  }

  const byHost = new Map<string, TlsSettings>()
  for (const [i, entry] of options.registries.entries()) {
    if (entry.url.protocol !== 'https:' || (entry.ca == null && !entry.insecure)) continue
    const tls: TlsSettings = { insecure: entry.insecure }
    if (entry.ca != null) tls.ca = await read(`proxy.registries[${i}].ca`, entry.ca)
    byHost.set(withPort(entry.url.host), tls)
  }
  const byPattern: Array<{ host: RegExp, tls: TlsSettings | undefined }> = []
  for (const [i, entry] of options.hijack.entries()) {
    const tls: TlsSettings | undefined = entry.ca == null && !entry.insecure ? undefined : { insecure: entry.insecure }
    if (tls != null && entry.ca != null) tls.ca = await read(`proxy.hijack[${i}].ca`, entry.ca)
    byPattern.push({ host: entry.host, tls })
  }

  return host => {
    const authority = withPort(host)
    return byHost.get(authority) ?? byPattern.find(entry => entry.host.test(authority))?.tls
  }
}
