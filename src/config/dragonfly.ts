/**
 * The classic Dragonfly client file (/etc/dragonfly.conf): an INI file whose
 * `[node]` section lists the supernodes as `address=host1,host2:port`.
 * Hosts that already have one can run dfnode without a config of its own.
 */
import { ConfigError } from '../errors.ts'
import { parseHostPort } from './addresses.ts'
import { SUPERNODE_PORT } from './schema.ts'

/**
 * Parses the text of a dragonfly.conf and returns the supernodes of `[node] address` as
 * TCP multiaddrs (/ip4, /ip6 or /dns, port 8002 when none is given); [] when there is none.
 * Other sections and keys belong to the Dragonfly client and are ignored.
 * Throws ConfigError naming `path` and the line on a malformed line or address.
 */
export function parseDragonflyConf (text: string, path: string): string[] {
  let section: string | undefined
  let addresses: string[] = []

  const lines = text.split(/\r?\n/)
  for (const [index, line] of lines.entries()) {
    const trimmed = line.trim()
    const where = `${path} line ${index + 1}`

    // 1. Blank lines and comments.
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) continue

    // 2. Section headers.
    const header = /^\[([^\]]*)\]$/.exec(trimmed)
    if (header?.[1] != null) {
      section = header[1].trim().toLowerCase()
      continue
    }

    // 3. key = value; a later address line replaces an earlier one, as in INI readers.
    const equals = trimmed.indexOf('=')
    if (equals <= 0) {
      throw new ConfigError(`malformed line in ${where}: expected "[section]", "key = value" or a comment starting with # or ;`)
    }
    const key = trimmed.slice(0, equals).trim().toLowerCase()
    if (section !== 'node' || key !== 'address') continue
    const value = trimmed.slice(equals + 1).replace(/[#;].*$/, '')
    addresses = value.split(',').map(entry => entry.trim()).filter(entry => entry !== '').map(entry => toMultiaddr(entry, where))
  }

  return addresses
}

/** Turns `host`, `host:port` or an IPv6 address into a TCP multiaddr. */
function toMultiaddr (entry: string, where: string): string {
  const parsed = parseHostPort(entry)
  if (parsed == null) {
    throw new ConfigError(`invalid supernode address "${entry}" in ${where}: expected host, host:port, IPv6 address or [IPv6]:port`)
  }
  return `/${parsed.family}/${parsed.host}/tcp/${parsed.port ?? SUPERNODE_PORT}`
}
