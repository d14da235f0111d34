import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdir, mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { BUNDLE_PATH, chooseEntry, SOURCE_PATH } from '../src/cli/entry-point.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

describe('launcher entry point', () => {
  let root: string
  const bundle = (): string => pathToFileURL(join(root, BUNDLE_PATH)).href
  const source = (): string => pathToFileURL(join(root, SOURCE_PATH)).href

  /** Sets a file's modification time to `seconds` after 2026-01-01. */
  async function touch (path: string, seconds: number): Promise<void> {
    const time = new Date(Date.UTC(2026, 0, 1) + seconds * 1000)
    await utimes(join(root, path), time, time)
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'dfnode-entry-'))
    await mkdir(join(root, 'src', 'cli'), { recursive: true })
    await mkdir(join(root, 'src', 'swarm'), { recursive: true })
    for (const file of ['package.json', SOURCE_PATH, join('src', 'swarm', 'engine.ts')]) {
      await writeFile(join(root, file), '')
      await touch(file, 0)
    }
  })
  after(async () => { await rm(root, { recursive: true, force: true }) })

  it('runs the sources without a bundle', () => {
    assert.equal(chooseEntry(root), source())
  })

  it('runs a fresh bundle', async () => {
    await mkdir(join(root, 'dist'), { recursive: true })
    await writeFile(join(root, BUNDLE_PATH), '')
    await touch(BUNDLE_PATH, 10)
    assert.equal(chooseEntry(root), bundle())
  })

  it('newer source wins over bundle', async () => {
    await touch(join('src', 'swarm', 'engine.ts'), 20)
    assert.equal(chooseEntry(root), source())
    await touch(join('src', 'swarm', 'engine.ts'), 0)
    await touch('package.json', 20)
    assert.equal(chooseEntry(root), source())
    await touch('package.json', 0)
    assert.equal(chooseEntry(root), bundle())
  })

  // `npm test` builds the bundle first, so the tests that start bin/dfnode run the bundle.
  it('the project bundle is fresh', async () => {
    const built = await stat(join(ROOT, BUNDLE_PATH)).catch(() => undefined)
    assert.ok(built != null, `${BUNDLE_PATH} is missing: run npm run build`)
    assert.equal(chooseEntry(ROOT), pathToFileURL(join(ROOT, BUNDLE_PATH)).href, 'a source file is newer than the bundle: run npm run build')
    const node = join(ROOT, 'node_modules', '.bin', 'node')
    const result = spawnSync(node, [join(ROOT, 'bin', 'dfnode'), '--help'], { encoding: 'utf8' })
    assert.equal(result.status, 0, result.stderr)
    assert.match(result.stdout, /supernode/)
  })
})
