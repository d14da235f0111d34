/**
 * `dfnode containerd-config`: writes `<dir>/<registry>/hosts.toml` so that
 * containerd pulls the registry through the proxy.
 */
import { constants } from 'node:fs'
import { copyFile, readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { makeDirectory } from '../directories.ts'
import { isNotFound, writeFileAtomic } from '../store/atomic-file.ts'
import { ExitCode, UsageError } from '../errors.ts'
import { checkRegistryName, renderContainerdHosts } from '../proxy/containerd-hosts.ts'
import { booleanOption, stringOption, type Command } from './command.ts'

export interface ContainerdConfigInput {
  registry: string
  /** containerd hosts directory (its `config_path`); default /etc/containerd/certs.d. */
  dir?: string
  proxy?: string
  server?: string
  /** Replace a hosts.toml with other settings, keeping it under a backup name. */
  force?: boolean
}

export interface ContainerdConfigResult {
  /** Path of the hosts.toml written. */
  path: string
  /** Path the replaced hosts.toml was copied to, when `force` replaced one. */
  backup?: string
}

/** Highest number tried for a backup name, hosts.toml.bak.N, before giving up. */
const MAX_BACKUPS = 99

/**
 * Writes hosts.toml atomically and returns its path and any backup. A hosts.toml with other
 * settings is kept unless `force` is set. Then it is first copied to hosts.toml.bak, or to the
 * first free hosts.toml.bak.N, so no earlier backup is overwritten.
 */
export async function writeContainerdConfig (input: ContainerdConfigInput): Promise<ContainerdConfigResult> {
  const registry = checkRegistryName(input.registry)
  const content = renderContainerdHosts({
    registry,
    ...(input.server != null ? { server: input.server } : {}),
    ...(input.proxy != null ? { proxy: input.proxy } : {})
  })

  const dir = join(input.dir ?? '/etc/containerd/certs.d', registry)
  try {
    await makeDirectory(dir)
  } catch (err) {
    throw new UsageError(`cannot create directory ${dir}: ${(err as Error).message}; pass a writable --dir`, { cause: err })
  }
  const path = join(dir, 'hosts.toml')
  const existing = await readExisting(path)
  if (existing === content) return { path }
  let backup: string | undefined
  if (existing != null) {
    if (input.force !== true) throw new UsageError(`${path} already exists with other settings: pass --force to replace it (the old file is then kept as hosts.toml.bak, or hosts.toml.bak.N when that exists)`)
    backup = await backUp(path)
  }
  await writeFileAtomic(path, Buffer.from(content))
  return { path, ...(backup != null ? { backup } : {}) }
}

/** Copies `path` to the first free name of path.bak, path.bak.1 … and returns that name. */
async function backUp (path: string): Promise<string> {
  for (let n = 0; n <= MAX_BACKUPS; n++) {
    const backup = n === 0 ? `${path}.bak` : `${path}.bak.${n}`
    try {
      await copyFile(path, backup, constants.COPYFILE_EXCL)
      return backup
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
      throw new UsageError(`cannot keep ${path} as ${backup}: ${(err as Error).message}; pass another --dir, or move ${path} away first`, { cause: err })
    }
  }
  throw new UsageError(`cannot keep ${path}: ${path}.bak to ${path}.bak.${MAX_BACKUPS} all exist; remove old backups first`)
}

/** Returns the text of the file at `path`, or undefined when there is none. */
async function readExisting (path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if (isNotFound(err)) return undefined
    throw new UsageError(`cannot read ${path}: ${(err as Error).message}; make it a readable file or pass another --dir`, { cause: err })
  }
}

export const containerdConfigCommand: Command = {
  name: 'containerd-config',
  description: [
    'Write containerd hosts.toml that pulls a registry through the dfnode proxy and falls back to the registry.',
    'Prints the path written. containerd reads it when its config_path (CRI) or --hosts-dir (ctr) names the directory.'
  ],
  options: [
    { name: 'registry', type: 'string', description: 'Registry host as image references name it, such as docker.io, registry.example.com:5000 or [fd00::1]:5000 (required)' },
    { name: 'dir', type: 'string', description: 'containerd hosts directory (default: /etc/containerd/certs.d)' },
    { name: 'proxy', type: 'string', description: 'URL of the dfnode proxy (default: http://127.0.0.1:65001)' },
    { name: 'server', type: 'string', description: 'Registry URL to fall back to (default: https://<registry>, https://registry-1.docker.io for docker.io)' },
    { name: 'force', type: 'boolean', description: 'Replace a hosts.toml with other settings, keeping the old one as hosts.toml.bak, or hosts.toml.bak.N when that exists (default: off)' }
  ],
  examples: [
    'containerd-config --registry docker.io',
    'containerd-config --registry registry.example.com:5000 --dir /etc/containerd/certs.d --proxy http://127.0.0.1:65001'
  ],
  run: async ({ options, io }) => {
    const registry = stringOption(options, 'registry')
    if (registry == null) throw new UsageError('missing --registry HOST: name the registry to mirror, such as docker.io')
    const dir = stringOption(options, 'dir')
    const proxy = stringOption(options, 'proxy')
    const server = stringOption(options, 'server')
    const { path, backup } = await writeContainerdConfig({
      registry,
      ...(dir != null ? { dir: resolve(io.cwd, dir) } : {}),
      ...(proxy != null ? { proxy } : {}),
      ...(server != null ? { server } : {}),
      force: booleanOption(options, 'force') === true
    })
    if (backup != null) io.stderr.write(`dfnode: kept the replaced ${path} as ${backup}\n`)
    io.stdout.write(`${path}\n`)
    return ExitCode.ok
  }
}
