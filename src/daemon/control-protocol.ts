/**
 * The local control socket of a host daemon: `dfnode fetch` sends
 * POST /v1/fetch with a JSON body and reads the content back in order.
 */
import { join } from 'node:path'

/** File name of the control socket inside the data dir. */
export const CONTROL_SOCKET = 'dfnode.sock'

/** Returns the control socket path of a data dir. */
export function controlSocketPath (dataDir: string): string {
  return join(dataDir, CONTROL_SOCKET)
}

/** Body of POST /v1/fetch. */
export interface ControlFetchRequest {
  url: string
  digest?: string
  headers?: Record<string, string>
  filter?: string[]
}

/** Trailer carrying the outcome after the last body byte, as JSON: a ControlFetchResult or `{ error: ControlError }`. */
export const RESULT_TRAILER = 'x-dfnode-result'

/** Response header with the content size. */
export const SIZE_HEADER = 'x-dfnode-size'

export interface ControlFetchResult {
  key: string
  digest: string
  size: number
  fromSupernode: number
  fromPeers: number
  fromOrigin: number
  fromLocal: number
}

/** Error body of a failed request, as JSON. */
export interface ControlError {
  code: string
  message: string
  status?: number
}
