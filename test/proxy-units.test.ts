/**
 * Pure parts of the proxy: Range parsing, request targets, options, rules,
 * headers, containerd hosts.toml, and certificates (with the openssl command).
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { parse as parseYaml } from 'yaml'
import { ConfigError, UsageError } from '../src/errors.ts'
import { createCa, LeafCertificates } from '../src/proxy/certificates.ts'
import { parseAuthority } from '../src/proxy/connect.ts'
import { renderContainerdHosts } from '../src/proxy/containerd-hosts.ts'
import { clientResponseHeaders, upstreamRequestHeaders } from '../src/proxy/headers.ts'
import { resolveProxyOptions } from '../src/proxy/options.ts'
import { parseRange } from '../src/proxy/range.ts'
import { blobOfPath, checkPath, isTargetError, resolveForwardTarget, resolveMirrorTarget } from '../src/proxy/request-target.ts'
import { routeOf, trustedForSwarm } from '../src/proxy/rules.ts'
import { withoutQuery } from '../src/proxy/access-log.ts'

const HEX = 'ab'.repeat(32)

describe('parseRange', () => {
  it('reads single ranges', () => {
    assert.deepEqual(parseRange('bytes=0-99', 1000), { kind: 'single', start: 0, end: 100 })
    assert.deepEqual(parseRange('bytes=900-', 1000), { kind: 'single', start: 900, end: 1000 })
    assert.deepEqual(parseRange('bytes=-100', 1000), { kind: 'single', start: 900, end: 1000 })
    assert.deepEqual(parseRange('bytes=-5000', 1000), { kind: 'single', start: 0, end: 1000 })
    assert.deepEqual(parseRange('bytes=990-5000', 1000), { kind: 'single', start: 990, end: 1000 })
  })

  it('flags unsatisfiable and multiple ranges', () => {
    assert.deepEqual(parseRange('bytes=1000-', 1000), { kind: 'unsatisfiable' })
    assert.deepEqual(parseRange('bytes=-0', 1000), { kind: 'unsatisfiable' })
    assert.deepEqual(parseRange('bytes=0-', 0), { kind: 'unsatisfiable' })
    assert.deepEqual(parseRange('bytes=0-1,5-6', 1000), { kind: 'multiple' })
  })

  it('ignores invalid headers', () => {
    for (const header of [undefined, 'items=0-1', 'bytes=5-1', 'bytes=a-b', 'bytes=-', 'bytes=']) {
      assert.deepEqual(parseRange(header, 1000), { kind: 'none' }, String(header))
    }
  })
})

describe('request targets', () => {
  const options = resolveProxyOptions({ registry: 'https://registry.example.com', registries: [{ host: 'docker.io' }, { host: 'mirror.local:5000', url: 'http://10.0.0.1:5000' }] })

  it('rejects malformed digests and dot segments', () => {
    assert.equal(checkPath(`/v2/app/blobs/sha256:${HEX}`), undefined)
    assert.equal(checkPath('/v2/\\..\\..\\admin/secret')?.code, 'NAME_INVALID')
    assert.equal(checkPath(`/v2/app/blobs/sha256:${HEX.toUpperCase()}`)?.code, 'DIGEST_INVALID')
    assert.equal(checkPath(`/v2/app/blobs/sha256:${HEX.slice(2)}`)?.code, 'DIGEST_INVALID')
    assert.equal(checkPath('/v2/app/manifests/SHA256:00')?.code, 'DIGEST_INVALID')
    assert.equal(checkPath('/v2/app/../blobs/x')?.code, 'NAME_INVALID')
    assert.equal(checkPath('/v2/app/%2E%2E/x')?.code, 'NAME_INVALID')
    assert.equal(checkPath('/v2/app/%zz')?.code, 'NAME_INVALID')
    assert.equal(checkPath('/v2/app/blobs/sha256:%zz')?.code, 'DIGEST_INVALID')
    assert.equal(checkPath(`/docker/registry/v2/blobs/sha256/zz/${HEX}/data`)?.code, 'DIGEST_INVALID')
    assert.equal(checkPath('/v2/app/manifests/latest'), undefined)
  })

  it('finds blobs in API and storage paths', () => {
    assert.deepEqual(blobOfPath(`/v2/library/app/blobs/sha256:${HEX}`), { digest: `sha256:${HEX}`, kind: 'api', repository: 'library/app' })
    assert.deepEqual(blobOfPath(`/bucket/docker/registry/v2/blobs/sha256/ab/${HEX}/data`), { digest: `sha256:${HEX}`, kind: 'storage' })
    assert.equal(blobOfPath('/v2/library/app/blobs/uploads/'), undefined)
    assert.equal(blobOfPath(`/v2/library/app/manifests/sha256:${HEX}`), undefined)
  })

  it('chooses the registry from ?ns= and drops it', () => {
    const target = resolveMirrorTarget(`/v2/library/app/blobs/sha256:${HEX}?ns=docker.io&x=1`, options)
    assert.ok(!isTargetError(target))
    assert.equal(target.upstreamUrl.href, `https://registry-1.docker.io/v2/library/app/blobs/sha256:${HEX}?x=1`)
    assert.equal(target.blob?.digest, `sha256:${HEX}`)

    // Other parameters reach the registry as the client sent them.
    for (const [query, search] of [['?flag&a=%7E~&b=x%20y&ns=docker.io&c=1', '?flag&a=%7E~&b=x%20y&c=1'], ['?a=1&&b=2&', '?a=1&&b=2&']] as const) {
      const target = resolveMirrorTarget(`/v2/app/blobs/uploads/x${query}`, options)
      assert.ok(!isTargetError(target), query)
      assert.equal(target.upstreamUrl.search, search)
    }

    const other = resolveMirrorTarget('/v2/app/manifests/v1?ns=mirror.local:5000', options)
    assert.ok(!isTargetError(other))
    assert.equal(other.upstreamUrl.href, 'http://10.0.0.1:5000/v2/app/manifests/v1')

    const fallback = resolveMirrorTarget('/v2/', options)
    assert.ok(!isTargetError(fallback))
    assert.equal(fallback.upstreamUrl.href, 'https://registry.example.com/v2/')

    const unknown = resolveMirrorTarget('/v2/?ns=quay.io', options)
    assert.ok(isTargetError(unknown))
    assert.equal(unknown.status, 403)
  })

  it('answers 404 without a default registry', () => {
    const target = resolveMirrorTarget('/v2/', resolveProxyOptions({}))
    assert.ok(isTargetError(target))
    assert.equal(target.status, 404)
  })

  it('parses absolute URIs and CONNECT authorities', () => {
    const target = resolveForwardTarget(`http://storage.example.com:9000/b/docker/registry/v2/blobs/sha256/ab/${HEX}/data?Signature=x`)
    assert.ok(!isTargetError(target))
    assert.equal(target.blob?.kind, 'storage')
    assert.ok(isTargetError(resolveForwardTarget('ftp://example.com/')))
    assert.deepEqual(parseAuthority('registry.example.com:443'), { hostname: 'registry.example.com', port: 443 })
    assert.deepEqual(parseAuthority('[::1]:5000'), { hostname: '::1', port: 5000 })
    assert.equal(parseAuthority('example.com'), undefined)
    assert.equal(parseAuthority('example.com:99999'), undefined)
  })
})

describe('proxy options', () => {
  it('applies defaults', () => {
    const options = resolveProxyOptions({})
    assert.equal(options.host, '127.0.0.1')
    assert.equal(options.port, 65001)
    assert.equal(options.authCacheTtlMs, 30_000)
    assert.equal(options.hijackHttps, false)
    assert.deepEqual(options.registries, [])
  })

  it('rejects invalid values with the key named', () => {
    assert.throws(() => resolveProxyOptions({ port: 70000 }), (err: Error) => err instanceof ConfigError && /proxy\.port/.test(err.message))
    assert.throws(() => resolveProxyOptions({ registry: 'ftp://x' }), /proxy\.registry/)
    assert.throws(() => resolveProxyOptions({ registry: 'https://user:pw@x' }), /without credentials/)
    assert.throws(() => resolveProxyOptions({ registries: [{ host: 'bad host' }] }), /proxy\.registries\[0\]\.host/)
    assert.throws(() => resolveProxyOptions({ rules: [{ match: '(', route: 'swarm' }] }), /proxy\.rules\[0\]\.match/)
    assert.throws(() => resolveProxyOptions({ rules: [{ match: 'x', route: 'p2p' as 'swarm' }] }), /proxy\.rules\[0\]\.route/)
    assert.throws(() => resolveProxyOptions({ hijackHttps: true }), /gen-ca/)
  })

  it('lets a listed entry refine the default registry', () => {
    const options = resolveProxyOptions({ registry: 'https://r.example.com', registries: [{ host: 'r.example.com', insecure: true }] })
    assert.equal(options.registries.length, 1)
    assert.equal(options.registry?.insecure, true)
  })

  it('accepts the example settings file', async () => {
    const example = parseYaml(await readFile(new URL('../config/proxy.example.yaml', import.meta.url), 'utf8')) as Parameters<typeof resolveProxyOptions>[0]
    const options = resolveProxyOptions(example)
    assert.equal(options.registry?.url.href, 'https://registry.example.com/')
    assert.deepEqual(options.registries.map(entry => entry.host), ['registry.example.com', 'docker.io', 'registry.internal:5000', 'lab-registry:5000'])
    assert.equal(options.rules[0]?.route, 'direct')
    assert.equal(options.hijack.length, 2)
  })

  it('logs URLs without query strings or passwords', () => {
    assert.equal(withoutQuery('http://alice:s3cret@registry.example/v2/?x=1'), 'http://registry.example/v2/')
    assert.equal(withoutQuery('http://user@corp:pass@word@registry.example/v2/'), 'http://registry.example/v2/')
    assert.equal(withoutQuery('/v2/app/blobs/sha256:x?X-Amz-Signature=abc'), '/v2/app/blobs/sha256:x')
    assert.equal(withoutQuery('/v2/user@example/blobs/x'), '/v2/user@example/blobs/x')
  })

  it('routes by the first matching rule', () => {
    const options = resolveProxyOptions({ rules: [{ match: '/v2/big/', route: 'direct' }, { match: '.*', route: 'swarm' }] })
    assert.equal(routeOf(new URL('https://r/v2/big/blobs/x'), options.rules), 'direct')
    assert.equal(routeOf(new URL('https://r/v2/small/blobs/x'), options.rules), 'swarm')
    assert.equal(routeOf(new URL('https://r/v2/x'), []), 'swarm')
    assert.equal(routeOf(new URL('https://r/v2/x'), [], false), 'direct')
    assert.equal(routeOf(new URL('https://r/v2/small/blobs/x'), options.rules, false), 'swarm')
  })

  it('trusts only configured registries in forward mode', () => {
    const options = resolveProxyOptions({ registry: 'https://registry.example.com', registries: [{ host: 'docker.io', url: 'https://registry-1.docker.io' }] })
    assert.equal(trustedForSwarm('forward', new URL('https://registry.example.com/v2/a/blobs/x'), options), true)
    assert.equal(trustedForSwarm('forward', new URL('https://registry-1.docker.io/v2/a/blobs/x'), options), true)
    assert.equal(trustedForSwarm('forward', new URL('https://registry.example.com:443/v2/a/blobs/x'), options), true)
    assert.equal(trustedForSwarm('forward', new URL('https://registry.example.com:8443/v2/a/blobs/x'), options), false)
    assert.equal(trustedForSwarm('forward', new URL('http://registry.example.com/v2/a/blobs/x'), options), false)
    assert.equal(trustedForSwarm('forward', new URL('https://docker.io/v2/a/blobs/x'), options), false)
    assert.equal(trustedForSwarm('forward', new URL('http://attacker.example/v2/a/blobs/x'), options), false)
    assert.equal(trustedForSwarm('mirror', new URL('https://registry.example.com/v2/a/blobs/x'), options), true)
    assert.equal(trustedForSwarm('intercept', new URL('https://other.example/v2/a/blobs/x'), options), true)
  })
})

describe('header filtering', () => {
  it('drops hop-by-hop headers both ways', () => {
    const request = upstreamRequestHeaders({ host: 'proxy', connection: 'keep-alive, x-private', 'x-private': '1', 'proxy-authorization': 'Basic x', authorization: 'Bearer t', accept: 'a', expect: '100-continue' })
    assert.deepEqual(request, { authorization: 'Bearer t', accept: 'a' })
    const response = clientResponseHeaders({ 'transfer-encoding': 'chunked', 'www-authenticate': 'Basic realm="r"', 'content-length': '5' })
    assert.deepEqual(response, { 'www-authenticate': 'Basic realm="r"', 'content-length': '5' })
  })
})

describe('containerd hosts.toml', () => {
  it('points containerd at the proxy and the registry', () => {
    const text = renderContainerdHosts({ registry: 'docker.io' })
    assert.match(text, /^server = "https:\/\/registry-1\.docker\.io"$/m)
    assert.match(text, /^\[host\."http:\/\/127\.0\.0\.1:65001"\]$/m)
    assert.match(text, /capabilities = \["pull", "resolve"\]/)
    assert.match(renderContainerdHosts({ registry: 'r.example.com:5000', proxy: 'http://127.0.0.1:7000/' }), /server = "https:\/\/r\.example\.com:5000"[\s\S]*\[host\."http:\/\/127\.0\.0\.1:7000"\]/)
  })

  it('takes an IPv6 registry', () => {
    assert.match(renderContainerdHosts({ registry: '[::1]:5000' }), /^server = "https:\/\/\[::1\]:5000"$/m)
    assert.match(renderContainerdHosts({ registry: '[fd00::1]' }), /^server = "https:\/\/\[fd00::1\]"$/m)
  })

  it('rejects bad names and URLs', () => {
    assert.throws(() => renderContainerdHosts({ registry: '../etc' }), UsageError)
    assert.throws(() => renderContainerdHosts({ registry: '[::1' }), UsageError)
    assert.throws(() => renderContainerdHosts({ registry: '[not-an-address]:5000' }), UsageError)
    assert.throws(() => renderContainerdHosts({ registry: '[::1]:70000' }), /use a port from 1 to 65535/)
    assert.throws(() => renderContainerdHosts({ registry: 'docker.io', proxy: 'ftp://x' }), /--proxy/)
  })
})

describe('certificates', () => {
  it('issues leaf certificates the CA signs', async () => {
    const ca = await createCa('unit test CA', 1)
    const caCert = new X509Certificate(ca.cert)
    assert.ok(caCert.ca)
    assert.ok(caCert.checkPrivateKey(createPrivateKey(ca.key)))

    const leaves = new LeafCertificates(ca)
    const dns = new X509Certificate((await leaves.issue('registry.example.com')).cert)
    assert.ok(dns.verify(caCert.publicKey))
    assert.equal(dns.ca, false)
    assert.equal(dns.checkHost('registry.example.com'), 'registry.example.com')
    assert.equal(dns.checkHost('other.example.com'), undefined)

    const ip = new X509Certificate((await leaves.issue('198.19.0.2')).cert)
    assert.equal(ip.checkIP('198.19.0.2'), '198.19.0.2')
    await assert.rejects(leaves.issue('bad name; rm'), ConfigError)
  })

  it('caches one context per host', async () => {
    const leaves = new LeafCertificates(await createCa('unit test CA', 1))
    const first = await leaves.contextFor('a.example.com')
    const second = await leaves.contextFor('A.example.com')
    assert.equal(first, second)
  })
})
