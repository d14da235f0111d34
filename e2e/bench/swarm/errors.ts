/**
 * Error class of the swarm benchmark testbed. It extends the project's
 * DfnodeError so callers branch on `code` as they do for the engine.
 */
import { DfnodeError, ExitCode } from '../../../src/errors.ts'

/** A testbed command (ip, tc, a benchmarked program) failed or could not start. */
export class TestbedError extends DfnodeError {
  static readonly code = 'ERR_TESTBED'
  override name = 'TestbedError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, TestbedError.code, ExitCode.failure, options)
  }
}
