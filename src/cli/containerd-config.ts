/**
 * `dfnode containerd-config`: writes `<dir>/<registry>/hosts.toml` so that
 * containerd pulls the registry through the proxy.
 */
import { rename, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { makeDirectory } from '../directories.ts'
import { ExitCode, UsageError } from '../errors.ts'
import { checkRegistryName, renderContainerdHosts } from '../proxy/containerd-hosts.ts'
import { stringOption, type Command } from './command.ts'

export interface ContainerdConfigInput {
  registry: string
  /** containerd hosts directory (its `config_path`); default /etc/containerd/certs.d. */
  dir?: string
  proxy?: string
  server?: string
}

/** Writes hosts.toml atomically and returns its path. */
export async function writeContainerdConfig (input: ContainerdConfigInput): Promise<string> {
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
  const temp = `${path}.${process.pid}.tmp`
  await writeFile(temp, content, { mode: 0o644 })
  await rename(temp, path)
  return path
}

export const containerdConfigCommand: Command = {
  name: 'containerd-config',
  description: [
    'Write containerd hosts.toml that pulls a registry through the dfnode proxy and falls back to the registry.',
    'Prints the path written. containerd reads it when its config_path (CRI) or --hosts-dir (ctr) names the directory.'
  ],
  options: [
    { name: 'registry', type: 'string', description: 'Registry host as image references name it, such as docker.io or registry.example.com:5000 (required)' },
    { name: 'dir', type: 'string', description: 'containerd hosts directory (default: /etc/containerd/certs.d)' },
    { name: 'proxy', type: 'string', description: 'URL of the dfnode proxy (default: http://127.0.0.1:65001)' },
    { name: 'server', type: 'string', description: 'Registry URL to fall back to (default: https://<registry>, https://registry-1.docker.io for docker.io)' }
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
    const path = await writeContainerdConfig({
      registry,
      ...(dir != null ? { dir: resolve(io.cwd, dir) } : {}),
      ...(proxy != null ? { proxy } : {}),
      ...(server != null ? { server } : {})
    })
    io.stdout.write(`${path}\n`)
    return ExitCode.ok
  }
}
