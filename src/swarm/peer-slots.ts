/**
 * Piece requests in flight to each peer, over all downloads of a process. A
 * peer's pieces share one connection, and every response being received needs
 * a buffer of a whole piece. So a daemon that downloads several contents from
 * the same peer keeps at most `limit` of them going at once.
 */
export class PeerSlots {
  private readonly limit: number
  private readonly used = new Map<string, number>()
  private readonly listeners = new Set<() => void>()

  constructor (limit: number) {
    this.limit = limit
  }

  /** Takes a slot for `peer`, or returns false when all of them are in use. */
  take (peer: string): boolean {
    const used = this.used.get(peer) ?? 0
    if (used >= this.limit) return false
    this.used.set(peer, used + 1)
    return true
  }

  /** Gives back a slot taken for `peer` and calls the listeners. */
  release (peer: string): void {
    const used = (this.used.get(peer) ?? 0) - 1
    if (used > 0) this.used.set(peer, used)
    else this.used.delete(peer)
    for (const listener of this.listeners) listener()
  }

  /** Calls `listener` whenever a slot is given back. Returns the function that removes it. */
  onRelease (listener: () => void): () => void {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }
}
