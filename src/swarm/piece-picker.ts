/**
 * Choice of the next piece to request from a holder: pieces near a streaming
 * reader first, then rarest first, and duplicates of pieces already in flight
 * only in the end game, once the request in flight is overdue (the download
 * sets the wait).
 * Among equally rare pieces, those just after the stored prefix come first and
 * the rest in random order.
 */
import type { Source } from './sources.ts'

export interface PickerState {
  count: number
  /** Piece CIDs known (trusted) so far. */
  known: (index: number) => boolean
  local: (index: number) => boolean
  /** Requests in flight per piece. */
  inflight: (index: number) => number
  sources: Iterable<Source>
  /** Index a streaming reader waits for, or -1. */
  cursor: number
  /** First piece not stored yet: the content hash has read every piece before it. */
  frontier: number
  /** True once every missing piece is requested (see `endgameReached`). Only then may a piece be requested twice. */
  endgame: boolean
  /** Tells whether the requests in flight for a piece have run so long that the end game may request it again. */
  overdue: (index: number) => boolean
}

/** Pieces after the cursor that are fetched in index order before rarest-first applies. */
export const CURSOR_WINDOW = 8

/**
 * Pieces from the frontier on that win a tie in rarity. The content hash reads pieces in index
 * order, so a piece stored far ahead of the frontier waits to be hashed. With random tie-breaks
 * alone, a 1 GiB single-link transfer hashed most of its file after the last piece arrived. A
 * window instead of strict index order leaves peers that share holders different pieces to request.
 */
export const FRONTIER_WINDOW = 16

/** Most requests for one piece at once in the end game. */
export const ENDGAME_DUPLICATES = 2

/**
 * Tells whether the download is in its end game: every missing piece has been
 * requested from some holder. Before that, a second request for a piece only
 * costs a holder upload that a missing piece could have used. A piece that no
 * holder offers yet also keeps the end game off, because the swarm has not got it.
 * `requested` lists the pieces with a request in flight, so the check costs no
 * pass over all pieces.
 */
export function endgameReached (missing: number, requested: Iterable<number>, local: (index: number) => boolean): boolean {
  let requestedMissing = 0
  for (const index of requested) if (!local(index)) requestedMissing++
  return requestedMissing >= missing
}

/** Returns the piece to request from `source`, or undefined when it has nothing useful. */
export function pickPiece (source: Source, state: PickerState): number | undefined {
  const { count, known, local, inflight, cursor, frontier } = state
  const now = Date.now()
  const wanted = (index: number): boolean => !local(index) && known(index) && source.has.has(index) && !source.inflight.has(index) && !((source.deferred.get(index) ?? 0) > now)

  // A streaming reader's next pieces come first, in order.
  if (cursor >= 0) {
    for (let index = cursor; index < Math.min(count, cursor + CURSOR_WINDOW); index++) {
      if (wanted(index) && inflight(index) === 0) return index
    }
  }

  // Rarest first among pieces not requested from any holder yet. A tie goes to a piece near the frontier.
  const others = [...state.sources].filter(other => other !== source && !other.banned)
  let best: number | undefined
  let bestRank = Infinity
  let ties = 0
  let missing = 0
  for (const index of source.has) {
    if (!local(index)) missing++
    if (!wanted(index) || inflight(index) > 0) continue
    let rarity = 1
    for (const other of others) if (other.has.has(index)) rarity++

    // A supernode's upload is the scarcest: leave it the pieces no peer has.
    if (source.supernode && others.some(other => !other.supernode && other.has.has(index))) rarity += 1000

    const rank = 2 * rarity + (index < frontier + FRONTIER_WINDOW ? 0 : 1)
    if (rank < bestRank) {
      best = index
      bestRank = rank
      ties = 1
    } else if (rank === bestRank && Math.random() * ++ties < 1) {
      best = index
    }
  }
  if (best != null || missing === 0 || !state.endgame) return best

  // End game: every missing piece is in flight, so copy the least requested of those overdue.
  let endgame: number | undefined
  let fewest = ENDGAME_DUPLICATES
  for (const index of source.has) {
    if (!wanted(index) || !state.overdue(index)) continue
    const requests = inflight(index)
    if (requests < fewest) {
      endgame = index
      fewest = requests
    }
  }
  return endgame
}
