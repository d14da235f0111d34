/**
 * Chooses the module that bin/dfnode runs: the bundle that `npm run build`
 * writes to dist/dfnode.mjs, or the TypeScript sources. Loading the sources
 * resolves about 2,700 imports of libp2p and its dependencies one file at a
 * time, which costs about 0.25 s of CPU more at every start than the single
 * bundle (docs/architecture.md, "Start-up").
 *
 * The bundle is used only while it is at least as new as every file under
 * src/ and package.json, so an edited source is never shadowed by an old
 * bundle. This module imports nothing but node:fs and node:path.
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

/** Newest modification time of package.json and the files under src/, in ms. */
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
