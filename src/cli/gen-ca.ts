/**
 * `dfnode gen-ca`: creates the CA that signs certificates of intercepted
 * HTTPS hosts (`dfnode proxy --hijack-https`).
 */
import { rename, rm, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { makeDirectory } from '../directories.ts'
import { ExitCode, UsageError } from '../errors.ts'
import { createCa } from '../proxy/certificates.ts'
import { booleanOption, stringOption, type Command } from './command.ts'

export interface GenCaInput {
  /** Directory for ca.crt and ca.key. */
  out: string
  /** Common name of the CA; default "dfnode proxy CA". */
  name?: string
  /** Validity in days; default 3650. */
  days?: number
  /** Replace existing files. */
  force?: boolean
}

/** Accepted --days values, for its error messages. */
const DAYS_ACCEPTED = 'expected a whole number of days from 1 to 36500'

/** Writes `<out>/ca.crt` and `<out>/ca.key` (mode 0600) and returns their paths. */
export async function generateCa (input: GenCaInput): Promise<{ cert: string, key: string }> {
  const days = input.days ?? 3650
  if (!Number.isInteger(days) || days < 1 || days > 36500) throw new UsageError(`invalid --days "${String(input.days)}": ${DAYS_ACCEPTED}`)
  const cert = join(input.out, 'ca.crt')
  const key = join(input.out, 'ca.key')
  for (const path of [cert, key]) {
    const info = await stat(path).catch(() => undefined)
    if (info == null) continue
    if (input.force !== true) throw new UsageError(`${path} already exists: pass --force to replace the CA (clients that trust the old one must then trust the new one)`)
    if (!info.isFile()) throw new UsageError(`${path} exists and is not a regular file: remove it or pass another --out`)
  }

  const pair = await createCa(input.name ?? 'dfnode proxy CA', days)
  try {
    await makeDirectory(input.out)
  } catch (err) {
    throw new UsageError(`cannot create directory ${input.out}: ${(err as Error).message}; pass a writable --out`, { cause: err })
  }
  // Both files are written under temporary names first, so a failure leaves no key without its
  // certificate, and the renames give a replaced key mode 0600 whatever the old file had.
  const temps = { key: `${key}.${process.pid}.tmp`, cert: `${cert}.${process.pid}.tmp` }
  try {
    await writeFile(temps.key, pair.key, { mode: 0o600, flag: 'wx' })
    await writeFile(temps.cert, pair.cert, { mode: 0o644, flag: 'wx' })
    await rename(temps.key, key)
    await rename(temps.cert, cert)
  } catch (err) {
    await Promise.all([rm(temps.key, { force: true }), rm(temps.cert, { force: true })])
    throw new UsageError(`cannot write ${key} and ${cert}: ${(err as Error).message}; pass a writable --out`, { cause: err })
  }
  return { cert, key }
}

export const genCaCommand: Command = {
  name: 'gen-ca',
  description: [
    'Create a CA certificate and key (ECDSA P-256) for HTTPS interception by the proxy; needs the openssl command.',
    'Writes DIR/ca.crt and DIR/ca.key (mode 0600) and prints both paths. Clients must trust ca.crt.'
  ],
  options: [
    { name: 'out', type: 'string', description: 'Directory to write ca.crt and ca.key to (required)' },
    { name: 'name', type: 'string', description: 'Common name of the CA certificate (default: dfnode proxy CA)' },
    { name: 'days', type: 'string', description: 'Validity of the CA certificate in days, from 1 to 36500 (default: 3650)' },
    { name: 'force', type: 'boolean', description: 'Replace an existing ca.crt and ca.key (default: off)' }
  ],
  examples: ['gen-ca --out /etc/dfnode/ca'],
  run: async ({ options, io }) => {
    const out = stringOption(options, 'out')
    if (out == null) throw new UsageError('missing --out DIR: name the directory for ca.crt and ca.key')
    const name = stringOption(options, 'name')
    const days = stringOption(options, 'days')
    if (days != null && !/^[0-9]+$/.test(days)) throw new UsageError(`invalid --days "${days}": ${DAYS_ACCEPTED}`)
    const paths = await generateCa({
      out: resolve(io.cwd, out),
      ...(name != null ? { name } : {}),
      ...(days != null ? { days: Number(days) } : {}),
      force: booleanOption(options, 'force') === true
    })
    io.stdout.write(`${paths.cert}\n${paths.key}\n`)
    return ExitCode.ok
  }
}
