/**
 * The configuration of a dfnode process, its defaults, and where each key
 * may be set besides the config file: an environment variable and a flag.
 */
import { homedir } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_QUERY_FILTER } from '../content/url.ts'

export interface Config {
  /** Directory for the piece store, identity key and logs; default ~/.dfnode. */
  dataDir: string
  /** Log debug lines too; default false. */
  verbose: boolean
  /** libp2p multiaddrs of the supernodes, a /p2p/<peer id> part optional; default [] (then /etc/dragonfly.conf is read). */
  supernodes: string[]
  /** Multiaddrs the node listens on; default /ip4/0.0.0.0/tcp/8002 for a supernode, /ip4/0.0.0.0/tcp/0 otherwise. */
  listen: string[]
  /** Extra multiaddrs to advertise to other peers; default []. */
  announce: string[]
  /** Hosts ("host" or "host:port", "*" for any) a supernode may fetch from; default [] (none). */
  allowOrigins: string[]
  /**
   * Piece size in bytes for new contents, a power of two from 64 KiB to 64 MiB. Default
   * undefined: 4 MiB, and 1 or 2 MiB for contents under 64 MiB (see choosePieceSize).
   */
  pieceSize: number | undefined
  /** Fetch from the origin when no supernode or peer can supply the content; default true. */
  backSource: boolean
  /** Query parameters dropped from a URL before it is keyed; default DEFAULT_QUERY_FILTER. */
  filter: string[]
  /** Time limit of a fetch in milliseconds, 0 for none; default 0. */
  timeoutMs: number
  /** Milliseconds `fetch` keeps serving pieces to other peers after it finishes; default 0. */
  seedMs: number
  /** Size limit of the piece store in bytes; default 20 GiB. */
  storeQuotaBytes: number
  /** Upload limit for pieces sent to other peers, in bytes per second, 0 for none; default 0. */
  uploadRate: number
  /** TCP port of direct links (piece transfers over TLS beside libp2p), 0 for one the system picks, false for none; default 0. */
  dataPort: number | false
}

/** Config file read when neither --config nor DFNODE_CONFIG names one, if it exists. */
export const DEFAULT_CONFIG_PATH = '/etc/dfnode/config.yaml'

/** Config file of the classic Dragonfly client, read for supernodes when none are configured. */
export const DRAGONFLY_CONF_PATH = '/etc/dragonfly.conf'

/** Environment variable naming the config file. */
export const CONFIG_ENV = 'DFNODE_CONFIG'

/** TCP port of a supernode when none is given. */
export const SUPERNODE_PORT = 8002

/** Maximum delay of Node's timers: 2^31 - 1 ms, about 24.8 days. Node fires a longer timeout after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Keys of Config in the order they are documented. */
export const CONFIG_KEYS = [
  'dataDir',
  'verbose',
  'supernodes',
  'listen',
  'announce',
  'allowOrigins',
  'pieceSize',
  'backSource',
  'filter',
  'timeoutMs',
  'seedMs',
  'storeQuotaBytes',
  'uploadRate',
  'dataPort'
] as const satisfies ReadonlyArray<keyof Config>

/** Places besides the config file that set a key. */
export interface KeySources {
  /** Environment variable. */
  env: string
  /** Command-line flag that sets it, in the commands that take it. */
  flag: string
}

export const KEY_SOURCES: Readonly<Record<keyof Config, KeySources>> = {
  dataDir: { env: 'DFNODE_DATA_DIR', flag: '--data-dir' },
  verbose: { env: 'DFNODE_VERBOSE', flag: '--verbose' },
  supernodes: { env: 'DFNODE_SUPERNODES', flag: '--supernode' },
  listen: { env: 'DFNODE_LISTEN', flag: '--listen' },
  announce: { env: 'DFNODE_ANNOUNCE', flag: '--announce' },
  allowOrigins: { env: 'DFNODE_ALLOW_ORIGINS', flag: '--allow-origin' },
  pieceSize: { env: 'DFNODE_PIECE_SIZE', flag: '--piece-size' },
  backSource: { env: 'DFNODE_BACK_SOURCE', flag: '--no-back-source' },
  filter: { env: 'DFNODE_FILTER', flag: '--filter' },
  timeoutMs: { env: 'DFNODE_TIMEOUT', flag: '--timeout' },
  seedMs: { env: 'DFNODE_SEED_TIME', flag: '--seed-time' },
  storeQuotaBytes: { env: 'DFNODE_STORE_QUOTA', flag: '--store-quota' },
  uploadRate: { env: 'DFNODE_UPLOAD_RATE', flag: '--upload-rate' },
  dataPort: { env: 'DFNODE_DATA_PORT', flag: '--data-port' }
}

/** Default listen multiaddrs of a supernode: a fixed port other nodes can be configured with. */
export const SUPERNODE_LISTEN = [`/ip4/0.0.0.0/tcp/${SUPERNODE_PORT}`] as const

/** Default listen multiaddrs of any other node: a port the system picks. */
export const NODE_LISTEN = ['/ip4/0.0.0.0/tcp/0'] as const

/** Default size limit of the piece store: 20 GiB. */
export const DEFAULT_STORE_QUOTA = 20 * 1024 ** 3

/** Returns the defaults for a process `role`; only a supernode differs, in its listen port. */
export function defaultConfig (role: string, home: string = homedir()): Config {
  return {
    dataDir: join(home, '.dfnode'),
    verbose: false,
    supernodes: [],
    listen: role === 'supernode' ? [...SUPERNODE_LISTEN] : [...NODE_LISTEN],
    announce: [],
    allowOrigins: [],
    pieceSize: undefined,
    backSource: true,
    filter: [...DEFAULT_QUERY_FILTER],
    timeoutMs: 0,
    seedMs: 0,
    storeQuotaBytes: DEFAULT_STORE_QUOTA,
    uploadRate: 0,
    dataPort: 0
  }
}
