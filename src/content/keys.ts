/**
 * Keys of download tasks: the content CID when the digest is known (from the
 * request or the URL path), otherwise a URL key.
 */
import type { CID } from 'multiformats/cid'
import { digestToCid, urlKey } from './ids.ts'
import { DEFAULT_QUERY_FILTER, digestFromBlobPath, normaliseUrl, parseHttpUrl } from './url.ts'

export interface TaskKey {
  key: CID
  /** Content CID the bytes must hash to, when known before the download. */
  expected?: CID
}

/** Computes the key of a request; throws UsageError on a bad URL or digest. */
export async function taskKeyOf (url: string, digest?: string, filter: readonly string[] = DEFAULT_QUERY_FILTER): Promise<TaskKey> {
  const parsed = parseHttpUrl(url)
  const known = digest ?? digestFromBlobPath(parsed.pathname)
  if (known != null) {
    const cid = digestToCid(known)
    return { key: cid, expected: cid }
  }
  return { key: await urlKey(normaliseUrl(parsed, filter)) }
}
