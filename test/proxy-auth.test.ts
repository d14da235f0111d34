/**
 * Authorization through the proxy against a real docker-registry: htpasswd
 * basic auth and per-repository bearer tokens. A blob fetched by one client
 * is served to another only after the registry confirms the other's access.
 * Backend: OriginBlobSource.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { buildImage, pushBlob, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { TestProxy } from '../e2e/registry/proxy.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'
import { TokenServer } from '../e2e/registry/token-server.ts'

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

async function get (url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: Buffer }> {
  const response = await request(url, { method, headers })
  return { status: response.statusCode, headers: response.headers, body: Buffer.from(await response.body.arrayBuffer()) }
}

describe('proxy with basic auth', () => {
  let registry: TestRegistry
  let proxy: TestProxy
  let image: TestImage
  let work: string
  const repo = 'private/app'
  const alice = basic('alice', 'alice-secret-password')

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-auth-'))
    registry = await TestRegistry.start({ users: [{ name: 'alice', password: 'alice-secret-password' }] })
    image = await buildImage(join(work, 'image'), [1024 * 1024, 512 * 1024])
    await pushImage(registry.url, repo, 'v1', image, { authorization: alice })
    proxy = await TestProxy.start({ registry: registry.url, authCacheTtlMs: 60_000 })
  })

  after(async () => {
    await proxy?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('passes 401 and WWW-Authenticate through unchanged', async () => {
    const direct = await get(`${registry.url}/v2/`)
    const proxied = await get(`${proxy.url}/v2/`)
    assert.equal(direct.status, 401)
    assert.equal(proxied.status, 401)
    assert.equal(proxied.headers['www-authenticate'], direct.headers['www-authenticate'])
    assert.deepEqual(proxied.body, direct.body)
  })

  it('serves a blob to a client with credentials', async () => {
    const layer = image.layers[0]!
    const response = await get(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, { authorization: alice })
    assert.equal(response.status, 200)
    assert.equal(sha256(response.body), layer.digest)
    assert.equal(proxy.requests().at(-1)?.route, 'p2p')
  })

  it('reuses an allowed check for the same credential', async () => {
    const layer = image.layers[0]!
    const headsBefore = (await registry.accessLog()).filter(entry => entry.method === 'HEAD' && entry.path.endsWith(layer.digest)).length
    const response = await get(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, { authorization: alice })
    assert.equal(response.status, 200)
    assert.equal(proxy.requests().at(-1)?.route, 'local')
    const headsAfter = (await registry.accessLog()).filter(entry => entry.method === 'HEAD' && entry.path.endsWith(layer.digest)).length
    assert.equal(headsAfter, headsBefore)
  })

  it('refuses the cached blob to clients without valid credentials', async () => {
    const layer = image.layers[0]!
    const direct = await get(`${registry.url}/v2/${repo}/blobs/${layer.digest}`)
    const attempts: Array<Record<string, string>> = [{}, { authorization: basic('alice', 'wrong-password') }, { authorization: basic('mallory', 'x') }]
    for (const headers of attempts) {
      const response = await get(`${proxy.url}/v2/${repo}/blobs/${layer.digest}`, headers)
      assert.equal(response.status, 401)
      assert.equal(response.headers['www-authenticate'], direct.headers['www-authenticate'])
      assert.match(response.body.toString(), /UNAUTHORIZED/)
      assert.equal(proxy.requests().at(-1)?.route, 'direct')
    }
  })

  it('never logs credentials', async () => {
    const log = proxy.rawLog.join('')
    assert.ok(!log.includes('alice-secret-password'))
    assert.ok(!log.includes(alice.slice('Basic '.length)))
    assert.ok(!log.includes('wrong-password'))
  })
})

describe('proxy with per-repository tokens', () => {
  let tokens: TokenServer
  let registry: TestRegistry
  let proxy: TestProxy
  let image: TestImage
  let work: string

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-token-'))
    tokens = await TokenServer.start({
      alice: { password: 'alice-pw', repositories: ['team-a/app', 'team-b/app'] },
      bob: { password: 'bob-pw', repositories: ['team-b/app'] }
    })
    registry = await TestRegistry.start({ token: tokens.settings })
    image = await buildImage(join(work, 'image'), [1024 * 1024, 256 * 1024])
    const pushA = await tokens.token('repository:team-a/app:pull,push', 'alice', 'alice-pw')
    await pushImage(registry.url, 'team-a/app', 'v1', image, { authorization: `Bearer ${pushA}` })
    // team-b holds only the second layer.
    const pushB = await tokens.token('repository:team-b/app:pull,push', 'alice', 'alice-pw')
    await pushBlob(registry.url, 'team-b/app', image.layers[1]!, { authorization: `Bearer ${pushB}` })
    proxy = await TestProxy.start({ registry: registry.url })
  })

  after(async () => {
    await proxy?.stop()
    await registry?.stop()
    await tokens?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('points clients at the token server', async () => {
    const response = await get(`${proxy.url}/v2/team-a/app/blobs/${image.layers[0]!.digest}`)
    assert.equal(response.status, 401)
    assert.match(String(response.headers['www-authenticate']), new RegExp(`^Bearer realm="${tokens.settings.realm}"`))
    assert.match(String(response.headers['www-authenticate']), /scope="repository:team-a\/app:pull"/)
  })

  it('denies a blob fetched by another client to a token without the repository', async () => {
    const layer = image.layers[0]!
    const aliceToken = await tokens.token('repository:team-a/app:pull', 'alice', 'alice-pw')
    const allowed = await get(`${proxy.url}/v2/team-a/app/blobs/${layer.digest}`, { authorization: `Bearer ${aliceToken}` })
    assert.equal(allowed.status, 200)
    assert.equal(sha256(allowed.body), layer.digest)

    // Bob's token for team-a grants nothing, since he may not read team-a.
    const bobToken = await tokens.token('repository:team-a/app:pull', 'bob', 'bob-pw')
    const denied = await get(`${proxy.url}/v2/team-a/app/blobs/${layer.digest}`, { authorization: `Bearer ${bobToken}` })
    assert.equal(denied.status, 401)
    assert.match(denied.body.toString(), /UNAUTHORIZED|DENIED/)
    assert.equal(proxy.requests().at(-1)?.route, 'direct')
  })

  it('denies a blob through a repository it is not linked into', async () => {
    const layer = image.layers[0]!
    const bobToken = await tokens.token('repository:team-b/app:pull', 'bob', 'bob-pw')
    const response = await get(`${proxy.url}/v2/team-b/app/blobs/${layer.digest}`, { authorization: `Bearer ${bobToken}` })
    assert.equal(response.status, 404)
    assert.match(response.body.toString(), /BLOB_UNKNOWN/)
  })

  it('serves a shared blob to each client allowed to read it', async () => {
    const layer = image.layers[1]!
    const aliceToken = await tokens.token('repository:team-a/app:pull', 'alice', 'alice-pw')
    const bobToken = await tokens.token('repository:team-b/app:pull', 'bob', 'bob-pw')
    const first = await get(`${proxy.url}/v2/team-a/app/blobs/${layer.digest}`, { authorization: `Bearer ${aliceToken}` })
    const second = await get(`${proxy.url}/v2/team-b/app/blobs/${layer.digest}`, { authorization: `Bearer ${bobToken}` })
    assert.equal(first.status, 200)
    assert.equal(second.status, 200)
    assert.equal(sha256(second.body), layer.digest)
    assert.equal(proxy.requests().at(-1)?.route, 'local')
    assert.equal(await registry.blobGets(layer.digest), 1)
  })
})
