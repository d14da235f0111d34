/**
 * Named error classes. Callers branch on `err.name` or `err.code`, never on
 * message text; the CLI maps each code to an exit code.
 */

/** Exit codes of the CLI, one per kind of failure. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  verification: 4,
  timeout: 5,
  origin: 6,
  unreachable: 7
} as const

export class DfnodeError extends Error {
  /** Stable machine-readable code. */
  readonly code: string
  /** Exit code the CLI uses when this error ends a command. */
  readonly exitCode: number

  constructor (message: string, code: string, exitCode: number, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.exitCode = exitCode
  }
}

/** Invalid command-line or configuration input. */
export class UsageError extends DfnodeError {
  static readonly code = 'ERR_USAGE'
  override name = 'UsageError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, UsageError.code, ExitCode.usage, options)
  }
}

/** Invalid configuration: names the key, the value and what is accepted. */
export class ConfigError extends DfnodeError {
  static readonly code = 'ERR_CONFIG'
  override name = 'ConfigError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, ConfigError.code, ExitCode.usage, options)
  }
}

/** The origin responded with an HTTP error status. */
export class OriginStatusError extends DfnodeError {
  static readonly code = 'ERR_ORIGIN_STATUS'
  override name = 'OriginStatusError'
  readonly status: number
  readonly body: string
  constructor (message: string, status: number, body = '', options?: ErrorOptions) {
    super(message, OriginStatusError.code, status === 404 || status === 410 ? ExitCode.notFound : ExitCode.origin, options)
    this.status = status
    this.body = body
  }
}

/** The origin could not be reached or broke off the transfer after all retries. */
export class OriginUnreachableError extends DfnodeError {
  static readonly code = 'ERR_ORIGIN_UNREACHABLE'
  override name = 'OriginUnreachableError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, OriginUnreachableError.code, ExitCode.origin, options)
  }
}

/**
 * The origin's response cannot be used: a Content-Range that does not match the
 * request, a compressed body, a size that changed between attempts, or a body
 * larger than the reader's limit.
 */
export class OriginResponseError extends DfnodeError {
  static readonly code = 'ERR_ORIGIN_RESPONSE'
  override name = 'OriginResponseError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, OriginResponseError.code, ExitCode.origin, options)
  }
}

/** A URL's host is not in the supernode's list of allowed origins. */
export class OriginNotAllowedError extends DfnodeError {
  static readonly code = 'ERR_ORIGIN_NOT_ALLOWED'
  override name = 'OriginNotAllowedError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, OriginNotAllowedError.code, ExitCode.origin, options)
  }
}

/** Bytes did not match the hash they were expected to have. */
export class VerificationError extends DfnodeError {
  static readonly code = 'ERR_VERIFICATION'
  override name = 'VerificationError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, VerificationError.code, ExitCode.verification, options)
  }
}

/** An operation ran past its deadline. */
export class TimeoutError extends DfnodeError {
  static readonly code = 'ERR_TIMEOUT'
  override name = 'TimeoutError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, TimeoutError.code, ExitCode.timeout, options)
  }
}

/** No supernode, peer or origin could supply the content. */
export class NoSourceError extends DfnodeError {
  static readonly code = 'ERR_NO_SOURCE'
  override name = 'NoSourceError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, NoSourceError.code, ExitCode.unreachable, options)
  }
}

/** A peer broke the wire protocol. */
export class ProtocolError extends DfnodeError {
  static readonly code = 'ERR_PROTOCOL'
  override name = 'ProtocolError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, ProtocolError.code, ExitCode.failure, options)
  }
}

/** An external program the command needs (such as openssl) is missing or failed. */
export class ExternalToolError extends DfnodeError {
  static readonly code = 'ERR_EXTERNAL_TOOL'
  override name = 'ExternalToolError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, ExternalToolError.code, ExitCode.failure, options)
  }
}

/** A local file or the piece store could not be written or read: a full disk, a file size limit, a removed file. */
export class StorageError extends DfnodeError {
  static readonly code = 'ERR_STORE'
  override name = 'StorageError'
  constructor (message: string, options?: ErrorOptions) {
    super(message, StorageError.code, ExitCode.failure, options)
  }
}

/** Returns the exit code for any thrown value. */
export function exitCodeOf (err: unknown): number {
  if (err instanceof DfnodeError) return err.exitCode
  return ExitCode.failure
}

/** Rebuilds an error reported by another process from its code, so callers branch on the same classes. */
export function errorFromCode (code: string, message: string, status?: number): DfnodeError {
  switch (code) {
    case OriginStatusError.code: return new OriginStatusError(message, status ?? 502)
    case OriginNotAllowedError.code: return new OriginNotAllowedError(message)
    case OriginUnreachableError.code: return new OriginUnreachableError(message)
    case OriginResponseError.code: return new OriginResponseError(message)
    case VerificationError.code: return new VerificationError(message)
    case TimeoutError.code: return new TimeoutError(message)
    case UsageError.code: return new UsageError(message)
    case ConfigError.code: return new ConfigError(message)
    case NoSourceError.code: return new NoSourceError(message)
    case StorageError.code: return new StorageError(message)
    default: return new DfnodeError(message, code, ExitCode.failure)
  }
}
