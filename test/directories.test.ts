/**
 * Creating directories with their parents, on real paths: a temporary folder,
 * a regular file in the way, and /proc, where Node's recursive mkdir did not
 * return.
 */
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { makeDirectory } from '../src/directories.ts'

/** Time limit of each test. Node's recursive mkdir under /proc did not settle at all. */
const CALL_LIMIT_MS = 10_000

describe('makeDirectory', () => {
  let dir = ''
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'dfnode-dirs-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('creates parents, accepts existing directory', { timeout: CALL_LIMIT_MS }, async () => {
    const nested = join(dir, 'a', 'b', 'c')
    await makeDirectory(nested)
    assert.ok((await stat(nested)).isDirectory())
    await makeDirectory(nested)
  })

  it('rejects a file in the path', { timeout: CALL_LIMIT_MS }, async () => {
    const file = join(dir, 'file')
    await writeFile(file, 'not a directory')
    await assert.rejects(makeDirectory(file), { code: 'ENOTDIR' })
    await assert.rejects(makeDirectory(join(file, 'below')), { code: 'ENOTDIR' })
  })

  it('rejects /proc without hanging', { timeout: CALL_LIMIT_MS, skip: !existsSync('/proc/self') && 'no /proc on this system' }, async () => {
    await assert.rejects(makeDirectory('/proc/dfnode-test/logs'), { code: 'ENOENT' })
    await assert.rejects(makeDirectory('/proc/dfnode-test'), { code: 'ENOENT' })
  })
})
