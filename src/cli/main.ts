/**
 * The dfnode program: the command list, argument parsing with sade, and the
 * mapping of errors to one stderr line and an exit code.
 * A new command is one file exporting a Command plus one line in COMMANDS.
 */
import sade from 'sade'
import packageJson from '../../package.json' with { type: 'json' }
import { DfnodeError, ExitCode, UsageError, exitCodeOf } from '../errors.ts'
import { scanArguments } from './arguments.ts'
import { processIo, type Command, type CommandIo, type OptionSpec, type ParsedOptions } from './command.ts'
import { containerdConfigCommand } from './containerd-config.ts'
import { fetchCommand } from './fetch.ts'
import { genCaCommand } from './gen-ca.ts'
import { tuneGarbageCollector } from './heap-tuning.ts'
import { proxyCommand } from './proxy.ts'
import { GLOBAL_OPTIONS } from './setup.ts'
import { supernodeCommand } from './supernode.ts'

/** Commands in the order `dfnode --help` lists them. */
export const COMMANDS: readonly Command[] = [
  supernodeCommand,
  proxyCommand,
  fetchCommand,
  containerdConfigCommand,
  genCaCommand
]

const PROGRAM = 'dfnode'

/**
 * Runs the command line `argv` (as process.argv: node, script, arguments) and resolves to
 * the exit code. Errors become one `dfnode: <message>` line on stderr. When the command line
 * turns on a command's --json option, stdout also gets the error as one JSON object, usage
 * errors included.
 */
export async function main (argv: readonly string[], io: CommandIo = processIo(), commands: readonly Command[] = COMMANDS): Promise<number> {
  tuneGarbageCollector()
  try {
    return await dispatch(argv, io, commands)
  } catch (err) {
    io.stderr.write(`${PROGRAM}: ${oneLine(err instanceof Error ? err.message : String(err))}\n`)
    if (asksForJson(argv, commands)) io.stdout.write(`${JSON.stringify(failureOf(err))}\n`)
    return exitCodeOf(err)
  }
}

/** Returns the --json object of a failed command: the error's code and message, and the exit code. */
function failureOf (err: unknown): { error: { code: string, message: string }, exitCode: number } {
  const code = err instanceof DfnodeError ? err.code : 'ERR_FAILURE'
  return { error: { code, message: err instanceof Error ? err.message : String(err) }, exitCode: exitCodeOf(err) }
}

/** Tells whether `argv` names a command that has a --json option and turns it on: the last --json or --no-json wins. */
function asksForJson (argv: readonly string[], commands: readonly Command[]): boolean {
  const { args, flagArgs, scan } = readCommandLine(argv, commands)
  const command = commands.find(candidate => candidate.name === args[scan.commandIndex ?? -1])
  if (command == null || !command.options.some(option => option.name === 'json')) return false
  const last = flagArgs.findLast(arg => arg === '--json' || arg === '--no-json')
  return last === '--json'
}

/** Splits a command line into its arguments, those before `--`, and the position of the command among them. */
function readCommandLine (argv: readonly string[], commands: readonly Command[]): { args: string[], flagArgs: string[], scan: ReturnType<typeof scanArguments> } {
  const flags = valueFlags(commands)
  const args = joinNegativeValues(argv.slice(2), flags)
  const flagArgs = args.slice(0, args.includes('--') ? args.indexOf('--') : args.length)
  const scan = scanArguments(args, new Set([...flags.keys()].map(flag => flag.replace(/^-+/, ''))))
  return { args, flagArgs, scan }
}

async function dispatch (argv: readonly string[], io: CommandIo, commands: readonly Command[]): Promise<number> {
  const { args, flagArgs, scan } = readCommandLine(argv, commands)
  const program = buildProgram(commands)
  const names = commands.map(command => command.name).join(', ')

  // sade prints the version as "dfnode, 0.1.0", where command-line tools print "dfnode 0.1.0".
  if ((flagArgs.includes('--version') || flagArgs.includes('-v')) && !flagArgs.includes('--help') && !flagArgs.includes('-h')) {
    io.stdout.write(`${PROGRAM} ${packageJson.version}\n`)
    return ExitCode.ok
  }

  // 1. Find the command, which may follow global options.
  if (scan.commandIndex == null) {
    if (scan.helpOrVersion) {
      program.parse([...argv])
      return ExitCode.ok
    }
    const unknown = flagArgs.find(arg => arg.startsWith('-') && !knownFlag(arg, commands))
    if (unknown != null) throw new UsageError(`unknown option ${unknown.split('=')[0] ?? unknown}: run ${PROGRAM} --help for usage`)
    throw new UsageError(`missing command: expected one of ${names}; run ${PROGRAM} --help for usage`)
  }
  const name = args[scan.commandIndex] ?? ''
  const command = commands.find(candidate => candidate.name === name)
  if (command == null) {
    throw new UsageError(`unknown command "${name}": expected one of ${names}; run ${PROGRAM} --help for usage`)
  }

  // 2. Check the positional arguments here, because sade exits with status 1 on missing ones.
  const required = (command.arguments ?? '').split(/\s+/).filter(argument => argument.startsWith('<'))
  const missing = required[scan.positionals.length]
  if (!scan.helpOrVersion && missing != null) {
    throw new UsageError(`missing ${missing.slice(1, -1)}: usage ${usageOf(command)}`)
  }

  // 3. Parse with the command name first, which is where sade looks for it.
  const reordered = [argv[0] ?? 'node', argv[1] ?? PROGRAM, name, ...args.filter((_, index) => index !== scan.commandIndex)]
  const parsed = program.parse(reordered, {
    lazy: true,
    boolean: optionNames(command, 'boolean'),
    string: optionNames(command, 'string'),
    default: negatedOptionDefaults(command),
    unknown: flag => {
      throw new UsageError(`unknown option ${flag} for ${PROGRAM} ${command.name}: run ${PROGRAM} ${command.name} --help for its options`)
    }
  }) as sade.LazyOutput | undefined

  // sade printed the help or the version.
  if (parsed == null) return ExitCode.ok

  // 4. Run the command.
  const options = parsed.args[parsed.args.length - 1] as unknown as ParsedOptions & { _: string[] }
  const positionals = (parsed.args.slice(0, -1) as Array<string | undefined>).filter((value): value is string => value != null)
  const extra = options._[0]
  if (extra != null) {
    throw new UsageError(`unexpected argument "${extra}": usage ${usageOf(command)}`)
  }
  return await command.run({ args: positionals, options, io })
}

/** Registers the commands and their options with sade, which prints the help from them. */
function buildProgram (commands: readonly Command[]): sade.Sade {
  const program = sade(PROGRAM)
    .version(packageJson.version)
    .describe('Peer-to-peer distribution of container images and large files.')

  for (const option of GLOBAL_OPTIONS) program.option(flagOf(option), option.description)

  for (const command of commands) {
    program.command(`${command.name} ${command.arguments ?? ''}`.trim())
    program.describe([...command.description])
    for (const option of command.options) program.option(flagOf(option), option.description)
    for (const example of command.examples ?? []) program.example(example)
  }
  return program
}

/** Formats an option as sade takes it: `-o, --output` or `--listen`. */
function flagOf (option: OptionSpec): string {
  return option.short != null ? `-${option.short}, --${option.name}` : `--${option.name}`
}

/** Long names of the options of `type` of a command and the global ones; mri needs them to read values right. */
function optionNames (command: Command, type: OptionSpec['type']): string[] {
  return [...GLOBAL_OPTIONS, ...command.options].filter(option => option.type === type).map(option => option.name)
}

/** Makes mri accept `--no-x` options: it reads them as `x` set to false, so `x` must be a known key. */
function negatedOptionDefaults (command: Command): Record<string, undefined> {
  const defaults: Record<string, undefined> = {}
  for (const option of [...GLOBAL_OPTIONS, ...command.options]) {
    if (option.type === 'boolean' && option.name.startsWith('no-')) defaults[option.name.slice(3)] = undefined
  }
  return defaults
}

/** Tells whether `arg` (such as `--data-dir=x`, `--no-json` or `-o`) is an option of dfnode or of any command. */
function knownFlag (arg: string, commands: readonly Command[]): boolean {
  const name = (arg.split('=')[0] ?? '').replace(/^--?(no-)?/, '')
  if (['help', 'h', 'version', 'v'].includes(name)) return true
  return [...GLOBAL_OPTIONS, ...commands.flatMap(command => command.options)].some(option => option.name === name || option.short === name)
}

/** Maps each flag of an option that takes a value, such as `--timeout` or `-o`, to the option's long name. */
function valueFlags (commands: readonly Command[]): Map<string, string> {
  const flags = new Map<string, string>()
  for (const option of [...GLOBAL_OPTIONS, ...commands.flatMap(command => command.options)]) {
    if (option.type !== 'string') continue
    flags.set(`--${option.name}`, option.name)
    if (option.short != null) flags.set(`-${option.short}`, option.name)
  }
  return flags
}

/**
 * Joins `--timeout -5` into `--timeout=-5`. mri, sade's parser, reads `-5` as a flag of its own and
 * leaves `--timeout` without a value, so the option's own check never receives the number.
 */
function joinNegativeValues (args: readonly string[], flags: ReadonlyMap<string, string>): string[] {
  const joined: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? ''
    if (arg === '--') {
      joined.push(...args.slice(i))
      break
    }

    const long = flags.get(arg)
    const next = args[i + 1]
    if (long != null && next != null && /^-\d/.test(next)) {
      joined.push(`--${long}=${next}`)
      i++
    } else {
      joined.push(arg)
    }
  }
  return joined
}

/** Joins a message into one line, leaving out stack frames that some libraries put into their messages. */
function oneLine (message: string): string {
  return message.split('\n').filter(line => !/^\s+at \S/.test(line)).map(line => line.trim()).filter(line => line !== '').join(' ')
}

/** Returns a command's usage line, such as `dfnode fetch <url> [options]`. */
function usageOf (command: Command): string {
  return [PROGRAM, command.name, command.arguments, '[options]'].filter(part => part != null && part !== '').join(' ')
}
