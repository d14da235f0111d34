/**
 * skopeo copies through the proxy: as a registries.conf mirror, through
 * HTTP_PROXY/HTTPS_PROXY with plain tunnels, and through HTTPS interception.
 * Go clients never proxy loopback addresses, so the proxy cases put the
 * registry in a network namespace at a 198.19.x.x address (needs root).
 * Backend: OriginBlobSource.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateCa } from '../src/cli/gen-ca.ts'
import { createCa, LeafCertificates } from '../src/proxy/certificates.ts'
import { buildImage, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { TestNetns } from '../e2e/registry/netns.ts'
import { TestProxy } from '../e2e/registry/proxy.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'

interface SkopeoResult { code: number, stdout: string, stderr: string }

async function skopeo (args: string[], env: Record<string, string> = {}): Promise<SkopeoResult> {
  const clean: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value != null && !/^(https?|no)_proxy$/i.test(name)) clean[name] = value
  }
  return await new Promise(resolve => {
    execFile('skopeo', args, { env: { ...clean, ...env }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err == null ? 0 : 1, stdout, stderr })
    })
  })
}

/** Checks that a `dir:` copy written by skopeo (which keeps layers as they are, unlike `oci:`) contains every blob of `image`. */
async function assertCopied (dir: string, image: TestImage): Promise<void> {
  for (const blob of [...image.layers, image.config]) {
    const copied = await readFile(join(dir, blob.digest.slice(7)))
    assert.equal(copied.length, blob.size, blob.digest)
  }
}

const image = { current: undefined as TestImage | undefined }
let work: string

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-skopeo-'))
  image.current = await buildImage(join(work, 'image'), [3 * 1024 * 1024, 1024 * 1024])
})

after(async () => {
  await rm(work, { recursive: true, force: true })
})

describe('skopeo through the proxy as a mirror', () => {
  let registry: TestRegistry
  let proxy: TestProxy

  before(async () => {
    registry = await TestRegistry.start()
    await pushImage(registry.url, 'library/app', 'v1', image.current!)
    proxy = await TestProxy.start({ registry: registry.url })
  })

  after(async () => {
    await proxy?.stop()
    await registry?.stop()
  })

  it('copies an image through the mirror', async () => {
    const conf = join(work, 'registries.conf')
    const proxyHost = new URL(proxy.url).host
    await writeFile(conf, [
      '[[registry]]',
      `location = "${registry.host}"`,
      'insecure = true',
      '[[registry.mirror]]',
      `location = "${proxyHost}"`,
      'insecure = true',
      ''
    ].join('\n'))
    const out = join(work, 'mirror-copy')
    const result = await skopeo(['--registries-conf', conf, 'copy', '--src-tls-verify=false', `docker://${registry.host}/library/app:v1`, `dir:${out}`])
    assert.equal(result.code, 0, result.stderr)
    await assertCopied(out, image.current!)
    for (const layer of image.current!.layers) {
      assert.ok(proxy.requests().some(line => line.url === `/v2/library/app/blobs/${layer.digest}` && line.route === 'p2p' && line.status === 200), layer.digest)
    }
  })
})

describe('skopeo through the proxy as HTTP_PROXY', { skip: process.getuid?.() !== 0 ? 'network namespaces need root' : false }, () => {
  let netns: TestNetns
  let plain: TestRegistry
  let secure: TestRegistry
  let registryCaFile: string
  let proxyCa: { cert: string, key: string }

  before(async () => {
    netns = await TestNetns.create()
    plain = await TestRegistry.start({ netns: netns.name, address: netns.address, port: 5000 })
    await pushImage(plain.url, 'library/app', 'v1', image.current!)

    const registryCa = await createCa('test registry CA', 30)
    const leaf = await new LeafCertificates(registryCa).issue(netns.address)
    await writeFile(join(work, 'registry.crt'), leaf.cert)
    await writeFile(join(work, 'registry.key'), leaf.key)
    registryCaFile = join(work, 'registry-ca.crt')
    await writeFile(registryCaFile, registryCa.cert)
    secure = await TestRegistry.start({ netns: netns.name, address: netns.address, port: 5443, tls: { cert: join(work, 'registry.crt'), key: join(work, 'registry.key') } })
    const { Agent } = await import('undici')
    const dispatcher = new Agent({ connect: { ca: registryCa.cert } })
    await pushImage(secure.url, 'library/app', 'v1', image.current!, {}, dispatcher)
    await dispatcher.close()

    proxyCa = await generateCa({ out: join(work, 'proxy-ca') })
  })

  after(async () => {
    await plain?.stop()
    await secure?.stop()
    await netns?.remove()
  })

  it('copies from a plain-HTTP registry through the forward proxy', async () => {
    const proxy = await TestProxy.start({ registries: [{ host: plain.host, url: plain.url }] })
    try {
      const out = join(work, 'proxy-copy')
      const result = await skopeo(['copy', '--src-tls-verify=false', `docker://${plain.host}/library/app:v1`, `dir:${out}`], { HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url })
      assert.equal(result.code, 0, result.stderr)
      await assertCopied(out, image.current!)
      for (const layer of image.current!.layers) {
        assert.ok(proxy.requests().some(line => line.url === `${plain.url}/v2/library/app/blobs/${layer.digest}` && line.mode === 'forward' && line.route === 'p2p'), layer.digest)
      }
    } finally {
      await proxy.stop()
    }
  })

  it('copies from an HTTPS registry through interception', async () => {
    const proxy = await TestProxy.start({ hijackHttps: true, caCert: proxyCa.cert, caKey: proxyCa.key, hijack: [{ host: `^${netns.address.replaceAll('.', '\\.')}:5443$`, ca: registryCaFile }] })
    try {
      // skopeo trusts the proxy's CA for the registry's address, as a host configured for interception would.
      const certDir = join(work, 'certs')
      await mkdir(certDir, { recursive: true })
      await writeFile(join(certDir, 'proxy-ca.crt'), await readFile(proxyCa.cert))
      const out = join(work, 'hijack-copy')
      const result = await skopeo(['copy', '--src-cert-dir', certDir, `docker://${secure.host}/library/app:v1`, `dir:${out}`], { HTTPS_PROXY: proxy.url })
      assert.equal(result.code, 0, result.stderr)
      await assertCopied(out, image.current!)
      for (const layer of image.current!.layers) {
        assert.ok(proxy.requests().some(line => line.url === `${secure.url}/v2/library/app/blobs/${layer.digest}` && line.mode === 'intercept' && line.route === 'p2p'), layer.digest)
      }
    } finally {
      await proxy.stop()
    }
  })
})
