/**
 * Token bucket shared by every upload of a process, so that `uploadRate`
 * caps the bytes per second sent to other peers.
 */

export class RateLimiter {
  private readonly bytesPerSecond: number
  private tokens: number
  private updated = Date.now()
  private queue: Promise<void> = Promise.resolve()

  /** Creates a limiter. A rate of 0 never waits, and the bucket holds at most one second of traffic. */
  constructor (bytesPerSecond: number) {
    this.bytesPerSecond = bytesPerSecond
    this.tokens = bytesPerSecond
  }

  /** Waits until `bytes` may be sent. Callers are served in order. */
  async take (bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.bytesPerSecond <= 0) return
    const turn = this.queue.then(async () => { await this.wait(bytes, signal) })
    this.queue = turn.catch(() => {})
    await turn
  }

  private async wait (bytes: number, signal?: AbortSignal): Promise<void> {
    this.refill()
    this.tokens -= bytes
    if (this.tokens >= 0) return
    const ms = Math.ceil(-this.tokens / this.bytesPerSecond * 1000)
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, ms)
      signal?.addEventListener('abort', () => { clearTimeout(timer); reject(signal.reason) }, { once: true })
    })
  }

  private refill (): void {
    const now = Date.now()
    this.tokens = Math.min(this.bytesPerSecond, this.tokens + (now - this.updated) / 1000 * this.bytesPerSecond)
    this.updated = now
  }
}
