/**
 * Certificates for HTTPS interception: a CA pair made by `dfnode gen-ca`, and
 * a leaf certificate per intercepted host, signed by that CA and cached.
 *
 * Node 24's crypto module parses certificates (X509Certificate) but cannot
 * create them, so certificates are made by the `openssl` command-line tool
 * (OpenSSL 1.1.1 or later), with keys made by node:crypto (ECDSA P-256).
 */
import { execFile } from 'node:child_process'
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSecureContext, type SecureContext } from 'node:tls'
import { promisify } from 'node:util'
import { ConfigError, ExternalToolError } from '../errors.ts'

const run = promisify(execFile)

/** Days a leaf certificate is valid. */
const LEAF_DAYS = 90
/** Age after which a cached leaf certificate is replaced, in milliseconds. */
const LEAF_RENEW_MS = 30 * 24 * 3600 * 1000

export interface CertificatePair {
  /** PEM certificate. */
  cert: string
  /** PEM private key (PKCS#8). */
  key: string
}

/** Creates a self-signed CA certificate and key for signing intercepted hosts' certificates. */
export async function createCa (commonName = 'dfnode proxy CA', days = 3650): Promise<CertificatePair> {
  const key = newKey()
  const config = [
    '[req]',
    'distinguished_name = dn',
    'x509_extensions = ca',
    'prompt = no',
    '[dn]',
    `CN = ${commonName.replace(/[\n\\]/g, ' ')}`,
    '[ca]',
    'basicConstraints = critical, CA:TRUE, pathlen:0',
    'keyUsage = critical, keyCertSign, cRLSign',
    'subjectKeyIdentifier = hash'
  ].join('\n')
  const cert = await withTempFiles({ 'ca.key': key, 'openssl.cnf': config }, async dir => {
    await openssl(['req', '-x509', '-new', '-sha256', '-key', join(dir, 'ca.key'), '-config', join(dir, 'openssl.cnf'), '-days', String(days), '-set_serial', serial(), '-out', join(dir, 'ca.crt')])
    return await readFile(join(dir, 'ca.crt'), 'utf8')
  })
  return { cert, key }
}

/** Reads and checks a CA pair: the certificate must be a CA and match the key. */
export async function loadCa (certPath: string, keyPath: string): Promise<CertificatePair> {
  let cert: string
  let key: string
  try {
    cert = await readFile(certPath, 'utf8')
    key = await readFile(keyPath, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read the interception CA (${certPath}, ${keyPath}): ${(err as Error).message}; create one with \`dfnode gen-ca --out DIR\``, { cause: err })
  }
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(cert)
  } catch (err) {
    throw new ConfigError(`invalid CA certificate ${certPath}: ${(err as Error).message}`, { cause: err })
  }
  if (!x509.ca) throw new ConfigError(`certificate ${certPath} is not a CA certificate (basicConstraints CA:TRUE missing): create one with \`dfnode gen-ca --out DIR\``)
  if (!x509.checkPrivateKey(createPrivateKey(key))) throw new ConfigError(`key ${keyPath} does not belong to certificate ${certPath}`)
  return { cert, key }
}

/** Issues and caches per-host TLS contexts signed by a CA. */
export class LeafCertificates {
  private readonly ca: CertificatePair
  private readonly cache = new Map<string, { issuedAt: number, context: Promise<SecureContext> }>()

  constructor (ca: CertificatePair) {
    this.ca = ca
  }

  /** Returns the TLS context for `hostname` (a DNS name or IP address), issuing its certificate on first use. */
  async contextFor (hostname: string): Promise<SecureContext> {
    const name = hostname.toLowerCase()
    const cached = this.cache.get(name)
    if (cached != null && Date.now() - cached.issuedAt < LEAF_RENEW_MS) return await cached.context

    const context = this.issue(name).then(pair => createSecureContext({ cert: `${pair.cert}${this.ca.cert}`, key: pair.key }))
    this.cache.set(name, { issuedAt: Date.now(), context })
    context.catch(() => { this.cache.delete(name) })
    return await context
  }

  /** Issues a leaf certificate for `hostname`. */
  async issue (hostname: string): Promise<CertificatePair> {
    if (!/^[a-z0-9.:-]+$/i.test(hostname)) throw new ConfigError(`cannot issue a certificate for "${hostname}": not a host name or IP address`)
    const key = newKey()
    const altName = isIP(hostname) !== 0 ? `IP:${hostname}` : `DNS:${hostname}`
    const config = [
      '[req]',
      'distinguished_name = dn',
      'prompt = no',
      '[dn]',
      `CN = ${hostname.slice(0, 64)}`,
      '[leaf]',
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature',
      'extendedKeyUsage = serverAuth',
      `subjectAltName = ${altName}`,
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid'
    ].join('\n')
    const cert = await withTempFiles({ 'leaf.key': key, 'ca.crt': this.ca.cert, 'ca.key': this.ca.key, 'openssl.cnf': config }, async dir => {
      await openssl(['req', '-new', '-key', join(dir, 'leaf.key'), '-config', join(dir, 'openssl.cnf'), '-out', join(dir, 'leaf.csr')])
      await openssl(['x509', '-req', '-sha256', '-in', join(dir, 'leaf.csr'), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-set_serial', serial(), '-days', String(LEAF_DAYS), '-extfile', join(dir, 'openssl.cnf'), '-extensions', 'leaf', '-out', join(dir, 'leaf.crt')])
      return await readFile(join(dir, 'leaf.crt'), 'utf8')
    })
    return { cert, key }
  }
}

function newKey (): string {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
}

/** A positive random 64-bit serial number in hex, as openssl's -set_serial takes it. */
function serial (): string {
  const bytes = randomBytes(8)
  bytes[0] = (bytes[0] ?? 0) & 0x7f
  return `0x${bytes.toString('hex')}`
}

async function withTempFiles<T> (files: Record<string, string>, use: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'dfnode-cert-'))
  try {
    for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content, { mode: 0o600 })
    return await use(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function openssl (args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 30_000 })
  } catch (err) {
    const error = err as NodeJS.ErrnoException & { stderr?: string }
    if (error.code === 'ENOENT') {
      throw new ExternalToolError('the openssl command was not found: install OpenSSL (Debian package openssl) to create certificates for HTTPS interception', { cause: err })
    }
    throw new ExternalToolError(`openssl ${args[0] ?? ''} failed: ${(error.stderr ?? error.message).trim()}`, { cause: err })
  }
}
