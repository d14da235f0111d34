/**
 * Checks of the network addresses a config may hold: TCP multiaddrs and
 * `host[:port]` entries.
 */
import { isIPv4, isIPv6 } from 'node:net'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'

export interface TcpMultiaddrRules {
  /** Accept /dns, /dns4 and /dns6 hosts besides /ip4 and /ip6. */
  hostnames: boolean
  /** Accept a trailing /p2p/<peer id>. */
  peerId: boolean
}

const IP_PROTOCOLS = new Set(['ip4', 'ip6'])
const DNS_PROTOCOLS = new Set(['dns', 'dns4', 'dns6'])

/**
 * Checks that `text` is a TCP multiaddr: /ip4 or /ip6 (or a DNS name when allowed),
 * then /tcp/<port>, then optionally /p2p/<peer id>.
 * Returns what is wrong with it, or undefined when it is valid.
 */
export function tcpMultiaddrProblem (text: string, rules: TcpMultiaddrRules): string | undefined {
  let address: Multiaddr
  try {
    address = multiaddr(text)
  } catch (err) {
    return `not a multiaddr (${(err as Error).message})`
  }

  // NOTE: only TCP is accepted because the node is built with the TCP transport alone.
  const [host, transport, ...rest] = address.getComponents()
  const hostAllowed = host != null && (IP_PROTOCOLS.has(host.name) || (rules.hostnames && DNS_PROTOCOLS.has(host.name)))
  if (!hostAllowed || transport?.name !== 'tcp') {
    return rules.hostnames ? 'not of the form /ip4|ip6|dns/<host>/tcp/<port>' : 'not of the form /ip4|ip6/<address>/tcp/<port>'
  }

  if (rest.length === 0) return undefined
  const [peer, ...extra] = rest
  if (!rules.peerId || peer?.name !== 'p2p' || extra.length > 0) {
    return rules.peerId ? `unexpected /${rest.map(c => c.name).join('/')} after /tcp/<port>: only /p2p/<peer id> may follow` : `unexpected /${rest.map(c => c.name).join('/')} after /tcp/<port>`
  }
  try {
    peerIdFromString(peer.value ?? '')
  } catch {
    // The caller's message already shows a valid address. The library's error is about multibase
    // decoders, which does not help a user, so it is left out.
    return `invalid peer id "${peer.value ?? ''}"`
  }
  return undefined
}

export interface HostPort {
  /** IPv4 or IPv6 address (without brackets) or a lowercase DNS name. */
  host: string
  family: 'ip4' | 'ip6' | 'dns'
  /** Port, when one was given. */
  port?: number
}

/**
 * Parses `host`, `host:port`, `[ipv6]`, `[ipv6]:port` or a bare IPv6 address.
 * Returns undefined for any other text.
 */
export function parseHostPort (text: string): HostPort | undefined {
  let host = text
  let portText: string | undefined

  // 1. Split off the port: bracketed IPv6, bare IPv6 (no port possible), or host:port.
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(text)
  if (bracketed?.[1] != null) {
    if (!isIPv6(bracketed[1])) return undefined
    host = bracketed[1]
    portText = bracketed[2]
  } else if (isIPv6(text)) {
    return { host: text, family: 'ip6' }
  } else {
    const colon = text.indexOf(':')
    if (colon !== -1) {
      host = text.slice(0, colon)
      portText = text.slice(colon + 1)
    }
  }

  // 2. Check the port.
  let port: number | undefined
  if (portText != null) {
    if (!/^\d{1,5}$/.test(portText)) return undefined
    port = Number(portText)
    if (port < 1 || port > 65535) return undefined
  }

  // 3. Classify the host.
  const withPort = port != null ? { port } : {}
  if (isIPv6(host) && bracketed != null) return { host, family: 'ip6', ...withPort }
  if (isIPv4(host)) return { host, family: 'ip4', ...withPort }
  if (isHostname(host)) return { host: host.toLowerCase(), family: 'dns', ...withPort }
  return undefined
}

/** Tells whether `text` is a DNS host name: dot-separated labels of letters, digits, '-' and '_', the last one not all digits. */
export function isHostname (text: string): boolean {
  if (text.length === 0 || text.length > 253) return false
  const labels = text.replace(/\.$/, '').split('.')
  const valid = labels.every(label => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/i.test(label))
  // A name whose last label is numeric would be an invalid IPv4 address such as 999.1.1.1.
  return valid && !/^\d+$/.test(labels[labels.length - 1] ?? '')
}
