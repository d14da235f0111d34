/**
 * Creating a directory and its missing parents. In Node 24.21, `mkdir('/proc/x', { recursive: true })`
 * did not return within 5 s, although a plain mkdir of that path fails at once with ENOENT.
 * makeDirectory creates each missing level once and raises the first error.
 */
import { mkdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'

/** Creates `path` and its missing parents, or raises the first error. Resolves once `path` is a directory. */
export async function makeDirectory (path: string): Promise<void> {
  for (const dir of await missingLevels(path)) {
    try {
      await mkdir(dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !(await stat(dir)).isDirectory()) throw err
    }
  }
}

/** Returns the levels of `path` that do not exist yet, the outermost first. */
async function missingLevels (path: string): Promise<string[]> {
  const missing: string[] = []
  for (let dir = resolve(path); ; dir = dirname(dir)) {
    try {
      if (!(await stat(dir)).isDirectory()) throw notDirectory(dir)
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      missing.unshift(dir)
      if (dirname(dir) === dir) break
    }
  }
  return missing
}

/** Returns the error that fs raises for a path that is not a directory. */
function notDirectory (dir: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOTDIR: not a directory, ${dir}`), { code: 'ENOTDIR', path: dir })
}
