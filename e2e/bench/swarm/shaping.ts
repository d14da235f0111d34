/**
 * Rate limits on a veth egress with tc: an HTB class at the given rate with
 * a byte FIFO below it, like a switch port with a shallow buffer. Only HTB,
 * TBF and the plain FIFOs are required from the kernel, because minimal
 * kernels (such as Firecracker guest kernels) ship without fq_codel, sfq or
 * netem. Rates are in Mbit/s (10^6 bit/s), as tc's `mbit` unit.
 */
import { runCommand } from './commands.ts'

/**
 * Bytes the HTB class may send at line speed before the rate applies. veth
 * hands over GSO segments of up to 64 KiB, so the burst must exceed that or
 * HTB stalls. Above 128 KiB, the burst is 1 ms of traffic at the rate.
 */
export function burstBytes (mbit: number): number {
  const oneMillisecond = Math.ceil(mbit * 1e6 / 8 / 1000)
  return Math.max(128 * 1024, oneMillisecond)
}

/**
 * Queue limit of the FIFO: 20 ms at the rate, at least 256 KiB so a few GSO
 * segments fit. Without a limit the FIFO takes txqueuelen packets, which
 * with 64 KiB segments is tens of MiB and seconds of queueing delay.
 */
export function queueLimitBytes (mbit: number): number {
  const twentyMilliseconds = Math.ceil(mbit * 1e6 / 8 * 0.02)
  return Math.max(256 * 1024, twentyMilliseconds)
}

/** Returns the tc argument lists that limit `device`'s egress in `namespace` to `mbit`. */
export function egressLimitCommands (namespace: string, device: string, mbit: number): string[][] {
  const rate = `${mbit}mbit`
  const burst = String(burstBytes(mbit))
  return [
    ['-n', namespace, 'qdisc', 'add', 'dev', device, 'root', 'handle', '1:', 'htb', 'default', '1'],
    ['-n', namespace, 'class', 'add', 'dev', device, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', rate, 'ceil', rate, 'burst', burst, 'cburst', burst, 'quantum', '65536'],
    ['-n', namespace, 'qdisc', 'add', 'dev', device, 'parent', '1:1', 'handle', '10:', 'bfifo', 'limit', String(queueLimitBytes(mbit))]
  ]
}

/** Limits the egress of `device` in `namespace` to `mbit` Mbit/s, replacing any earlier limit. */
export async function limitEgress (namespace: string, device: string, mbit: number): Promise<void> {
  if (!Number.isFinite(mbit) || mbit <= 0) {
    throw new RangeError(`invalid link rate ${mbit} Mbit/s for ${device} in ${namespace}: expected a positive number`)
  }
  // HTB rejects `qdisc replace` of an HTB root, so an earlier limit is deleted first.
  const current = await runCommand('tc', ['-n', namespace, 'qdisc', 'show', 'dev', device])
  if (/^qdisc htb 1: root/m.test(current)) await runCommand('tc', ['-n', namespace, 'qdisc', 'del', 'dev', device, 'root'])
  for (const args of egressLimitCommands(namespace, device, mbit)) {
    await runCommand('tc', args)
  }
}

/** Returns the rate in bit/s of the HTB class on `device`, or undefined when it has none. */
export async function egressRateBits (namespace: string, device: string): Promise<number | undefined> {
  // `tc -j class show` prints plain text for HTB classes in iproute2 6.1, so the text form is parsed.
  const text = await runCommand('tc', ['-n', namespace, 'class', 'show', 'dev', device])
  const match = /class htb 1:1 .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit\b/.exec(text)
  if (match == null) return undefined
  const scale: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9 }
  return Math.round(Number(match[1]) * (scale[match[2] ?? ''] ?? 1))
}
