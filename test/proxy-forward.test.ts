/**
 * HTTP-proxy mode with curl against a real docker-registry: absolute-URI
 * requests, Range and HEAD, plain CONNECT tunnels, and HTTPS interception
 * with a CA from `dfnode gen-ca` and upstream certificate verification.
 * Backend: OriginBlobSource.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateCa } from '../src/cli/gen-ca.ts'
import { createCa, LeafCertificates } from '../src/proxy/certificates.ts'
import { buildImage, pushImage, type TestImage } from '../e2e/registry/image.ts'
import { TestProxy } from '../e2e/registry/proxy.ts'
import { TestRegistry } from '../e2e/registry/registry.ts'

const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

interface CurlResult { code: number, status: number, body: Buffer, stderr: string, headers: string }

/** Runs curl, writing the body and headers to files; the status comes from --write-out. */
async function curl (work: string, args: string[]): Promise<CurlResult> {
  const id = Math.random().toString(36).slice(2)
  const bodyFile = join(work, `body-${id}`)
  const headerFile = join(work, `headers-${id}`)
  return await new Promise(resolve => {
    execFile('curl', ['-sS', '--max-time', '60', '-o', bodyFile, '-D', headerFile, '-w', '%{http_code}', ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      void (async () => {
        const body = await readFile(bodyFile).catch(() => Buffer.alloc(0))
        const headers = await readFile(headerFile, 'utf8').catch(() => '')
        const code = err == null ? 0 : Number((err as unknown as { code: number }).code)
        resolve({ code, status: Number(stdout.trim().slice(-3)), body, stderr, headers })
      })()
    })
  })
}

describe('proxy forward mode with curl', () => {
  let registry: TestRegistry
  let proxy: TestProxy
  let image: TestImage
  let work: string
  const repo = 'library/forward'

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-forward-'))
    registry = await TestRegistry.start()
    image = await buildImage(join(work, 'image'), [2 * 1024 * 1024, 100 * 1024])
    await pushImage(registry.url, repo, 'v1', image)
    // Forward-mode blob GETs go through the blob source only for configured registries.
    proxy = await TestProxy.start({ registries: [{ host: registry.host, url: registry.url }] })
  })

  after(async () => {
    await proxy?.stop()
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('forwards absolute-URI blob GETs through the blob source', async () => {
    const layer = image.layers[0]!
    const result = await curl(work, ['-x', proxy.url, `${registry.url}/v2/${repo}/blobs/${layer.digest}`])
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.status, 200)
    assert.equal(sha256(result.body), layer.digest)
    const line = proxy.requests().at(-1)
    assert.equal(line?.mode, 'forward')
    assert.equal(line?.route, 'p2p')
    assert.equal(line?.url, `${registry.url}/v2/${repo}/blobs/${layer.digest}`)
  })

  it('sends other hosts\' blobs direct', async () => {
    // The proxy stores the layer from its registry. A host of the client's own, which allows every
    // access check, must not get it: its own bytes come back, and nothing from the proxy.
    const layer = image.layers[0]!
    const stored = await curl(work, ['-x', proxy.url, `${registry.url}/v2/${repo}/blobs/${layer.digest}`])
    assert.equal(sha256(stored.body), layer.digest)
    assert.match(String(proxy.requests().at(-1)?.route), /^(p2p|local)$/)
    const decoy = Buffer.from('bytes of the host that the client named')
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': decoy.byteLength })
      res.end(req.method === 'HEAD' ? undefined : decoy)
    })
    await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
    try {
      const { port } = server.address() as AddressInfo
      const result = await curl(work, ['-x', proxy.url, `http://127.0.0.1:${port}/v2/any/blobs/${layer.digest}`])
      assert.equal(result.status, 200)
      assert.equal(sha256(result.body), sha256(decoy))
      assert.equal(proxy.requests().at(-1)?.route, 'direct')
    } finally {
      server.close()
    }
  })

  it('answers Range and HEAD through the forward proxy', async () => {
    const layer = image.layers[0]!
    const bytes = await readFile(layer.path)
    const ranged = await curl(work, ['-x', proxy.url, '-r', '1000-1999', `${registry.url}/v2/${repo}/blobs/${layer.digest}`])
    assert.equal(ranged.status, 206)
    assert.deepEqual(ranged.body, bytes.subarray(1000, 2000))

    const head = await curl(work, ['-x', proxy.url, '-I', `${registry.url}/v2/${repo}/blobs/${layer.digest}`])
    assert.equal(head.status, 200)
    assert.match(head.headers, new RegExp(`content-length: ${layer.size}`, 'i'))
  })

  it('passes manifests through the forward proxy', async () => {
    const result = await curl(work, ['-x', proxy.url, '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', `${registry.url}/v2/${repo}/manifests/v1`])
    assert.equal(result.status, 200)
    assert.deepEqual(result.body, image.manifestBytes)
    assert.equal(proxy.requests().at(-1)?.route, 'direct')
  })

  it('tunnels CONNECT without interception', async () => {
    const layer = image.layers[1]!
    const result = await curl(work, ['-p', '-x', proxy.url, `${registry.url}/v2/${repo}/blobs/${layer.digest}`])
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.status, 200)
    assert.equal(sha256(result.body), layer.digest)
    // The tunnel's line is written when curl closes it.
    for (let i = 0; i < 50 && !proxy.requests().some(line => line.method === 'CONNECT'); i++) await new Promise(resolve => setTimeout(resolve, 20))
    const tunnel = proxy.requests().find(line => line.method === 'CONNECT')
    assert.equal(tunnel?.route, 'tunnel')
    assert.equal(tunnel?.url, registry.host)
    assert.ok(Number(tunnel?.bytes) > layer.size)
  })

  it('rejects a malformed CONNECT target with 400', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(proxy.server.address.port, '127.0.0.1', () => { socket.write('CONNECT not-a-target HTTP/1.1\r\nHost: not-a-target\r\n\r\n') })
      const chunks: Buffer[] = []
      socket.on('data', chunk => chunks.push(chunk))
      socket.on('end', () => { resolve(Buffer.concat(chunks).toString()) })
      socket.on('error', reject)
    })
    assert.match(answer, /^HTTP\/1\.1 400 /)
    assert.match(answer, /invalid CONNECT target "not-a-target"/)
  })
})

describe('proxy HTTPS interception with curl', () => {
  let registry: TestRegistry
  let image: TestImage
  let work: string
  let proxyCa: { cert: string, key: string }
  let registryCaFile: string
  const repo = 'library/secure'

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'dfnode-proxy-hijack-'))
    // The registry's own CA and certificate, unknown to the system store.
    const registryCa = await createCa('test registry CA', 30)
    const leaf = await new LeafCertificates(registryCa).issue('127.0.0.1')
    await writeFile(join(work, 'registry.crt'), leaf.cert)
    await writeFile(join(work, 'registry.key'), leaf.key)
    registryCaFile = join(work, 'registry-ca.crt')
    await writeFile(registryCaFile, registryCa.cert)
    registry = await TestRegistry.start({ tls: { cert: join(work, 'registry.crt'), key: join(work, 'registry.key') } })

    image = await buildImage(join(work, 'image'), [1024 * 1024])
    const { Agent } = await import('undici')
    const dispatcher = new Agent({ connect: { ca: registryCa.cert } })
    await pushImage(registry.url, repo, 'v1', image, {}, dispatcher)
    await dispatcher.close()

    proxyCa = await generateCa({ out: join(work, 'proxy-ca') })
  })

  after(async () => {
    await registry?.stop()
    await rm(work, { recursive: true, force: true })
  })

  it('intercepts HTTPS to a listed host and serves blobs through the blob source', async () => {
    const proxy = await TestProxy.start({ hijackHttps: true, caCert: proxyCa.cert, caKey: proxyCa.key, hijack: [{ host: '^127\\.0\\.0\\.1:', ca: registryCaFile }] })
    try {
      const layer = image.layers[0]!
      const url = `${registry.url}/v2/${repo}/blobs/${layer.digest}`
      const result = await curl(work, ['-x', proxy.url, '--cacert', proxyCa.cert, url])
      assert.equal(result.code, 0, result.stderr)
      assert.equal(result.status, 200)
      assert.equal(sha256(result.body), layer.digest)
      const line = proxy.requests().find(entry => entry.mode === 'intercept' && String(entry.url).endsWith(layer.digest))
      assert.equal(line?.route, 'p2p')

      const manifest = await curl(work, ['-x', proxy.url, '--cacert', proxyCa.cert, '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', `${registry.url}/v2/${repo}/manifests/v1`])
      assert.equal(manifest.status, 200)
      assert.deepEqual(manifest.body, image.manifestBytes)

      // A client that does not trust the proxy's CA refuses the interception.
      const untrusted = await curl(work, ['-x', proxy.url, url])
      assert.notEqual(untrusted.code, 0)
    } finally {
      await proxy.stop()
    }
  })

  it('times out slow intercepted clients', async () => {
    const proxy = await TestProxy.start({ hijackHttps: true, caCert: proxyCa.cert, caKey: proxyCa.key, hijack: [{ host: '^127\\.0\\.0\\.1:', ca: registryCaFile }], headersTimeoutMs: 1000 })
    try {
      const { port } = proxy.server.address
      const tunnel = async (): Promise<Socket> => {
        const socket = connect(port, '127.0.0.1')
        socket.write(`CONNECT ${registry.host} HTTP/1.1\r\nHost: ${registry.host}\r\n\r\n`)
        const [reply] = await once(socket, 'data') as [Buffer]
        assert.match(reply.toString(), /^HTTP\/1\.1 200 /)
        return socket
      }
      const closedWithin = async (socket: Socket, ms: number): Promise<boolean> => {
        if (socket.destroyed) return true
        const timer = setTimeout(() => { socket.emit('timed-out') }, ms)
        const [event] = await Promise.race([once(socket, 'close').then(() => ['close']), once(socket, 'timed-out').then(() => ['timed-out'])])
        clearTimeout(timer)
        return event === 'close'
      }

      // A client that never starts its TLS handshake is disconnected.
      const silent = await tunnel()
      silent.on('error', () => {})
      assert.equal(await closedWithin(silent, 5000), true, 'a tunnel without a TLS handshake stayed open')

      // A client that never finishes its request headers gets 408.
      const raw = await tunnel()
      const secure = tlsConnect({ socket: raw, ca: await readFile(proxyCa.cert, 'utf8'), servername: '127.0.0.1' })
      await once(secure, 'secureConnect')
      const received: Buffer[] = []
      secure.on('data', (chunk: Buffer) => { received.push(chunk) })
      secure.on('error', () => {})
      secure.write(`GET /v2/ HTTP/1.1\r\nHost: ${registry.host}\r\n`)
      assert.equal(await closedWithin(secure, 5000), true, 'a client with unfinished headers stayed connected')
      assert.match(Buffer.concat(received).toString(), /^HTTP\/1\.1 408 /)

      // A client whose handshake ended keeps its connection past the handshake time limit.
      const keepAlive = tlsConnect({ socket: await tunnel(), ca: await readFile(proxyCa.cert, 'utf8'), servername: '127.0.0.1' })
      await once(keepAlive, 'secureConnect')
      const responses: Buffer[] = []
      keepAlive.on('data', (chunk: Buffer) => { responses.push(chunk) })
      for (let i = 0; i < 3; i++) {
        keepAlive.write(`GET /v2/ HTTP/1.1\r\nHost: ${registry.host}\r\n\r\n`)
        await new Promise(resolve => setTimeout(resolve, 700))
      }
      assert.equal(keepAlive.destroyed, false)
      assert.equal(Buffer.concat(responses).toString().match(/HTTP\/1\.1 200 /g)?.length, 3)
      keepAlive.destroy()
    } finally {
      await proxy.stop()
    }
  })

  it('verifies the upstream certificate of an intercepted host', async () => {
    const proxy = await TestProxy.start({ hijackHttps: true, caCert: proxyCa.cert, caKey: proxyCa.key, hijack: [{ host: '^127\\.0\\.0\\.1:' }] })
    try {
      const result = await curl(work, ['-x', proxy.url, '--cacert', proxyCa.cert, `${registry.url}/v2/`])
      assert.equal(result.status, 502)
      assert.match(result.body.toString(), /certificate/i)
    } finally {
      await proxy.stop()
    }
  })

  it('skips upstream verification for an insecure host', async () => {
    const proxy = await TestProxy.start({ hijackHttps: true, caCert: proxyCa.cert, caKey: proxyCa.key, hijack: [{ host: '^127\\.0\\.0\\.1:', insecure: true }] })
    try {
      const result = await curl(work, ['-x', proxy.url, '--cacert', proxyCa.cert, `${registry.url}/v2/`])
      assert.equal(result.status, 200)
    } finally {
      await proxy.stop()
    }
  })

  it('tunnels hosts that are not listed', async () => {
    const proxy = await TestProxy.start({ hijackHttps: true, caCert: proxyCa.cert, caKey: proxyCa.key, hijack: [{ host: '^registry\\.example\\.com:' }] })
    try {
      const result = await curl(work, ['-x', proxy.url, '--cacert', registryCaFile, `${registry.url}/v2/`])
      assert.equal(result.code, 0, result.stderr)
      assert.equal(result.status, 200)
    } finally {
      await proxy.stop()
    }
  })
})
