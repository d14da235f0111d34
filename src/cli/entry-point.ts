/**
 * Chooses the module that bin/dfnode runs: the bundle that `npm run build` writes to
 * dist/dfnode.mjs, or the TypeScript sources, whose 2,700 imports cost about 0.25 s more CPU per
 * start (docs/architecture.md, "Start-up"). The bundle runs only while it is at least as new as
 * package.json and every file under src/, so an edited source is never shadowed by an old bundle.
 */
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

/** Path of the bundle, relative to the project root. */
export const BUNDLE_PATH = join('dist', 'dfnode.mjs')

/** Path of the CLI's source module, relative to the project root. */
export const SOURCE_PATH = join('src', 'cli', 'main.ts')

/** Returns the file URL of the module to run: the bundle when it is fresh, else the sources. */
export function chooseEntry (root: string): string {
  const bundle = join(root, BUNDLE_PATH)
  const source = join(root, SOURCE_PATH)
  const bundleTime = modifiedAt(bundle)
  if (bundleTime == null) return pathToFileURL(source).href
  return pathToFileURL(newestSourceTime(root) <= bundleTime ? bundle : source).href
}

/** Returns the newest modification time of package.json and the files under src/, in ms. */
function newestSourceTime (root: string): number {
  let newest = modifiedAt(join(root, 'package.json')) ?? 0
  const dir = join(root, 'src')
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    newest = Math.max(newest, modifiedAt(join(entry.parentPath, entry.name)) ?? 0)
  }
  return newest
}

function modifiedAt (path: string): number | undefined {
  return statSync(path, { throwIfNoEntry: false })?.mtimeMs
}
