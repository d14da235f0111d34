/**
 * The contract between the program in main.ts and each command file, and the
 * readers of parsed option values.
 */
import type { Environment } from '../config/load.ts'
import { UsageError } from '../errors.ts'

export interface OptionSpec {
  /** Long name without dashes, e.g. `output`; a boolean named `no-x` sets `x` to false. */
  name: string
  /** One-letter alias, e.g. `o`. */
  short?: string
  /** `string` options take a value (repeatable ones may be given more than once); `boolean` ones do not. */
  type: 'string' | 'boolean'
  /** Help line: what the option sets, in what unit, and its default. */
  description: string
}

export interface Command {
  /** Name typed after `dfnode`. */
  name: string
  /** Positional arguments in usage notation: `<url>` required, `[name]` optional; none when empty. */
  arguments?: string
  /** Help text, one line per entry; the first line also appears in the command list. */
  description: readonly string[]
  options: readonly OptionSpec[]
  /** Example invocations without the leading `dfnode`. */
  examples?: readonly string[]
  /** Runs the command and resolves to its exit code; errors are printed by main. */
  run (invocation: Invocation): Promise<number>
}

/** Option values parsed from the command line, by long name. The `_` entry contains unexpected positional arguments. */
export type ParsedOptions = Readonly<Record<string, unknown>>

export interface Invocation {
  /** Positional arguments, in the order of Command.arguments; optional ones that were not given are absent. */
  args: readonly string[]
  options: ParsedOptions
  io: CommandIo
}

/** Output streams, environment and working directory of a command: those of the process in production, captured ones in tests. */
export interface CommandIo {
  stdout: OutputStream
  stderr: OutputStream
  env: Environment
  cwd: string
}

export interface OutputStream {
  write (text: string): unknown
  /** True when the stream is a terminal. */
  isTTY?: boolean
  /** Terminal width in characters, when a terminal. */
  columns?: number
}

/** Returns the I/O of the current process. */
export function processIo (): CommandIo {
  return { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd() }
}

/** Reads a single-value option; the last one wins when it is repeated. Throws UsageError when it has no value. */
export function stringOption (options: ParsedOptions, name: string): string | undefined {
  const raw = options[name]
  if (raw === undefined) return undefined
  const value = Array.isArray(raw) ? raw[raw.length - 1] as unknown : raw
  if (typeof value !== 'string' || value === '') throw new UsageError(`missing value for --${name}`)
  return value
}

/** Reads a repeatable option as a list; an empty value is kept, so `--filter ''` can set an empty list. */
export function listOption (options: ParsedOptions, name: string): string[] | undefined {
  const raw = options[name]
  if (raw === undefined) return undefined
  const values = Array.isArray(raw) ? raw as unknown[] : [raw]
  return values.map(value => {
    if (typeof value !== 'string') throw new UsageError(`missing value for --${name}`)
    return value
  })
}

/** Reads a switch; the last one wins when it is repeated (`--json --no-json` is off). */
export function booleanOption (options: ParsedOptions, name: string): boolean | undefined {
  const raw = options[name]
  if (raw === undefined) return undefined
  const value = Array.isArray(raw) ? raw[raw.length - 1] as unknown : raw
  if (typeof value !== 'boolean') throw new UsageError(`--${name} takes no value, found "${String(value)}"`)
  return value
}
