/**
 * Supernode selection: rendezvous (highest-random-weight) hashing of a content
 * key over the configured supernode list, so every peer requests a content from the same
 * supernode, and the next one when it is down.
 */
import { createHash } from 'node:crypto'
import type { CID } from 'multiformats/cid'

/** Orders supernode addresses for a key, best first. */
export function rankSupernodes (key: CID, supernodes: readonly string[]): string[] {
  const scored = supernodes.map(address => ({
    address,
    score: createHash('sha256').update(key.bytes).update(identityOf(address)).digest('hex')
  }))
  // Plain code-unit order, never locale order: every peer must rank alike.
  scored.sort((a, b) => {
    if (a.score === b.score) return 0
    return a.score < b.score ? 1 : -1
  })
  return scored.map(entry => entry.address)
}

/** Returns the part of an address that names the supernode: its peer id when present, else the whole address. */
function identityOf (address: string): string {
  const match = /\/p2p\/([^/]+)$/.exec(address)
  return match?.[1] ?? address
}
