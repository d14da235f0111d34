/**
 * Finding holders: gossip HAVE messages on a topic per content, and provider
 * records on the DHT.
 */
import type { Message } from '@libp2p/gossipsub'
import type { PeerId, PeerInfo } from '@libp2p/interface'
import type { CID } from 'multiformats/cid'
import { multiaddr } from '@multiformats/multiaddr'
import type { Logger } from '../log.ts'
import type { DfnodeLibp2p } from '../p2p/node.ts'
import { decodeHave, encodeFrame } from './wire.ts'

/** Returns the gossip topic of a content. */
export function topicOf (key: CID): string {
  return `/dfnode/have/1/${key.toString()}`
}

export type HaveListener = (peer: PeerId, indexes: number[]) => void

/** Delay that batches the HAVE announcements of pieces verified close together, in ms. */
const ANNOUNCE_BATCH_MS = 50

/** Interval after which a sender's unchanged addresses are merged into the peer store again, in ms. */
const ADDRS_REFRESH_MS = 5 * 60_000

/** Senders whose announced addresses are remembered, oldest dropped first. */
const MAX_KNOWN_SENDERS = 4096

/** Provide calls that may run at once; the rest wait. */
const PROVIDE_CONCURRENCY = 4

/** Background provide calls that may run at once, and only while no other provide waits. */
const BACKGROUND_PROVIDE_CONCURRENCY = 1

/**
 * Minimum time between the starts of two background provides while the node transfers pieces, in ms.
 * Each is a DHT walk that costs every node it reaches some CPU time, which the transfer then lacks.
 */
const BUSY_PROVIDE_SPACING_MS = 5000

export class Discovery {
  private readonly node: DfnodeLibp2p
  private readonly logger: Logger
  private readonly listeners = new Map<string, Set<HaveListener>>()
  private readonly pendingHaves = new Map<string, number[]>()
  private readonly provided = new Set<string>()
  /** Addresses last merged into the peer store and when, per sender, so that repeats cost nothing. */
  private readonly knownAddrs = new Map<string, { addrs: string, at: number }>()
  private readonly provideQueue: CID[] = []
  private readonly backgroundQueue: CID[] = []
  private provideRunning = 0
  private backgroundRunning = 0
  private flushTimer?: NodeJS.Timeout
  private drainTimer?: NodeJS.Timeout
  /** Time the last background provide started, or the queue of them filled again after it was empty. */
  private lastBackgroundStart = 0
  private busy: () => boolean = () => false
  private stopped = false
  private readonly onMessage = (event: CustomEvent<Message>): void => { this.receive(event.detail) }

  constructor (node: DfnodeLibp2p, logger: Logger) {
    this.node = node
    this.logger = logger
  }

  start (): void {
    this.node.services.pubsub.addEventListener('message', this.onMessage)
  }

  stop (): void {
    this.stopped = true
    clearTimeout(this.flushTimer)
    clearTimeout(this.drainTimer)
    this.node.services.pubsub.removeEventListener('message', this.onMessage)
  }

  /** Subscribes to HAVE messages of a content; returns the function that unsubscribes. */
  watch (key: CID, listener: HaveListener): () => void {
    const topic = topicOf(key)
    let set = this.listeners.get(topic)
    if (set == null) {
      set = new Set()
      this.listeners.set(topic, set)
      this.node.services.pubsub.subscribe(topic)
    }
    set.add(listener)
    return () => {
      set.delete(listener)
      if (set.size === 0 && this.listeners.get(topic) === set) {
        this.listeners.delete(topic)
        this.node.services.pubsub.unsubscribe(topic)
      }
    }
  }

  /** Joins a content's topic without listening, so that this node relays its HAVE messages. */
  relay (key: CID): void {
    const topic = topicOf(key)
    if (!this.listeners.has(topic)) {
      this.listeners.set(topic, new Set())
      this.node.services.pubsub.subscribe(topic)
    }
  }

  /** Announces verified pieces of a content by gossip, batched over a few ms. */
  announce (key: CID, indexes: number[]): void {
    const topic = topicOf(key)
    const list = this.pendingHaves.get(topic) ?? []
    list.push(...indexes)
    this.pendingHaves.set(topic, list)
    this.flushTimer ??= setTimeout(() => { this.flush() }, ANNOUNCE_BATCH_MS)
  }

  /** Announces a content on the DHT, once per CID and without waiting for it. */
  provide (cid: CID): void {
    if (!this.markProvided(cid)) return
    this.provideQueue.push(cid)
    this.drainProvides()
  }

  /**
   * Announces CIDs that no download waits for (a supernode's piece CIDs) on
   * the DHT, one at a time and only while no `provide` call waits. Each
   * announcement is a DHT walk plus a record sent to the closest peers, so a
   * batch of them would otherwise compete with the transfer.
   */
  provideInBackground (cids: readonly CID[]): void {
    if (this.backgroundQueue.length === 0 && this.backgroundRunning === 0) this.lastBackgroundStart = Date.now()
    for (const cid of cids) {
      if (this.markProvided(cid)) this.backgroundQueue.push(cid)
    }
    this.drainProvides()
  }

  /**
   * Installs the check that returns true while the node transfers pieces. Background provides then
   * start at most every BUSY_PROVIDE_SPACING_MS, counted from the first one queued.
   */
  setBusyCheck (busy: () => boolean): void {
    this.busy = busy
  }

  /** Finds holders of a content on the DHT, bounded by the signal. */
  async * findProviders (key: CID, signal: AbortSignal): AsyncGenerator<PeerInfo> {
    try {
      for await (const provider of this.node.contentRouting.findProviders(key, { signal })) {
        if (provider.id.equals(this.node.peerId)) continue
        yield provider
      }
    } catch (err) {
      if (!signal.aborted) this.logger.debug({ err, key: key.toString() }, 'provider lookup failed')
    }
  }

  private flush (): void {
    this.flushTimer = undefined
    if (this.stopped) return
    const addrs = this.node.getMultiaddrs().map(address => address.toString())
    for (const [topic, indexes] of this.pendingHaves) {
      this.node.services.pubsub.publish(topic, encodeFrame({ i: indexes, addrs })).catch((err: Error) => {
        this.logger.debug({ err, topic }, 'have announcement not published')
      })
    }
    this.pendingHaves.clear()
  }

  /** Records a CID as provided, and returns false if it already was. */
  private markProvided (cid: CID): boolean {
    const id = cid.toString()
    if (this.provided.has(id)) return false
    this.provided.add(id)
    return true
  }

  private drainProvides (): void {
    while (!this.stopped && this.provideRunning < PROVIDE_CONCURRENCY && this.provideQueue.length > 0) {
      this.provideRunning++
      this.runProvide(this.provideQueue.shift()!, () => { this.provideRunning-- })
    }
    while (!this.stopped && this.provideRunning === 0 && this.provideQueue.length === 0 &&
      this.backgroundRunning < BACKGROUND_PROVIDE_CONCURRENCY && this.backgroundQueue.length > 0) {
      const wait = this.lastBackgroundStart + BUSY_PROVIDE_SPACING_MS - Date.now()
      if (wait > 0 && this.busy()) {
        this.drainLater(wait)
        return
      }
      this.lastBackgroundStart = Date.now()
      this.backgroundRunning++
      this.runProvide(this.backgroundQueue.shift()!, () => { this.backgroundRunning-- })
    }
  }

  /** Calls drainProvides after `ms`, unless a call is already scheduled. */
  private drainLater (ms: number): void {
    if (this.drainTimer != null) return
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined
      this.drainProvides()
    }, ms)
    this.drainTimer.unref()
  }

  private runProvide (cid: CID, done: () => void): void {
    this.node.contentRouting.provide(cid, { signal: AbortSignal.timeout(60_000) })
      .catch((err: Error) => { this.logger.debug({ err, cid: cid.toString() }, 'DHT provide failed') })
      .finally(() => {
        done()
        this.drainProvides()
      })
  }

  private receive (message: Message): void {
    const set = this.listeners.get(message.topic)
    if (set == null || message.type !== 'signed') return
    let have
    try {
      have = decodeHave(message.data)
    } catch (err) {
      this.logger.debug({ err, peer: message.from.toString() }, 'invalid have message dropped')
      return
    }

    // Remember where the sender listens, so that a dial needs no DHT lookup.
    const sender = message.from.toString()
    const addrs = have.addrs?.join(' ') ?? ''
    const known = this.knownAddrs.get(sender)
    const now = Date.now()
    if (have.addrs != null && have.addrs.length > 0 && (known?.addrs !== addrs || now - known.at > ADDRS_REFRESH_MS)) {
      this.knownAddrs.delete(sender)
      this.knownAddrs.set(sender, { addrs, at: now })
      if (this.knownAddrs.size > MAX_KNOWN_SENDERS) this.knownAddrs.delete(this.knownAddrs.keys().next().value!)
      try {
        const multiaddrs = have.addrs.map(address => multiaddr(address))
        void this.node.peerStore.merge(message.from, { multiaddrs }).catch(() => {})
      } catch {
        this.logger.debug({ peer: message.from.toString() }, 'have message with invalid addresses')
      }
    }
    for (const listener of set) listener(message.from, have.i)
  }
}
