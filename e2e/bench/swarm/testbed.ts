/**
 * A testbed of hosts, each a network namespace with one veth whose other end
 * is a port of a Linux bridge in a namespace of its own. No address, bridge or
 * route is added to the root namespace. Each host's upload is limited on its
 * own veth egress and its download on the egress of the bridge-side end.
 */
import { isProcessRunning } from '../../../src/store/atomic-file.ts'
import { runCommand, runInNamespace } from './commands.ts'
import { TestbedError } from './errors.ts'
import { limitEgress } from './shaping.ts'

/** Host description: its name is part of the namespace and bridge-port names. */
export interface HostSpec {
  /** Short name, letters, digits and dashes, at most 12 characters. */
  name: string
  /** IPv4 address from 198.18.0.0/15. */
  address: string
  /** Upload limit in Mbit/s. */
  uploadMbit: number
  /** Download limit in Mbit/s. */
  downloadMbit: number
}

export interface Host extends HostSpec {
  /** Network namespace of the host. */
  namespace: string
  /** Interface name inside the host namespace. */
  device: string
  /** Name of the veth end in the bridge namespace. */
  bridgePort: string
}

export interface LinkCounters {
  /** Bytes the host's interface sent (its upload), headers included. */
  txBytes: number
  /** Bytes the host's interface received (its download), headers included. */
  rxBytes: number
}

/** Prefix length of every host address. */
export const ADDRESS_PREFIX_LENGTH = 16
const HOST_DEVICE = 'eth0'
const BRIDGE_DEVICE = 'br0'
const HOST_NAME_PATTERN = /^[a-z0-9-]{1,12}$/

/** Returns the namespace prefix of one testbed: `<family><pid>-`. */
export function testbedPrefix (family: string, pid = process.pid): string {
  return `${family}${pid}-`
}

/** Lists every network namespace on the machine. */
export async function listNamespaces (): Promise<string[]> {
  const json = await runCommand('ip', ['-j', 'netns', 'list'])
  if (json.trim() === '') return []
  const entries = JSON.parse(json) as Array<{ name: string }>
  return entries.map((entry) => entry.name)
}

/** Lists the namespaces whose names start with `prefix`. */
export async function namespacesWithPrefix (prefix: string): Promise<string[]> {
  return (await listNamespaces()).filter((name) => name.startsWith(prefix))
}

/** Kills every process inside `namespace` and deletes it; a missing namespace is no error. */
export async function removeNamespace (namespace: string): Promise<void> {
  const names = await listNamespaces()
  if (!names.includes(namespace)) return

  const pids = (await runCommand('ip', ['netns', 'pids', namespace])).split(/\s+/).filter((pid) => pid !== '')
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL')
    } catch {
      // The process ended between the listing and the signal.
    }
  }
  await runCommand('ip', ['netns', 'delete', namespace])
}

/** Deletes every namespace whose name starts with `prefix`, bridge namespaces last; returns their names. */
export async function removeNamespacesWithPrefix (prefix: string): Promise<string[]> {
  const names = await namespacesWithPrefix(prefix)
  for (const name of bridgeLast(names)) await removeNamespace(name)
  return names
}

/** Orders host namespaces before bridge namespaces, so veths go before the bridge they are ports of. */
function bridgeLast (names: readonly string[]): string[] {
  return [...names].sort((a, b) => Number(a.endsWith('-bridge')) - Number(b.endsWith('-bridge')))
}

export interface LeftoverReport {
  /** Namespaces deleted because the run that made them no longer exists. */
  removed: string[]
  /** Namespaces kept because the process that made them still runs. */
  inUse: string[]
}

/**
 * Deletes namespaces `<family><pid>-*` whose pid no longer runs, with every
 * process inside them. Namespaces of a live run are reported, not touched.
 */
export async function removeLeftovers (family: string): Promise<LeftoverReport> {
  const report: LeftoverReport = { removed: [], inUse: [] }
  const pattern = new RegExp(`^${family.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\d+)-`)
  const names = await listNamespaces()

  for (const name of bridgeLast(names)) {
    const match = pattern.exec(name)
    if (match == null) continue
    const pid = Number(match[1])
    if (pid !== process.pid && isProcessRunning(pid)) {
      report.inUse.push(name)
      continue
    }
    await removeNamespace(name)
    report.removed.push(name)
  }
  return report
}

/** A set of shaped hosts on one bridge; `destroy()` removes every namespace it made. */
export class Testbed {
  readonly prefix: string
  readonly bridgeNamespace: string
  private readonly hostsByName = new Map<string, Host>()
  private readonly created: string[] = []
  private destroyed = false

  private constructor (prefix: string) {
    this.prefix = prefix
    this.bridgeNamespace = `${prefix}bridge`
  }

  /**
   * Creates the bridge namespace and every host. Raises TestbedError when a
   * namespace with the prefix already exists; removes what it made on failure.
   */
  static async create (prefix: string, hosts: readonly HostSpec[]): Promise<Testbed> {
    validateHosts(hosts)
    const existing = await namespacesWithPrefix(prefix)
    if (existing.length > 0) {
      throw new TestbedError(`namespaces with prefix ${prefix} already exist (${existing.join(', ')}): remove them with --cleanup or 'ip netns delete NAME'`)
    }

    const testbed = new Testbed(prefix)
    try {
      await testbed.createBridge()
      for (const spec of hosts) await testbed.addHost(spec)
    } catch (err) {
      await testbed.destroy()
      throw err
    }
    return testbed
  }

  /** Every host, in creation order. */
  get hosts (): Host[] {
    return [...this.hostsByName.values()]
  }

  /** Returns the host called `name`; raises TestbedError when there is none. */
  host (name: string): Host {
    const host = this.hostsByName.get(name)
    if (host == null) throw new TestbedError(`no host named ${name} in testbed ${this.prefix}: known hosts are ${[...this.hostsByName.keys()].join(', ')}`)
    return host
  }

  /** Reads the interface counters of a host from /sys inside its namespace. */
  async counters (name: string): Promise<LinkCounters> {
    const host = this.host(name)
    const base = `/sys/class/net/${host.device}/statistics`
    const output = await runInNamespace(host.namespace, ['cat', `${base}/tx_bytes`, `${base}/rx_bytes`])
    const [tx, rx] = output.trim().split(/\s+/).map(Number)
    if (tx == null || rx == null || !Number.isFinite(tx) || !Number.isFinite(rx)) {
      throw new TestbedError(`unreadable interface counters of ${host.device} in ${host.namespace}: ${JSON.stringify(output)}`)
    }
    return { txBytes: tx, rxBytes: rx }
  }

  /** Reads the counters of every host. */
  async allCounters (): Promise<Map<string, LinkCounters>> {
    const entries = await Promise.all(this.hosts.map(async (host) => [host.name, await this.counters(host.name)] as const))
    return new Map(entries)
  }

  /** Kills the processes inside the testbed and deletes its namespaces; safe to call twice. */
  async destroy (): Promise<void> {
    if (this.destroyed) return
    this.destroyed = true
    const failures: string[] = []

    // Hosts first, in reverse order, then the bridge namespace, which was made first.
    for (const namespace of [...this.created].reverse()) {
      try {
        await removeNamespace(namespace)
      } catch (err) {
        failures.push(`${namespace}: ${(err as Error).message}`)
      }
    }
    if (failures.length > 0) {
      throw new TestbedError(`could not remove every namespace of ${this.prefix}: ${failures.join('; ')}; run the benchmark with --cleanup`)
    }
  }

  private async createBridge (): Promise<void> {
    const ns = this.bridgeNamespace
    await runCommand('ip', ['netns', 'add', ns])
    this.created.push(ns)
    await disableIpv6(ns)
    await runCommand('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
    await runCommand('ip', ['-n', ns, 'link', 'add', BRIDGE_DEVICE, 'type', 'bridge', 'stp_state', '0'])
    await runCommand('ip', ['-n', ns, 'link', 'set', BRIDGE_DEVICE, 'up'])
  }

  private async addHost (spec: HostSpec): Promise<void> {
    const host: Host = { ...spec, namespace: `${this.prefix}${spec.name}`, device: HOST_DEVICE, bridgePort: `b-${spec.name}` }

    // 1. The namespace, without IPv6 so no router or neighbour solicitations add to the counters.
    await runCommand('ip', ['netns', 'add', host.namespace])
    this.created.push(host.namespace)
    await disableIpv6(host.namespace)
    await runCommand('ip', ['-n', host.namespace, 'link', 'set', 'lo', 'up'])

    // 2. The veth pair, created directly in both namespaces, and the bridge port.
    await runCommand('ip', ['link', 'add', host.device, 'netns', host.namespace, 'type', 'veth', 'peer', 'name', host.bridgePort, 'netns', this.bridgeNamespace])
    await runCommand('ip', ['-n', this.bridgeNamespace, 'link', 'set', host.bridgePort, 'master', BRIDGE_DEVICE])
    await runCommand('ip', ['-n', this.bridgeNamespace, 'link', 'set', host.bridgePort, 'up'])
    await runCommand('ip', ['-n', host.namespace, 'addr', 'add', `${host.address}/${ADDRESS_PREFIX_LENGTH}`, 'dev', host.device])
    await runCommand('ip', ['-n', host.namespace, 'link', 'set', host.device, 'up'])

    // 3. Upload on the host's egress, download on the bridge port's egress towards the host.
    await limitEgress(host.namespace, host.device, host.uploadMbit)
    await limitEgress(this.bridgeNamespace, host.bridgePort, host.downloadMbit)

    this.hostsByName.set(host.name, host)
  }
}

async function disableIpv6 (namespace: string): Promise<void> {
  await runInNamespace(namespace, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1'])
}

function validateHosts (hosts: readonly HostSpec[]): void {
  const names = new Set<string>()
  const addresses = new Set<string>()
  for (const host of hosts) {
    if (!HOST_NAME_PATTERN.test(host.name)) {
      throw new TestbedError(`invalid host name ${JSON.stringify(host.name)}: use 1 to 12 lowercase letters, digits or dashes`)
    }
    if (!isBenchAddress(host.address)) {
      throw new TestbedError(`invalid address ${host.address} for host ${host.name}: use a host address from 198.18.0.0/16, the lower half of the benchmark range 198.18.0.0/15`)
    }
    if (names.has(host.name)) throw new TestbedError(`duplicate host name ${host.name}`)
    if (addresses.has(host.address)) throw new TestbedError(`duplicate address ${host.address} (host ${host.name})`)
    names.add(host.name)
    addresses.add(host.address)
  }
}

/** True for 198.18.a.b with 0 <= a <= 255 and 1 <= b <= 254, so all hosts share one /16. */
function isBenchAddress (address: string): boolean {
  const parts = address.split('.').map((part) => /^\d{1,3}$/.test(part) ? Number(part) : NaN)
  if (parts.length !== 4 || parts[0] !== 198 || parts[1] !== 18) return false
  const [, , third, fourth] = parts
  return third != null && fourth != null && third <= 255 && fourth >= 1 && fourth <= 254
}
