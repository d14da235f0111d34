/** Waiting for a promise with a deadline that leaves no timer behind. */

/** Resolves with the value of `promise`, or undefined when `ms` passes first; the timer is cleared either way. */
export async function withinTimeout<T> (promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => { resolve(undefined) }, ms)
  })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}
