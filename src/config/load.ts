/**
 * Loading of the configuration: defaults, then the config file, then DFNODE_*
 * environment variables, then command-line flags, each later layer replacing
 * the keys it sets. Every value is validated as it is read.
 */
import { readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import { DEFAULT_PIECE_SIZE } from '../content/pieces.ts'
import { ConfigError } from '../errors.ts'
import { parseDragonflyConf } from './dragonfly.ts'
import { CONFIG_ENV, CONFIG_KEYS, DEFAULT_CONFIG_PATH, DRAGONFLY_CONF_PATH, KEY_SOURCES, defaultConfig, type Config } from './schema.ts'
import { formatSize } from './units.ts'
import { describeSetting, parseValue, type Source } from './values.ts'

/** A flag's value as the command line gives it: text, repeated text, or a switch. */
export type FlagValue = string | string[] | boolean

/** Flag values by config key; sizes and durations stay text and are parsed like environment values. */
export type ConfigFlags = { [K in keyof Config]?: FlagValue }

/** Environment variables by name. */
export type Environment = Readonly<Record<string, string | undefined>>

export interface LoadOptions {
  /** Process role; a supernode listens on TCP port 8002 by default, any other role on a port the system picks. */
  role: string
  /** Config file named on the command line (--config); it must exist. */
  configPath?: string
  /** Flag values, the last layer. */
  flags?: ConfigFlags
  /** Environment to read DFNODE_* variables from; default process.env. */
  env?: Environment
  /** Config file read, if it exists, when neither configPath nor DFNODE_CONFIG is set; default /etc/dfnode/config.yaml. */
  defaultConfigPath?: string
  /** Classic Dragonfly client file read for supernodes when no layer sets them; default /etc/dragonfly.conf. */
  dragonflyConfPath?: string
  /** Home directory for the default data dir and for `~` in paths; default os.homedir(). */
  home?: string
  /** Directory that relative paths from flags and the environment resolve against; default process.cwd(). */
  cwd?: string
}

/** Loads and validates the configuration; throws ConfigError naming the key, value and source of the first invalid value. */
export async function loadConfig (options: LoadOptions): Promise<Config> {
  const env = options.env ?? process.env
  const home = options.home ?? homedir()
  const cwd = options.cwd ?? process.cwd()
  const config: Config = defaultConfig(options.role, home)
  const sources = new Map<keyof Config, Source>()

  const apply = (key: keyof Config, raw: unknown, source: Source, baseDir: string): void => {
    // The generic parser returns the type of `key`, which TypeScript cannot carry through the assignment.
    (config as unknown as Record<keyof Config, unknown>)[key] = parseValue(key, raw, { source, baseDir, home })
    sources.set(key, source)
  }

  // 1. Config file; relative paths in it resolve against its directory.
  const file = await readConfigFile(options, env, cwd)
  if (file != null) {
    const source: Source = { kind: 'file', path: file.path }
    for (const key of CONFIG_KEYS) {
      if (Object.hasOwn(file.values, key)) apply(key, file.values[key], source, dirname(file.path))
    }
  }

  // 2. Environment; an empty variable counts as unset.
  checkEnvironmentNames(env)
  for (const key of CONFIG_KEYS) {
    const name = KEY_SOURCES[key].env
    const value = env[name]
    if (value != null && value.trim() !== '') apply(key, value, { kind: 'env', name }, cwd)
  }

  // 3. Flags.
  for (const key of CONFIG_KEYS) {
    const value = options.flags?.[key]
    if (value !== undefined) apply(key, value, { kind: 'flag', name: KEY_SOURCES[key].flag }, cwd)
  }

  // 4. Supernodes of the classic Dragonfly client, only when no layer lists any (an empty list counts as set).
  if (!sources.has('supernodes')) {
    config.supernodes = await readDragonflyConf(options.dragonflyConfPath ?? DRAGONFLY_CONF_PATH)
  }

  // 5. Checks across keys.
  const quotaSource = sources.get('storeQuotaBytes')
  const pieceSize = config.pieceSize ?? DEFAULT_PIECE_SIZE
  if (config.storeQuotaBytes < pieceSize && quotaSource != null) {
    throw new ConfigError(`invalid ${describeSetting('storeQuotaBytes', quotaSource, formatSize(config.storeQuotaBytes))}: expected at least pieceSize (${formatSize(pieceSize)}), so that the store can hold a piece`)
  }

  return config
}

interface ConfigFile {
  path: string
  values: Record<string, unknown>
}

/** Finds, reads and parses the config file; undefined when none is named and the default one does not exist. */
async function readConfigFile (options: LoadOptions, env: Environment, cwd: string): Promise<ConfigFile | undefined> {
  // 1. Choose the file: --config, then DFNODE_CONFIG (both must exist), then the default path if present.
  let path: string
  let namedBy: string | undefined
  if (options.configPath != null && options.configPath !== '') {
    path = resolve(cwd, options.configPath)
    namedBy = '--config'
  } else if (env[CONFIG_ENV] != null && env[CONFIG_ENV].trim() !== '') {
    path = resolve(cwd, env[CONFIG_ENV])
    namedBy = CONFIG_ENV
  } else {
    path = options.defaultConfigPath ?? DEFAULT_CONFIG_PATH
  }

  // 2. Read it.
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if (namedBy == null && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    const fix = namedBy != null ? `fix the path given by ${namedBy}` : 'fix or remove the file'
    throw new ConfigError(`cannot read config file ${path}: ${describeReadError(err)}; ${fix}`, { cause: err })
  }

  // 3. Parse it as YAML: a mapping of known keys, or nothing at all.
  const values = parseYamlMapping(text, path)
  for (const key of Object.keys(values)) {
    if (!(CONFIG_KEYS as readonly string[]).includes(key)) {
      const suggestion = suggestKey(key)
      const hint = suggestion != null ? `did you mean ${suggestion}? ` : ''
      throw new ConfigError(`unknown key "${key}" in ${path}: ${hint}expected one of ${CONFIG_KEYS.join(', ')}`)
    }
  }
  return { path, values }
}

function parseYamlMapping (text: string, path: string): Record<string, unknown> {
  const document = parseDocument(text)
  const error = document.errors[0]
  if (error != null) {
    throw new ConfigError(`invalid YAML in ${path}: ${firstLine(error.message)}`, { cause: error })
  }

  let value: unknown
  try {
    value = document.toJS()
  } catch (err) {
    throw new ConfigError(`invalid YAML in ${path}: ${firstLine((err as Error).message)}`, { cause: err })
  }

  if (value == null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`invalid config file ${path}: expected a mapping of keys such as "pieceSize: 4MiB", found ${Array.isArray(value) ? 'a list' : `a ${typeof value}`}`)
  }
  return value as Record<string, unknown>
}

/** Reads the classic Dragonfly client file; [] when it does not exist. */
async function readDragonflyConf (path: string): Promise<string[]> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw new ConfigError(`cannot read Dragonfly client config ${path}: ${describeReadError(err)}; fix or remove the file, or set supernodes in the dfnode config`, { cause: err })
  }
  return parseDragonflyConf(text, path)
}

function describeReadError (err: unknown): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ENOENT': return 'no such file'
    case 'EISDIR': return 'it is a directory'
    case 'EACCES': return 'permission denied'
    default: return (err as Error).message
  }
}

function firstLine (message: string): string {
  return (message.split('\n')[0] ?? message).replace(/:\s*$/, '')
}

/** Returns the known key that `key` most likely misspells, if any. */
function suggestKey (key: string): string | undefined {
  return closestName(key, CONFIG_KEYS)
}

/** Returns the name of `names` that `name` most likely misspells (case, dashes and underscores aside), if any. */
export function closestName (name: string, names: readonly string[]): string | undefined {
  const squash = (text: string): string => text.toLowerCase().replace(/[_-]/g, '')
  const exact = names.find(known => squash(known) === squash(name))
  if (exact != null) return exact

  let best: string | undefined
  let bestDistance = 3
  for (const known of names) {
    const distance = editDistance(squash(known), squash(name))
    if (distance < bestDistance) {
      best = known
      bestDistance = distance
    }
  }
  return best
}

/** DFNODE_* variables that dfnode reads outside the configuration keys. */
const OTHER_ENV_NAMES = [CONFIG_ENV, 'DFNODE_LOG_LEVEL']

/**
 * Rejects a DFNODE_* variable that misspells one dfnode reads, such as DFNODE_SUPERNODE for
 * DFNODE_SUPERNODES, which would otherwise be ignored. Other DFNODE_* names stay allowed.
 */
function checkEnvironmentNames (env: Environment): void {
  const known = [...CONFIG_KEYS.map(key => KEY_SOURCES[key].env), ...OTHER_ENV_NAMES]
  for (const name of Object.keys(env)) {
    if (!name.startsWith('DFNODE_') || known.includes(name)) continue
    const near = known.find(candidate => editDistance(candidate, name) <= 2)
    if (near != null) throw new ConfigError(`unknown environment variable ${name}: did you mean ${near}? Rename or unset it`)
  }
}

/** Levenshtein distance between two strings. */
function editDistance (a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1)
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution))
    }
    previous = current
  }
  return previous[b.length] ?? 0
}
