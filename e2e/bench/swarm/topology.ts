/** Host names and addresses of one scenario: origin, supernode and N peers. */
import type { HostSpec } from './testbed.ts'

export const ORIGIN = { name: 'origin', address: '198.18.0.1' } as const
export const SUPERNODE = { name: 'super', address: '198.18.0.2' } as const
const FIRST_PEER_OCTET = 10
/** Peers take 198.18.0.10 to 198.18.0.249. */
export const MAX_PEERS = 240

export interface LinkRates {
  peerMbit: number
  originMbit: number
  supernodeMbit: number
}

/** Name of peer `index` (0-based): p01, p02, ... */
export function peerName (index: number): string {
  return `p${String(index + 1).padStart(2, '0')}`
}

/** Returns the hosts of a scenario with `peerCount` peers, every link symmetric. */
export function scenarioHosts (peerCount: number, rates: LinkRates): HostSpec[] {
  if (peerCount < 1 || peerCount > MAX_PEERS) throw new RangeError(`invalid peer count ${peerCount}: expected 1 to ${MAX_PEERS}`)
  const hosts: HostSpec[] = [
    { ...ORIGIN, uploadMbit: rates.originMbit, downloadMbit: rates.originMbit },
    { ...SUPERNODE, uploadMbit: rates.supernodeMbit, downloadMbit: rates.supernodeMbit }
  ]
  for (let index = 0; index < peerCount; index++) {
    hosts.push({ name: peerName(index), address: `198.18.0.${FIRST_PEER_OCTET + index}`, uploadMbit: rates.peerMbit, downloadMbit: rates.peerMbit })
  }
  return hosts
}
