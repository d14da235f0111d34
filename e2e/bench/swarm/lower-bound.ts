/**
 * Lower bound T* on the time until the last of N peers has a file of F
 * bytes, from the link rates alone:
 *
 *   T* = max(F / u_origin, F / d_min, N·F / (u_origin + Σ u_peers))
 *
 * The origin must send every byte once, the slowest downloader must receive
 * F, and the N·F bytes the peers receive must all be uploaded by someone.
 * A supernode's upload is not in the sum, so a system that routes data
 * through one can in principle finish below T*.
 */

export interface LowerBoundInput {
  fileBytes: number
  originUploadMbit: number
  peerUploadMbit: readonly number[]
  peerDownloadMbit: readonly number[]
}

export interface LowerBound {
  seconds: number
  /** Which of the three terms is the largest. */
  limitedBy: 'origin upload' | 'slowest download' | 'total upload'
}

/** Returns T* in seconds; rates are Mbit/s (10^6 bit/s). */
export function lowerBound (input: LowerBoundInput): LowerBound {
  const bits = input.fileBytes * 8
  const peers = input.peerUploadMbit.length
  const origin = bits / (input.originUploadMbit * 1e6)
  const slowestDownload = bits / (Math.min(...input.peerDownloadMbit) * 1e6)
  const uploadSum = input.originUploadMbit + input.peerUploadMbit.reduce((sum, rate) => sum + rate, 0)
  const total = peers * bits / (uploadSum * 1e6)

  if (origin >= slowestDownload && origin >= total) return { seconds: origin, limitedBy: 'origin upload' }
  if (slowestDownload >= total) return { seconds: slowestDownload, limitedBy: 'slowest download' }
  return { seconds: total, limitedBy: 'total upload' }
}
