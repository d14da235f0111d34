/**
 * Atomic file writes and the temp files they leave behind. A write goes to
 * `<name>.tmp-<pid>-<random>` in the target's own directory, is fsynced, renamed
 * over the target and the directory is fsynced, so a reader or a restart finds
 * either the old file or the whole new one.
 */
import { randomBytes } from 'node:crypto'
import { open, rename, unlink, type FileHandle } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { StorageError } from '../errors.ts'

/** Marker between a target name and the owner pid in a temp file name. */
const TEMP_MARKER = '.tmp-'

const TEMP_PATTERN = /\.tmp-(\d+)-[0-9a-f]+$/

/**
 * Age after which a temp file counts as abandoned even when its owner pid is running,
 * because one write of a piece (64 MiB at most) takes far less. After a reboot, or in
 * another pid namespace, the pid may belong to an unrelated process.
 */
export const STALE_TEMP_AGE_MS = 60 * 60 * 1000

/** Builds a unique temp path beside `path`. */
export function tempPathOf (path: string): string {
  return `${path}${TEMP_MARKER}${process.pid}-${randomBytes(6).toString('hex')}`
}

/** Tells whether a file name is a temp file of an atomic write. */
export function isTempName (name: string): boolean {
  return name.includes(TEMP_MARKER)
}

/**
 * Tells whether a temp file may be removed: its owner process has exited, its
 * name carries no pid, or it is older than STALE_TEMP_AGE_MS. A temp file of a
 * running process that shares the directory is kept, so its rename still succeeds.
 */
export function isStaleTemp (name: string, mtimeMs: number, now = Date.now()): boolean {
  if (now - mtimeMs > STALE_TEMP_AGE_MS) return true

  const match = TEMP_PATTERN.exec(basename(name))
  if (match?.[1] == null) return true
  return !isProcessRunning(Number(match[1]))
}

/** Tells whether a process with this id exists. Ids that are not positive integers name none. */
export function isProcessRunning (pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export interface AtomicWriteOptions {
  /**
   * Fsync the file and its directory, so the write survives power loss. Default true.
   * Callers that verify what they read back (the piece store re-hashes every piece) turn it off,
   * because a torn file after a power loss is then caught and dropped on read.
   */
  durable?: boolean
}

/**
 * Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
 * Removes the temp file when a step fails and rethrows the error.
 */
export async function writeFileAtomic (path: string, bytes: Uint8Array, options: AtomicWriteOptions = {}): Promise<void> {
  const durable = options.durable ?? true
  const tempPath = tempPathOf(path)

  try {
    const file = await open(tempPath, 'wx')
    try {
      await file.writeFile(bytes)
      if (durable) await file.sync()
    } finally {
      await file.close()
    }
    await rename(tempPath, path)
  } catch (err) {
    await unlink(tempPath).catch(() => {})
    throw err
  }

  if (durable) await syncDirectory(dirname(path))
}

/**
 * Writes all of `bytes` to `file` at `position`, naming `path` in the error. At a file size
 * limit or a full quota, one write call may write fewer bytes than requested without an error.
 * So the rest goes in further calls, and the call that cannot write raises StorageError.
 */
export async function writeAll (file: FileHandle, bytes: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0
  try {
    while (done < bytes.byteLength) {
      const { bytesWritten } = await file.write(bytes, done, bytes.byteLength - done, position + done)
      if (bytesWritten === 0) throw new Error('the system wrote 0 bytes')
      done += bytesWritten
    }
  } catch (err) {
    throw new StorageError(`writing ${path} at byte ${position + done} failed (${(err as Error).message}): free disk space or raise the file size limit, then run again`, { cause: err })
  }
}

/** Fsyncs a directory so a rename or unlink in it survives a crash. */
export async function syncDirectory (dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Tells whether an error is a missing-file error. */
export function isNotFound (err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'
}
