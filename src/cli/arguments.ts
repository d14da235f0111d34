/**
 * A first pass over the command line that finds the command name, which may
 * follow options (`dfnode --verbose fetch URL`). It skips option values the way
 * mri, sade's parser, reads them.
 */

export interface ArgumentScan {
  /** Index of the command name in the arguments; undefined when there is no positional argument. */
  commandIndex?: number
  /** Positional arguments after the command name. */
  positionals: string[]
  /** Whether -h/--help or -v/--version was given; sade prints the help or version before checking anything else. */
  helpOrVersion: boolean
}

/**
 * Scans `args` (the command line without node and the script).
 * `valueOptions` contains the long names and one-letter aliases of the options that take a value.
 */
export function scanArguments (args: readonly string[], valueOptions: ReadonlySet<string>): ArgumentScan {
  const scan: ArgumentScan = { positionals: [], helpOrVersion: false }
  let onlyPositionals = false

  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? ''

    if (!onlyPositionals && arg === '--') {
      onlyPositionals = true
      continue
    }

    if (!onlyPositionals && arg.startsWith('-') && arg !== '-') {
      const long = arg.startsWith('--')
      const body = arg.replace(/^-+/, '')
      if (long ? body === 'help' || body === 'version' : /[hv]/.test(body.split('=')[0] ?? '')) scan.helpOrVersion = true

      // An option takes the next argument as its value unless it has `=value` or the next one starts with '-'.
      const name = long ? body : body.slice(-1)
      const next = args[i + 1]
      if (!body.includes('=') && !body.startsWith('no-') && valueOptions.has(name) && next != null && !next.startsWith('-')) i++
      continue
    }

    if (scan.commandIndex == null) scan.commandIndex = i
    else scan.positionals.push(arg)
  }

  return scan
}
