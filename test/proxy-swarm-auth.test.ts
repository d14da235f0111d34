/**
 * A registry with per-repository bearer tokens behind two `dfnode proxy`
 * processes on the swarm. The proxy passes the registry's 401 through,
 * containerd pulls with credentials, and a client whose token does not cover
 * a repository cannot read that repository's blob, whether the host it asks
 * or one of that host's peers has the blob stored.
 * Backend: SwarmBlobSource (the daemon's engine).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { writeContainerdConfig } from '../src/cli/containerd-config.ts'
import { TestContainerd } from '../e2e/registry/containerd.ts'
import { buildImage, pushBlob, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'
import { recordNameOf, TestSwarm } from '../e2e/registry/swarm.ts'
import { TokenServer } from '../e2e/registry/token-server.ts'

const MiB = 1024 * 1024
const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

async function get (url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, string | string[] | undefined>, body: Buffer }> {
  const response = await request(url, { headers })
  return { status: response.statusCode, headers: response.headers, body: Buffer.from(await response.body.arrayBuffer()) }
}

describe('proxies on the swarm with per-repository tokens', () => {
  let tokens: TokenServer
  let registry: TestRegistry
  let image: TestImage
  let work: string
  let swarm: TestSwarm | undefined
  let containerd: TestContainerd | undefined

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-swarm-auth-'))
    tokens = await TokenServer.start({
      alice: { password: 'alice-pw', repositories: ['team-a/app', 'team-b/app'] },
      bob: { password: 'bob-pw', repositories: ['team-b/app'] }
    })
    registry = await TestRegistry.start({ token: tokens.settings })
    image = await buildImage(join(work, 'image'), [3 * MiB, MiB])
    const pushA = await tokens.token('repository:team-a/app:pull,push', 'alice', 'alice-pw')
    await pushImage(registry.url, 'team-a/app', 'v1', image, { authorization: `Bearer ${pushA}` })
    // team-b holds only the second layer.
    const pushB = await tokens.token('repository:team-b/app:pull,push', 'alice', 'alice-pw')
    await pushBlob(registry.url, 'team-b/app', image.layers[1]!, { authorization: `Bearer ${pushB}` })

    swarm = await TestSwarm.start({ dir: join(work, 'swarm'), hosts: 2, allowOrigins: [registry.host], proxyArgs: ['--registry', registry.url] })
    containerd = await TestContainerd.start()
  })

  after(async () => {
    await containerd?.stop()
    await swarm?.stop()
    await registry?.stop()
    await tokens?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('passes the registry\'s 401 through unchanged', async () => {
    const path = `/v2/team-a/app/blobs/${image.layers[0]!.digest}`
    const direct = await get(`${registry.url}${path}`)
    const proxied = await get(`${swarm!.url(0)}${path}`)
    assert.equal(direct.status, 401)
    assert.equal(proxied.status, 401)
    assert.equal(proxied.headers['www-authenticate'], direct.headers['www-authenticate'])
    assert.match(String(proxied.headers['www-authenticate']), new RegExp(`^Bearer realm="${tokens.settings.realm}"`))
    assert.deepEqual(proxied.body, direct.body)
    assert.equal((await swarm!.waitRequests(0, path, 1)).at(-1)?.route, 'direct')
    assert.deepEqual(await swarm!.records(0), [])
  })

  it('pulls with credentials through the swarm', async () => {
    const hostsDir = join(work, 'hosts')
    await writeContainerdConfig({ registry: registry.host, dir: hostsDir, proxy: swarm!.url(0), server: registry.url })
    const result = await containerd!.ctr(['content', 'fetch', '--hosts-dir', hostsDir, '--user', 'alice:alice-pw', `${registry.host}/team-a/app:v1`])
    assert.equal(result.code, 0, `${result.stderr}\n${await swarm!.problems()}`)

    const listing = await containerd!.ctr(['content', 'ls', '-q'])
    for (const blob of [...image.layers, image.config]) {
      assert.ok(listing.stdout.includes(blob.digest), `containerd lacks ${blob.digest}`)
      assert.equal(await registry.blobGets(blob.digest), 1, `registry GETs of ${blob.digest}`)
      const lines = await swarm!.waitRequests(0, `/v2/team-a/app/blobs/${blob.digest}`, 1)
      assert.ok(lines.some(line => line.status === 200 && line.route === 'p2p'), `host 0 served ${blob.digest} from the swarm`)
    }
    const log = JSON.stringify(await swarm!.hostLog(0)) + JSON.stringify(await swarm!.supernodeLog())
    assert.ok(!log.includes('alice-pw'))
    assert.ok(!log.includes(Buffer.from('alice:alice-pw').toString('base64')))
  })

  it('denies a held blob to a token without its repository', async () => {
    const layer = image.layers[0]!
    const path = `/v2/team-a/app/blobs/${layer.digest}`
    const bobToken = await tokens.token('repository:team-a/app:pull', 'bob', 'bob-pw')

    // Host 0 has the blob stored, and host 1 would get it from host 0 if the proxy did not ask the registry first.
    for (const i of [0, 1]) {
      const logged = (await swarm!.requests(i, path)).length
      const denied = await get(`${swarm!.url(i)}${path}`, { authorization: `Bearer ${bobToken}` })
      assert.equal(denied.status, 401, `host ${i}`)
      assert.match(denied.body.toString(), /UNAUTHORIZED|DENIED/, `host ${i}`)
      assert.equal((await swarm!.waitRequests(i, path, logged + 1)).at(-1)?.route, 'direct', `host ${i}`)
    }
    assert.ok(!(await swarm!.records(1)).includes(recordNameOf(layer.digest)), 'host 1 fetched the denied blob')
    assert.equal(await registry.blobGets(layer.digest), 1)

    // Bob's own repository does not link the blob, so the registry returns 404 there.
    const teamB = await tokens.token('repository:team-b/app:pull', 'bob', 'bob-pw')
    const unlinked = await get(`${swarm!.url(1)}/v2/team-b/app/blobs/${layer.digest}`, { authorization: `Bearer ${teamB}` })
    assert.equal(unlinked.status, 404)
    assert.match(unlinked.body.toString(), /BLOB_UNKNOWN/)
    assert.ok(!(await swarm!.records(1)).includes(recordNameOf(layer.digest)), 'host 1 fetched the unlinked blob')
  })

  it('serves a shared blob to another repository\'s reader from a peer', async () => {
    const layer = image.layers[1]!
    const teamB = await tokens.token('repository:team-b/app:pull', 'bob', 'bob-pw')
    const response = await get(`${swarm!.url(1)}/v2/team-b/app/blobs/${layer.digest}`, { authorization: `Bearer ${teamB}` })
    assert.equal(response.status, 200)
    assert.equal(sha256(response.body), layer.digest)
    assert.equal((await swarm!.waitRequests(1, `/v2/team-b/app/blobs/${layer.digest}`, 1)).at(-1)?.route, 'p2p')
    assert.equal(await registry.blobGets(layer.digest), 1)
    const downloads = await swarm!.downloads(1, layer.digest)
    assert.equal(downloads.length, 1)
    assert.equal(downloads[0]!.fromOrigin, 0)
    assert.equal(downloads[0]!.fromSupernode + downloads[0]!.fromPeers, layer.size)
  })
})
