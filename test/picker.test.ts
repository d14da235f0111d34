/**
 * Piece choice: reader window, rarest first, supernode last, end game.
 * The picker is a pure function of its state, so plain Source objects show every case.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { peerIdFromString } from '@libp2p/peer-id'
import { FRONTIER_WINDOW, endgameReached, pickPiece, type PickerState } from '../src/swarm/piece-picker.ts'
import { Source } from '../src/swarm/sources.ts'

const IDS = [
  '12D3KooWE4mk8By1E1k4u71zKCKYHNczggLTJ3LDsnmaLS6xQRAQ',
  '12D3KooWCRZJmLh7SZ7Ec8923N9rp7sL3KSZ7RwrnCtQQP7EWv5x',
  '12D3KooWJXgwWLbsUiLAxAHPkSN9gASMopKbHaq13reS3j7BrgXA'
]

function source (index: number, has: number[], supernode = false): Source {
  const created = new Source(peerIdFromString(IDS[index]!), supernode)
  for (const piece of has) created.has.add(piece)
  return created
}

function state (sources: Source[], count: number, options: { local?: number[], inflight?: Record<number, number>, cursor?: number, frontier?: number, unknown?: number[], recent?: number[] } = {}): PickerState {
  const local = (index: number): boolean => (options.local ?? []).includes(index)
  const requested = Object.entries(options.inflight ?? {}).filter(([, requests]) => requests > 0).map(([index]) => Number(index))
  return {
    count,
    known: index => !(options.unknown ?? []).includes(index),
    local,
    inflight: index => options.inflight?.[index] ?? 0,
    sources,
    cursor: options.cursor ?? -1,
    frontier: options.frontier ?? 0,
    endgame: endgameReached(count - (options.local ?? []).length, requested, local),
    overdue: index => !(options.recent ?? []).includes(index)
  }
}

describe('piece picker', () => {
  it('takes the rarest piece', () => {
    const a = source(0, [0, 1, 2])
    const b = source(1, [0, 1])
    const c = source(2, [0])
    assert.equal(pickPiece(a, state([a, b, c], 3)), 2)
  })

  it('skips local, unknown and requested pieces', () => {
    const a = source(0, [0, 1, 2, 3])
    assert.equal(pickPiece(a, state([a], 4, { local: [0], unknown: [1], inflight: { 2: 1 } })), 3)
  })

  it('serves the reader window first', () => {
    const a = source(0, [0, 5, 6])
    const b = source(1, [0])
    assert.equal(pickPiece(a, state([a, b], 10, { cursor: 5 })), 5)
  })

  it('breaks rarity ties near frontier', () => {
    const count = 4 * FRONTIER_WINDOW
    const all = Array.from({ length: count }, (_, index) => index)
    const a = source(0, all)
    const frontier = FRONTIER_WINDOW
    const picked = new Set<number>()
    for (let round = 0; round < 200; round++) {
      const index = pickPiece(a, state([a], count, { frontier, local: all.slice(0, frontier) }))!
      assert.ok(index >= frontier, `piece ${index} before the frontier ${frontier}`)
      assert.ok(index < frontier + FRONTIER_WINDOW, `piece ${index} after the window from ${frontier}`)
      picked.add(index)
    }
    assert.ok(picked.size > 1, 'ties within the window are broken at random')

    // Rarity still comes first: a piece that another holder lacks wins over the window.
    const b = source(1, all.filter(index => index !== count - 1))
    assert.equal(pickPiece(a, state([a, b], count, { frontier })), count - 1)
  })

  it('leaves peer-held pieces off the supernode', () => {
    const supernode = source(0, [0, 1], true)
    const peer = source(1, [0])
    assert.equal(pickPiece(supernode, state([supernode, peer], 2)), 1)
  })

  it('asks the supernode when nobody else has it', () => {
    const supernode = source(0, [0], true)
    const peer = source(1, [0])
    peer.banned = true
    assert.equal(pickPiece(supernode, state([supernode, peer], 1)), 0)
  })

  it('duplicates requests in the end game', () => {
    const a = source(0, [0, 1])
    assert.equal(pickPiece(a, state([a], 2, { local: [0], inflight: { 1: 1 } })), 1)
  })

  it('sends no duplicate while a missing piece is not requested', () => {
    const a = source(0, [0])
    const b = source(1, [0, 1])
    b.inflight.add(0)
    const before = state([a, b], 3, { inflight: { 0: 1 } })
    assert.equal(before.endgame, false)
    assert.equal(pickPiece(a, before), undefined)

    // No holder offers piece 2 yet, so the end game has not started.
    const offeredOnly = state([a, b], 3, { inflight: { 0: 1, 1: 1 } })
    assert.equal(offeredOnly.endgame, false)
    assert.equal(pickPiece(a, offeredOnly), undefined)

    const tail = state([a, b], 3, { local: [2], inflight: { 0: 1, 1: 1 } })
    assert.equal(tail.endgame, true)
    assert.equal(pickPiece(a, tail), 0)
  })

  it('counts only missing requested pieces', () => {
    assert.equal(endgameReached(2, [0, 1], () => false), true)
    assert.equal(endgameReached(2, [0, 1, 2], index => index === 0), true)
    assert.equal(endgameReached(2, [0, 1], index => index === 0), false)
    assert.equal(endgameReached(0, [], () => true), true)
  })

  it('copies only overdue pieces', () => {
    const a = source(0, [0, 1])
    const b = source(1, [0, 1])
    b.inflight.add(0)
    b.inflight.add(1)
    assert.equal(pickPiece(a, state([a, b], 3, { local: [2], inflight: { 0: 1, 1: 1 }, recent: [0] })), 1)
    assert.equal(pickPiece(a, state([a, b], 3, { local: [2], inflight: { 0: 1, 1: 1 }, recent: [0, 1] })), undefined)
  })

  it('caps end-game duplicates', () => {
    const a = source(0, [1])
    assert.equal(pickPiece(a, state([a], 2, { local: [0], inflight: { 1: 2 } })), undefined)
  })

  it('waits out a busy answer', () => {
    const a = source(0, [0, 1])
    a.deferred.set(1, Date.now() + 60_000)
    assert.equal(pickPiece(a, state([a], 2, { local: [0] })), undefined)
    a.deferred.set(1, Date.now() - 1)
    assert.equal(pickPiece(a, state([a], 2, { local: [0] })), 1)
  })

  it('returns nothing when done', () => {
    const a = source(0, [0, 1])
    assert.equal(pickPiece(a, state([a], 2, { local: [0, 1] })), undefined)
  })
})

describe('super-seeding', () => {
  it('hands a fresh piece to one peer', async () => {
    const { SuperSeeding } = await import('../src/supernode/super-seeding.ts')
    const { cidOfBytes } = await import('../src/content/ids.ts')
    const key = await cidOfBytes(new Uint8Array([1]))
    const connected = new Set(['a', 'b'])
    const seeding = new SuperSeeding({ graceMs: 60_000, isConnected: peer => connected.has(peer) })
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    assert.equal(seeding.decide(key, 0, 'b'), 'busy')
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    assert.equal(seeding.decide(key, 1, 'b'), 'serve')
    connected.delete('a')
    assert.equal(seeding.decide(key, 0, 'b'), 'serve')
  })

  it('serves copies while idle', async () => {
    const { SuperSeeding } = await import('../src/supernode/super-seeding.ts')
    const { cidOfBytes } = await import('../src/content/ids.ts')
    const key = await cidOfBytes(new Uint8Array([5]))
    let complete = true
    const seeding = new SuperSeeding({ graceMs: 60_000, completeGraceMs: 60_000, isComplete: () => complete })
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    assert.equal(seeding.decide(key, 1, 'a'), 'serve')

    // The upload to 'a' runs: a copy would delay it.
    assert.equal(seeding.decide(key, 0, 'b'), 'busy')

    // 'a' was served a moment ago, as in a swarm whose requests follow each other.
    seeding.finished(key, 0, 'a', true)
    seeding.finished(key, 1, 'a', true)
    assert.equal(seeding.decide(key, 0, 'b'), 'busy')

    // Nothing is sent for a while, but the content is still being cut: fresh pieces may need the upload.
    await new Promise(resolve => setTimeout(resolve, 150))
    complete = false
    assert.equal(seeding.decide(key, 0, 'b'), 'busy')
    complete = true
    assert.equal(seeding.decide(key, 0, 'b'), 'serve')

    // A peer that downloads alone is not held back by its own uploads.
    seeding.finished(key, 0, 'b', true)
    assert.equal(seeding.decide(key, 1, 'b'), 'serve')

    // Another peer waits while 'b' is served.
    assert.equal(seeding.decide(key, 0, 'c'), 'busy')
  })

  it('serves copies after the grace period', async () => {
    const { SuperSeeding } = await import('../src/supernode/super-seeding.ts')
    const { cidOfBytes } = await import('../src/content/ids.ts')
    const key = await cidOfBytes(new Uint8Array([2]))
    const seeding = new SuperSeeding({ graceMs: 0, pendingMs: 60_000 })
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    await new Promise(resolve => setTimeout(resolve, 5))
    // The grace period starts when the first upload finishes, not when it starts.
    assert.equal(seeding.decide(key, 0, 'b'), 'busy')
    seeding.finished(key, 0, 'a', true)
    await new Promise(resolve => setTimeout(resolve, 5))
    assert.equal(seeding.decide(key, 0, 'b'), 'serve')
  })

  it('holds copies during first uploads', async () => {
    const { SuperSeeding } = await import('../src/supernode/super-seeding.ts')
    const { cidOfBytes } = await import('../src/content/ids.ts')
    const key = await cidOfBytes(new Uint8Array([5]))
    let complete = false
    const seeding = new SuperSeeding({ graceMs: 0, completeGraceMs: 0, pendingMs: 60_000, isComplete: () => complete })
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    seeding.finished(key, 0, 'a', true)
    assert.equal(seeding.decide(key, 1, 'b'), 'serve')
    await new Promise(resolve => setTimeout(resolve, 5))
    // Piece 1 is on its way to its first peer, so the upload has no room for a copy of piece 0.
    assert.equal(seeding.decide(key, 0, 'c'), 'busy')
    complete = true
    assert.equal(seeding.decide(key, 0, 'c'), 'serve')
    complete = false
    seeding.finished(key, 1, 'b', true)
    await new Promise(resolve => setTimeout(resolve, 5))
    assert.equal(seeding.decide(key, 0, 'd'), 'serve')
  })

  it('serves again after a failed upload', async () => {
    const { SuperSeeding } = await import('../src/supernode/super-seeding.ts')
    const { cidOfBytes } = await import('../src/content/ids.ts')
    const key = await cidOfBytes(new Uint8Array([3]))
    const seeding = new SuperSeeding({ graceMs: 60_000, pendingMs: 60_000 })
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    assert.equal(seeding.decide(key, 0, 'b'), 'busy')
    seeding.finished(key, 0, 'a', false)
    assert.equal(seeding.decide(key, 0, 'b'), 'serve')
    assert.equal(seeding.decide(key, 0, 'c'), 'busy')
  })

  it('serves copies when an upload hangs', async () => {
    const { SuperSeeding } = await import('../src/supernode/super-seeding.ts')
    const { cidOfBytes } = await import('../src/content/ids.ts')
    const key = await cidOfBytes(new Uint8Array([4]))
    const seeding = new SuperSeeding({ graceMs: 60_000, pendingMs: 0 })
    assert.equal(seeding.decide(key, 0, 'a'), 'serve')
    await new Promise(resolve => setTimeout(resolve, 5))
    assert.equal(seeding.decide(key, 0, 'b'), 'serve')
  })
})
