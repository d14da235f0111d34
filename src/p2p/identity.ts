/**
 * Node identity: an ed25519 key kept in the data dir, or a fresh one per process.
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { makeDirectory } from '../directories.ts'
import { ConfigError } from '../errors.ts'

/** File name of the persistent key inside the data dir. */
export const IDENTITY_FILE = 'identity.key'

/** Loads the key from `<dataDir>/identity.key`, creating it (mode 0600) on first use. */
export async function loadIdentity (dataDir: string): Promise<PrivateKey> {
  const path = join(dataDir, IDENTITY_FILE)
  let bytes: Buffer | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new ConfigError(`cannot read identity key ${path}: ${(err as Error).message}`, { cause: err })
    }
  }
  if (bytes != null) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new ConfigError(`identity key ${path} is corrupt: ${(err as Error).message}; remove it to create a new identity`, { cause: err })
    }
  }

  const key = await generateKeyPair('Ed25519')
  await makeDirectory(dataDir)
  const temp = `${path}.tmp-${process.pid}`
  await writeFile(temp, privateKeyToProtobuf(key), { mode: 0o600 })
  await rename(temp, path)
  return key
}

/** Creates a key that lives only as long as the process. */
export async function ephemeralIdentity (): Promise<PrivateKey> {
  return generateKeyPair('Ed25519')
}
