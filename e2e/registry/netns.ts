/**
 * A Linux network namespace joined to this one by a veth pair, with
 * addresses from 198.18.0.0/15 (RFC 2544 benchmarking range). Go programs
 * such as skopeo never send loopback addresses through HTTP_PROXY, so tests
 * of the forward proxy put the registry at the namespace's address. Needs root.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'

const run = promisify(execFile)

export class TestNetns {
  /** Namespace name, for `ip netns exec`. */
  readonly name: string
  /** Address of this side of the veth pair. */
  readonly hostAddress: string
  /** Address inside the namespace. */
  readonly address: string
  private readonly hostLink: string

  private constructor (name: string, hostLink: string, hostAddress: string, address: string) {
    this.name = name
    this.hostLink = hostLink
    this.hostAddress = hostAddress
    this.address = address
  }

  /** Tells whether network namespaces can be made here (root and iproute2). */
  static async available (): Promise<boolean> {
    try {
      await run('ip', ['netns', 'list'])
      return process.getuid?.() === 0
    } catch {
      return false
    }
  }

  /** Creates the namespace on a random free /30 of 198.19.0.0/16; tries up to five subnets. */
  static async create (): Promise<TestNetns> {
    let lastError: unknown
    for (let attempt = 0; attempt < 5; attempt++) {
      const id = randomBytes(3).toString('hex')
      const [third = 0, fourth = 0] = randomBytes(2)
      const base = `198.19.${third}.${fourth & 0xfc}`
      const prefix = base.slice(0, base.lastIndexOf('.') + 1)
      const last = fourth & 0xfc
      const hostAddress = `${prefix}${last + 1}`
      const address = `${prefix}${last + 2}`
      const name = `dfnode-${id}`
      const hostLink = `dfh${id}`
      const nsLink = `dfn${id}`
      try {
        const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show'])
        if (stdout.includes(` ${prefix}`)) throw new Error(`subnet ${base}/30 is in use`)
        await run('ip', ['netns', 'add', name])
        const netns = new TestNetns(name, hostLink, hostAddress, address)
        try {
          await run('ip', ['link', 'add', hostLink, 'type', 'veth', 'peer', 'name', nsLink])
          await run('ip', ['link', 'set', nsLink, 'netns', name])
          await run('ip', ['addr', 'add', `${hostAddress}/30`, 'dev', hostLink])
          await run('ip', ['link', 'set', hostLink, 'up'])
          await run('ip', ['netns', 'exec', name, 'ip', 'addr', 'add', `${address}/30`, 'dev', nsLink])
          await run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', nsLink, 'up'])
          await run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up'])
          return netns
        } catch (err) {
          await netns.remove()
          throw err
        }
      } catch (err) {
        lastError = err
      }
    }
    throw new Error(`cannot create a network namespace: ${(lastError as Error).message}`)
  }

  /** Removes the veth pair and the namespace. */
  async remove (): Promise<void> {
    await run('ip', ['link', 'del', this.hostLink]).catch(() => {})
    await run('ip', ['netns', 'del', this.name]).catch(() => {})
  }
}
