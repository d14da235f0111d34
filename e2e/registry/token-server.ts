/**
 * A bearer-token server for docker-registry's `auth.token` mode, for tests
 * that need per-repository access: users authenticate (GET with basic auth,
 * or an OAuth2 password grant) and get an ES256 JWT granting pull (and push)
 * on the repositories they are allowed. The signing certificate travels in
 * the token's x5c header and is the registry's rootcertbundle.
 */
import { createPrivateKey, sign, X509Certificate } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createCa } from '../../src/proxy/certificates.ts'
import type { TokenAuthSettings } from './registry.ts'

export interface TokenUser {
  password: string
  /** Repositories this user may pull from and push to. */
  repositories: string[]
}

export class TokenServer {
  readonly settings: TokenAuthSettings
  /** Token requests received. */
  requests = 0
  private readonly server: Server
  private readonly dir: string

  private constructor (server: Server, dir: string, settings: TokenAuthSettings) {
    this.server = server
    this.dir = dir
    this.settings = settings
  }

  static async start (users: Record<string, TokenUser>): Promise<TokenServer> {
    const dir = await mkdtemp(join(tmpdir(), 'dfnode-token-'))
    const pair = await createCa('dfnode test token signer', 30)
    const certFile = join(dir, 'token.crt')
    await writeFile(certFile, pair.cert)
    const key = createPrivateKey(pair.key)
    const der = new X509Certificate(pair.cert).raw.toString('base64')
    const service = 'dfnode-test-registry'
    const issuer = 'dfnode-test-token-server'

    let server: TokenServer | undefined
    const http = createServer((req, res) => {
      if (server != null) server.requests++
      void readTokenRequest(req, users).then(grant => {
        if (grant == null) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"invalid credentials"}')
          return
        }
        const { user, scopes } = grant
        const access = scopes.flatMap(scope => {
          const [type, name, actions] = scope.split(':')
          if (type !== 'repository' || name == null || actions == null || user == null) return []
          if (!users[user]?.repositories.includes(name)) return []
          return [{ type, name, actions: actions.split(',').filter(action => action === 'pull' || action === 'push') }]
        })
        const now = Math.floor(Date.now() / 1000)
        const header = { typ: 'JWT', alg: 'ES256', x5c: [der] }
        const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + 600, nbf: now - 30, iat: now, jti: `${now}-${Math.random()}`, access }
        const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`
        const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')
        const token = `${input}.${signature}`
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 600, issued_at: new Date().toISOString() }))
      }, () => { res.destroy() })
    })
    await new Promise<void>(resolve => http.listen(0, '127.0.0.1', resolve))
    const { port } = http.address() as AddressInfo
    server = new TokenServer(http, dir, { realm: `http://127.0.0.1:${port}/token`, service, issuer, rootCertBundle: certFile })
    return server
  }

  /** Gets a token for `scope` as `user` (anonymous when undefined), as a client would. */
  async token (scope: string, user?: string, password?: string): Promise<string> {
    const headers: Record<string, string> = user != null ? { authorization: `Basic ${Buffer.from(`${user}:${password ?? ''}`).toString('base64')}` } : {}
    const response = await fetch(`${this.settings.realm}?service=${encodeURIComponent(this.settings.service)}&scope=${encodeURIComponent(scope)}`, { headers })
    if (!response.ok) throw new Error(`token request failed with ${response.status}`)
    return ((await response.json()) as { token: string }).token
  }

  async stop (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise(resolve => this.server.close(resolve))
    await rm(this.dir, { recursive: true, force: true })
  }
}

/** A token request's user (undefined for anonymous) and requested scopes; undefined when its credentials are wrong. */
interface TokenGrant {
  user: string | undefined
  scopes: string[]
}

/** Maximum size of an OAuth2 form body, in bytes. */
const MAX_FORM_BYTES = 64 * 1024

/**
 * Reads a token request in either form a registry client uses. One is a GET
 * with basic auth and one `scope` parameter per scope. The other is an OAuth2
 * password grant POSTed as a form with space-separated scopes, which
 * containerd sends when it has credentials.
 */
async function readTokenRequest (req: IncomingMessage, users: Record<string, TokenUser>): Promise<TokenGrant | undefined> {
  const url = new URL(req.url ?? '/', 'http://token')
  if (req.method === 'POST') {
    let body = ''
    for await (const chunk of req) {
      body += (chunk as Buffer).toString('utf8')
      if (body.length > MAX_FORM_BYTES) throw new Error(`token request body exceeds ${MAX_FORM_BYTES} bytes`)
    }
    const form = new URLSearchParams(body)
    const scopes = (form.get('scope') ?? '').split(' ').filter(scope => scope !== '')
    if (form.get('grant_type') !== 'password') return { user: undefined, scopes }
    const name = form.get('username') ?? ''
    return users[name]?.password === form.get('password') ? { user: name, scopes } : undefined
  }

  const user = basicUser(req.headers.authorization, users)
  if (req.headers.authorization != null && user == null) return undefined
  return { user, scopes: url.searchParams.getAll('scope') }
}

function basicUser (header: string | undefined, users: Record<string, TokenUser>): string | undefined {
  if (header == null || !header.startsWith('Basic ')) return undefined
  const decoded = Buffer.from(header.slice(6), 'base64').toString()
  const colon = decoded.indexOf(':')
  const name = decoded.slice(0, colon)
  return users[name]?.password === decoded.slice(colon + 1) ? name : undefined
}

function base64url (text: string): string {
  return Buffer.from(text).toString('base64url')
}
