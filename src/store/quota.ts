/**
 * In-memory index of stored pieces in least-recently-used order, with pin counts
 * and the choice of pieces to evict when their total size exceeds a quota.
 */

/** Default quota of piece data: 20 GiB. */
export const DEFAULT_QUOTA_BYTES = 20 * 1024 ** 3

export class QuotaIndex {
  /** Piece size by key; Map iteration order is the use order, least recently used first. */
  private readonly sizes = new Map<string, number>()
  /** Pin count by key, also for keys not (yet) in the index. */
  private readonly pins = new Map<string, number>()
  private used = 0

  /** Total size of the indexed pieces in bytes. */
  get usedBytes (): number {
    return this.used
  }

  /** Number of indexed pieces. */
  get count (): number {
    return this.sizes.size
  }

  has (key: string): boolean {
    return this.sizes.has(key)
  }

  sizeOf (key: string): number | undefined {
    return this.sizes.get(key)
  }

  /** Adds or updates a piece and marks it most recently used. */
  add (key: string, size: number): void {
    this.remove(key)
    this.sizes.set(key, size)
    this.used += size
  }

  /** Marks a piece most recently used; does nothing for a key not in the index. */
  touch (key: string): void {
    const size = this.sizes.get(key)
    if (size === undefined) return
    this.sizes.delete(key)
    this.sizes.set(key, size)
  }

  /** Removes a piece; returns whether it was indexed. */
  remove (key: string): boolean {
    const size = this.sizes.get(key)
    if (size === undefined) return false
    this.sizes.delete(key)
    this.used -= size
    return true
  }

  /** Holds a key against eviction until the returned function is called; calling it twice has no further effect. */
  pin (key: string): () => void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1)

    let released = false
    return () => {
      if (released) return
      released = true
      const count = (this.pins.get(key) ?? 1) - 1
      if (count <= 0) this.pins.delete(key)
      else this.pins.set(key, count)
    }
  }

  isPinned (key: string): boolean {
    return this.pins.has(key)
  }

  /**
   * Removes least-recently-used unpinned pieces until usedBytes is at most `quotaBytes`
   * and returns their keys, oldest first. Stops short of the quota when only pinned
   * pieces remain.
   */
  takeEvictions (quotaBytes: number): string[] {
    const evicted: string[] = []
    if (this.used <= quotaBytes) return evicted

    // Deleting the current entry while iterating a Map is safe and does not skip the next one.
    for (const key of this.sizes.keys()) {
      if (this.used <= quotaBytes) break
      if (this.pins.has(key)) continue
      this.remove(key)
      evicted.push(key)
    }

    return evicted
  }
}
