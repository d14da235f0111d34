/**
 * Builds a multi-layer OCI image from random data (each layer an uncompressed
 * tar with one file), writes it as an OCI image layout directory, and pushes
 * it to a registry with plain HTTP uploads (monolithic POST + PUT).
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'

export const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json'
export const CONFIG_MEDIA_TYPE = 'application/vnd.oci.image.config.v1+json'
export const LAYER_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar'

export interface BlobFile {
  digest: string
  size: number
  /** File holding the blob, inside the layout's blobs/sha256/. */
  path: string
  mediaType: string
}

export interface TestImage {
  /** OCI image layout directory (usable as skopeo's `oci:<dir>`). */
  dir: string
  layers: BlobFile[]
  config: BlobFile
  manifest: BlobFile
  /** Manifest bytes as pushed. */
  manifestBytes: Buffer
}

/** Writes an image whose layers hold `layerSizes[i]` random bytes each, into `dir`. */
export async function buildImage (dir: string, layerSizes: readonly number[]): Promise<TestImage> {
  const blobs = join(dir, 'blobs', 'sha256')
  await mkdir(blobs, { recursive: true })

  const layers: BlobFile[] = []
  for (const [i, size] of layerSizes.entries()) {
    layers.push(await writeLayer(blobs, `layer-${i}.bin`, size))
  }

  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: { type: 'layers', diff_ids: layers.map(layer => layer.digest) }
  }))
  const configBlob = await writeBlob(blobs, config, CONFIG_MEDIA_TYPE)

  const manifestBytes = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    config: { mediaType: CONFIG_MEDIA_TYPE, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map(layer => ({ mediaType: LAYER_MEDIA_TYPE, digest: layer.digest, size: layer.size }))
  }))
  const manifest = await writeBlob(blobs, manifestBytes, MANIFEST_MEDIA_TYPE)

  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: MANIFEST_MEDIA_TYPE, digest: manifest.digest, size: manifest.size, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }]
  }))
  return { dir, layers, config: configBlob, manifest, manifestBytes }
}

/** Writes a blob with the given bytes into a layout's blobs directory. */
export async function writeBlob (blobs: string, bytes: Buffer, mediaType = 'application/octet-stream'): Promise<BlobFile> {
  const hex = createHash('sha256').update(bytes).digest('hex')
  const path = join(blobs, hex)
  await writeFile(path, bytes)
  return { digest: `sha256:${hex}`, size: bytes.length, path, mediaType }
}

/** Writes an uncompressed tar holding one file of `size` random bytes. */
async function writeLayer (blobs: string, name: string, size: number): Promise<BlobFile> {
  const temp = join(blobs, `.${name}.tmp`)
  const file = await open(temp, 'w')
  const hash = createHash('sha256')
  let position = 0
  const append = async (bytes: Buffer): Promise<void> => {
    hash.update(bytes)
    await file.write(bytes, 0, bytes.length, position)
    position += bytes.length
  }

  await append(tarHeader(name, size))
  for (let written = 0; written < size;) {
    const chunk = randomBytes(Math.min(4 * 1024 * 1024, size - written))
    await append(chunk)
    written += chunk.length
  }
  await append(Buffer.alloc((512 - (size % 512)) % 512 + 1024))
  await file.close()

  const hex = hash.digest('hex')
  const path = join(blobs, hex)
  const { rename } = await import('node:fs/promises')
  await rename(temp, path)
  return { digest: `sha256:${hex}`, size: (await stat(path)).size, path, mediaType: LAYER_MEDIA_TYPE }
}

/** A ustar header for a regular file. */
function tarHeader (name: string, size: number): Buffer {
  const header = Buffer.alloc(512)
  header.write(name, 0, 100, 'utf8')
  header.write('0000644\0', 100)
  header.write('0000000\0', 108)
  header.write('0000000\0', 116)
  header.write(size.toString(8).padStart(11, '0') + '\0', 124)
  header.write(Math.floor(Date.now() / 1000).toString(8).padStart(11, '0') + '\0', 136)
  header.write('        ', 148)
  header.write('0', 156)
  header.write('ustar\0', 257)
  header.write('00', 263)
  let checksum = 0
  for (const byte of header) checksum += byte
  header.write(checksum.toString(8).padStart(6, '0') + '\0 ', 148)
  return header
}

/** Pushes every blob and the manifest of `image` to `registryUrl` as `<repository>:<tag>`. */
export async function pushImage (registryUrl: string, repository: string, tag: string, image: TestImage, headers: Record<string, string> = {}, dispatcher?: import('undici').Dispatcher): Promise<void> {
  for (const blob of [...image.layers, image.config]) {
    await pushBlob(registryUrl, repository, blob, headers, dispatcher)
  }
  const response = await request(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    headers: { ...headers, 'content-type': MANIFEST_MEDIA_TYPE },
    body: image.manifestBytes,
    ...(dispatcher != null ? { dispatcher } : {})
  })
  const text = await response.body.text()
  if (response.statusCode !== 201) throw new Error(`push of manifest ${repository}:${tag} failed with ${response.statusCode}: ${text}`)
}

/** Uploads one blob: POST to start an upload, PUT with the whole body and the digest. */
export async function pushBlob (registryUrl: string, repository: string, blob: Pick<BlobFile, 'digest' | 'size' | 'path'>, headers: Record<string, string> = {}, dispatcher?: import('undici').Dispatcher): Promise<void> {
  const extra = dispatcher != null ? { dispatcher } : {}
  const started = await request(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers, ...extra })
  await started.body.dump()
  const location = started.headers.location
  if (started.statusCode !== 202 || typeof location !== 'string') throw new Error(`upload start for ${repository} failed with ${started.statusCode}`)
  const target = new URL(location, registryUrl)
  target.searchParams.set('digest', blob.digest)
  const put = await request(target, {
    method: 'PUT',
    headers: { ...headers, 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
    body: createReadStream(blob.path),
    ...extra
  })
  const text = await put.body.text()
  if (put.statusCode !== 201) throw new Error(`upload of ${blob.digest} to ${repository} failed with ${put.statusCode}: ${text}`)
}
