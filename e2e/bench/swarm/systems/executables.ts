/** Lookup of the external programs a system needs. */
import { access, constants } from 'node:fs/promises'
import { delimiter, join } from 'node:path'

/** Returns the first of `names` that is not an executable on PATH, as a message, or undefined when all are. */
export async function missingExecutable (names: readonly string[]): Promise<string | undefined> {
  const directories = (process.env.PATH ?? '').split(delimiter).filter((entry) => entry !== '')
  for (const name of names) {
    let found = false
    for (const directory of directories) {
      try {
        await access(join(directory, name), constants.X_OK)
        found = true
        break
      } catch {
        // Not in this directory.
      }
    }
    if (!found) return `${name} is not installed (not found on PATH); install it, e.g. with apt-get install`
  }
  return undefined
}
