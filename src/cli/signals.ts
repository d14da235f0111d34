/**
 * Termination signals: the first one starts a clean shutdown, a second one
 * ends the process at once.
 */
import { constants } from 'node:os'
import { DfnodeError } from '../errors.ts'

/** Exit status of a process ended by `signal`, as shells report it: 128 + the signal number. */
export function signalExitCode (signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? 0)
}

/** A command stopped because the user or the system sent a termination signal. */
export class InterruptedError extends DfnodeError {
  static readonly code = 'ERR_INTERRUPTED'
  override name = 'InterruptedError'
  readonly signal: NodeJS.Signals
  constructor (signal: NodeJS.Signals, options?: ErrorOptions) {
    super(`interrupted by ${signal}`, InterruptedError.code, signalExitCode(signal), options)
    this.signal = signal
  }
}

/**
 * Calls `onSignal` on the first of `signals`. A second signal writes one line to stderr and
 * exits at once, for a shutdown that hangs. Returns a function that removes the handlers.
 */
export function onTermination (signals: readonly NodeJS.Signals[], onSignal: (signal: NodeJS.Signals) => void): () => void {
  let received = false

  const listener = (signal: NodeJS.Signals): void => {
    if (received) {
      process.stderr.write(`dfnode: ${signal} received again, exiting without cleanup\n`)
      process.exit(signalExitCode(signal))
    }
    received = true
    onSignal(signal)
  }

  for (const signal of signals) process.on(signal, listener)
  return () => {
    for (const signal of signals) process.off(signal, listener)
  }
}
