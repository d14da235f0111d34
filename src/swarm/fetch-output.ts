/**
 * Output of `dfnode fetch`. The content goes to a temporary file that takes
 * the output's name once it is verified. A rename would replace a character
 * device or a named pipe, such as /dev/null, so for those the temporary file
 * is in the data dir and the verified bytes are copied into the device. A
 * symbolic link is followed, so the link stays.
 */
import { randomBytes } from 'node:crypto'
import { constants, createReadStream, createWriteStream, openSync } from 'node:fs'
import { lstat, open, readdir, realpath, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { Socket } from 'node:net'
import { basename, dirname, join, resolve } from 'node:path'
import type { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { makeDirectory } from '../directories.ts'
import { UsageError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { isProcessRunning, syncDirectory } from '../store/atomic-file.ts'

/** Destination of a fetch's verified content, and the temporary file it is written to first. */
export interface OutputPlan {
  /** Path that receives the content: the output, or the file a symbolic link there points to. */
  target: string
  /** Kind of target. A character device or a named pipe receives a copy instead of a rename. */
  kind: 'file' | 'device' | 'pipe'
  /** Path of the temporary file. */
  temp: string
}

/** Folder under the data dir for the temporary files of outputs that are devices or pipes. */
const DEVICE_TEMP_DIR = 'partial'

/** Interval between attempts to open a named pipe that no reader has open yet, in ms. */
const PIPE_RETRY_MS = 100

/**
 * Checks the output path given with -o and returns where to write. Raises UsageError for a
 * directory, a missing folder, a dangling symbolic link, and file types that take no content.
 */
export async function planOutput (output: string, dataDir: string): Promise<OutputPlan> {
  const target = await followLink(resolve(output))
  let info
  try {
    info = await stat(target)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (info?.isDirectory() === true) throw new UsageError(`output path ${output} is a directory: name a file with -o`)
  if (info != null && (info.isCharacterDevice() || info.isFIFO())) {
    const folder = join(dataDir, DEVICE_TEMP_DIR)
    try {
      await makeDirectory(folder)
    } catch (err) {
      throw new UsageError(`cannot create directory ${folder} for the download into ${output}: ${(err as Error).message}; pass a writable --data-dir`, { cause: err })
    }
    return { target, kind: info.isFIFO() ? 'pipe' : 'device', temp: tempPathIn(folder, target) }
  }
  if (info != null && !info.isFile()) throw new UsageError(`output path ${output} is neither a regular file nor a character device or pipe: name a file with -o, or write to standard output with -o -`)
  await checkFolder(dirname(target))
  return { target, kind: 'file', temp: tempPathIn(dirname(target), target) }
}

/** Returns the path a symbolic link points to, or `path` itself when it is not a link. */
async function followLink (path: string): Promise<string> {
  try {
    if (!(await lstat(path)).isSymbolicLink()) return path
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return path
    throw err
  }
  try {
    return await realpath(path)
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException
    // /dev/stdout of a process writing into a shell pipe links to a name such as pipe:[1234], which
    // realpath cannot resolve, while opening the link itself reaches the pipe.
    if (code === 'ENOENT' && await isPipeOrDevice(path)) return path
    if (code === 'ENOENT') throw new UsageError(`output path ${path} is a symbolic link to a missing file: create the file it points to, or name another file with -o`, { cause: err })
    if (code === 'ELOOP') throw new UsageError(`output path ${path} is a loop of symbolic links: name another file with -o`, { cause: err })
    throw err
  }
}

/** Tells whether `path`, links followed, is a pipe, socket or character device. */
async function isPipeOrDevice (path: string): Promise<boolean> {
  try {
    const info = await stat(path)
    return info.isFIFO() || info.isSocket() || info.isCharacterDevice()
  } catch {
    return false
  }
}

/** Raises UsageError unless `folder` is an existing directory. */
async function checkFolder (folder: string): Promise<void> {
  try {
    const info = await stat(folder)
    if (!info.isDirectory()) throw new UsageError(`output folder ${folder} is not a directory`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`output folder ${folder} does not exist: create it first`)
    throw err
  }
}

/** Returns a temporary file name in `folder` for `target`, with this process's id for removeStaleTemps. */
function tempPathIn (folder: string, target: string): string {
  return join(folder, `.${basename(target)}.dfnode-${process.pid}-${randomBytes(4).toString('hex')}.part`)
}

/** Creates the temporary file of a plan. Raises UsageError when its folder does not accept a new file. */
export async function openTemp (plan: OutputPlan): Promise<FileHandle> {
  try {
    return await open(plan.temp, 'wx', 0o644)
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOTDIR') {
      const folder = dirname(plan.temp)
      if (plan.kind === 'file') throw new UsageError(`cannot create a file in output folder ${folder} (${code}): pass -o with a writable folder`, { cause: err })
      throw new UsageError(`cannot create a file in data dir folder ${folder} (${code}): pass a writable --data-dir`, { cause: err })
    }
    throw err
  }
}

/**
 * Moves the verified temporary file to the target: a rename, or a copy into a device or pipe. A
 * pipe is written once a reader opens it, and until then the signal (--timeout, Ctrl-C) ends the wait.
 */
export async function deliver (plan: OutputPlan, signal?: AbortSignal): Promise<void> {
  if (plan.kind === 'file') {
    await rename(plan.temp, plan.target)
    // The content record names the output, so the rename should outlast a power loss as well. A folder
    // that this user cannot open for reading cannot be synced, and the output is in place anyway.
    await syncDirectory(dirname(plan.target)).catch(() => {})
    return
  }
  const output = plan.kind === 'pipe' ? await openPipe(plan.target, signal) : createWriteStream(plan.target, { flags: 'w' })
  await pipeline(createReadStream(plan.temp), output, ...(signal != null ? [{ signal }] : []))
}

/** Raised when the signal ends the wait for a reader of the output pipe. */
export class PipeReaderWaitError extends Error {
  override name = 'PipeReaderWaitError'
}

/**
 * Opens a named pipe for writing. A blocking open would wait in libuv's thread pool until a
 * reader comes, where no signal reaches it and the process cannot exit. With O_NONBLOCK the open
 * fails at once while no reader has the pipe, so it is tried again every PIPE_RETRY_MS, and the
 * socket writes to the pipe from the event loop.
 */
async function openPipe (path: string, signal?: AbortSignal): Promise<Writable> {
  while (true) {
    try {
      // Opened without a FileHandle, because the socket takes over the descriptor and closes it.
      const fd = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)
      return new Socket({ fd, readable: false, writable: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err
    }
    try {
      await sleep(PIPE_RETRY_MS, undefined, signal != null ? { signal } : {})
    } catch (err) {
      throw new PipeReaderWaitError(`no process opened ${path} for reading`, { cause: err })
    }
  }
}

/**
 * Removes temporary files of earlier fetches to the same target whose process is gone, e.g.
 * one killed with SIGKILL. A file whose process id runs again is left alone.
 */
export async function removeStaleTemps (plan: OutputPlan, logger: Logger): Promise<void> {
  const folder = dirname(plan.temp)
  const prefix = `.${basename(plan.target)}.dfnode-`
  const names = await readdir(folder).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.part')) continue
    const pid = Number(name.slice(prefix.length).split('-')[0])
    if (!Number.isSafeInteger(pid) || pid <= 0 || isProcessRunning(pid)) continue
    await rm(join(folder, name), { force: true })
    logger.info({ file: join(folder, name) }, 'removed the temporary file of an earlier fetch that did not finish')
  }
}
