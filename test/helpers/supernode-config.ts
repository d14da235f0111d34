/**
 * Configuration of an in-process test supernode on loopback that may fetch
 * from origins on 127.0.0.1.
 */
import type { Config } from '../../src/config/schema.ts'
import { DEFAULT_QUERY_FILTER } from '../../src/content/url.ts'

const MiB = 1024 * 1024

/** Returns the configuration of a supernode with data dir `dataDir`, 1 MiB pieces and no upload limit, changed by `overrides`. */
export function testSupernodeConfig (dataDir: string, overrides: Partial<Config> = {}): Config {
  return {
    dataDir,
    verbose: false,
    supernodes: [],
    listen: ['/ip4/127.0.0.1/tcp/0'],
    announce: [],
    allowOrigins: ['127.0.0.1'],
    pieceSize: MiB,
    backSource: true,
    filter: [...DEFAULT_QUERY_FILTER],
    timeoutMs: 0,
    seedMs: 0,
    storeQuotaBytes: 1024 * MiB,
    uploadRate: 0,
    dataPort: 0,
    ...overrides
  }
}
