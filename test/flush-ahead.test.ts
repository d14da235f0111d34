/**
 * Early fdatasync calls while a file is filled. Which sync calls a real file gets is not visible
 * from the outside, so these tests pass a stand-in for the file handle that counts them.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import type { FileHandle } from 'node:fs/promises'
import { FlushAhead } from '../src/store/flush-ahead.ts'

/** Returns a file handle that records its sync calls. Each datasync ends when the test calls `finish`, and fails after `failDatasync`. */
function countingFile (): { file: FileHandle, datasyncs: number, syncs: number, failDatasync: boolean, finish: () => void } {
  const waiting: Array<() => void> = []
  const counts = {
    datasyncs: 0,
    syncs: 0,
    failDatasync: false,
    finish: () => { for (const resolve of waiting.splice(0)) resolve() }
  }
  const file = {
    datasync: async () => {
      counts.datasyncs++
      await new Promise<void>(resolve => waiting.push(resolve))
      if (counts.failDatasync) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })
    },
    sync: async () => { counts.syncs++ }
  }
  return Object.assign(counts, { file: file as unknown as FileHandle })
}

describe('flush ahead', () => {
  it('starts a datasync per interval', async () => {
    const handle = countingFile()
    const flush = new FlushAhead(handle.file, 100)
    flush.wrote(60)
    assert.equal(handle.datasyncs, 0)
    flush.wrote(60)
    assert.equal(handle.datasyncs, 1)

    // One runs at a time: bytes written meanwhile wait for the next one.
    flush.wrote(200)
    assert.equal(handle.datasyncs, 1)
    handle.finish()
    await new Promise(resolve => setImmediate(resolve))
    flush.wrote(100)
    assert.equal(handle.datasyncs, 2)
  })

  it('syncs after the running datasync', async () => {
    const handle = countingFile()
    const flush = new FlushAhead(handle.file, 10)
    flush.wrote(10)
    const synced = flush.sync()
    await new Promise(resolve => setImmediate(resolve))
    assert.equal(handle.syncs, 0)
    handle.finish()
    await synced
    assert.equal(handle.syncs, 1)
  })

  it('raises a failed early datasync', async () => {
    // Linux reports a failed write-out to one sync call only, so the final sync may succeed after it.
    const handle = countingFile()
    handle.failDatasync = true
    const flush = new FlushAhead(handle.file, 10)
    flush.wrote(10)
    handle.finish()
    await assert.rejects(flush.sync(), /EIO/)
    assert.equal(handle.syncs, 1)
  })

  it('syncs at the end without early calls', async () => {
    const handle = countingFile()
    const flush = new FlushAhead(handle.file, 1000)
    flush.wrote(10)
    await flush.sync()
    assert.equal(handle.datasyncs, 0)
    assert.equal(handle.syncs, 1)
  })
})
