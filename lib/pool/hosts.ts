/**
 * The hosts of a pool and their lifecycle: connecting each (one attempt at
 * a time), creating its worker slots the first time, trying a host that is
 * down again with backoff, saying `hostup` and `hostdown`, and why no host
 * can take a call. The slots themselves are dispatch's (dispatch.ts).
 *
 * @module
 */
import { TransportError } from '../errors.ts'
import type { Session, WorkerCounters } from '../session.ts'
import type { Transport } from '../transports/transport.ts'

/** One worker slot of a host: its session, when one is up. */
export interface Slot {
  host: Host
  index: number
  session: Session | undefined
  starting: Promise<Session> | undefined
  /** The session being started, until it said hello (so `close()` can stop it). */
  pending: Session | undefined
  /** Calls handed this slot that have not registered with its session yet. */
  reserved: number
  counters: WorkerCounters
  /**
   * Starts of a worker in this slot that failed in a row; 0 once one starts.
   * A slot that failed is not handed calls: it is started again in the
   * background after a backoff (see Dispatch's `slotFailed`).
   */
  failures: number
  /** Why its last start failed. */
  error: Error | undefined
  /** Starts the slot again once its backoff has passed. */
  retryTimer: NodeJS.Timeout | undefined
  /** Calls waiting for this slot's worker to start, told when it turns out to wait in a scheduler's queue. */
  onQueued?: Set<() => void>
}

/** One host: its transport, and its worker slots once it has connected and said how many. */
export interface Host {
  transport: Transport
  slots: Slot[]
  connecting: Promise<void> | undefined
  /** Why the last connection attempt failed, if it did. */
  error: Error | undefined
  /** Connection attempts that failed in a row (for the backoff). */
  failures: number
  /** When the next attempt may be made (0: at once). */
  retryAt: number
  retryTimer: NodeJS.Timeout | undefined
  /** Whether it was last seen up, for `hostup`/`hostdown`. */
  wasUp: boolean
  /** Sessions whose channel dropped and that wait to be resumed: the host is down until none is left. */
  resuming: Set<Session>
  /** Outages its calls survived, and the ms they lasted; when the current one began. */
  resumes: number
  disconnectedMs: number
  downSince: number | undefined
}

/** While sessions wait to resume, a host that is down is tried again this often (not with the growing backoff). */
export const RESUME_RETRY_MS = 1000

/** The first wait before a host (or a worker slot) that is down is tried again; it doubles with each failure. */
export const RETRY_FIRST_MS = 1000
/** The longest wait between attempts at a host (or a worker slot) that is down. */
export const RETRY_MAX_MS = 30_000

/** The wait before attempt `failures + 1`: 1 s, 2 s, 4 s, … 30 s. */
export function backoff(failures: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.max(0, failures - 1))
}

function newCounters(): WorkerCounters {
  return { calls: 0, errors: 0, itemsIn: 0, bytesIn: 0, itemsOut: 0, bytesOut: 0, exits: 0 }
}

/** What the hosts tell the pool. */
export interface HostsOwner {
  /** True once the pool is closing: nothing is tried again, nothing is said. */
  readonly closed: boolean
  /** A host came up, or went down (`error` says why); `resumed`: it came back with its calls resumed. */
  changed(host: string, up: boolean, error: Error | undefined, resumed: boolean): void
  /** A host connected again: sessions waiting to resume may be given new channels. */
  reconnected(host: Host): void
  /** A host is up: calls waiting may go to it. */
  someUp(): void
  /** No host is up or connecting: calls waiting would wait for ever. */
  noneLeft(error: Error): void
}

/** The hosts of one pool. */
export class Hosts {
  readonly all: Host[]

  constructor(
    transports: Transport[],
    private readonly owner: HostsOwner,
  ) {
    this.all = transports.map((transport) => ({
      transport,
      slots: [],
      connecting: undefined,
      error: undefined,
      failures: 0,
      retryAt: 0,
      retryTimer: undefined,
      wasUp: false,
      resuming: new Set<Session>(),
      resumes: 0,
      disconnectedMs: 0,
      downSince: undefined,
    }))
  }

  isUp(h: Host): boolean {
    return h.slots.length > 0 && h.transport.up && !h.error && h.resuming.size === 0
  }

  /** A session of `host` lost its channel and waits to be resumed: the host is down until it is (or its window passes). */
  detached(host: Host, session: Session, error: Error): void {
    host.resuming.add(session)
    host.downSince ??= Date.now()
    this.dropped(host, error)
  }

  /** A session of `host` no longer waits: it resumed, or it died (its window passed). */
  settled(host: Host, session: Session, resumed: boolean): void {
    if (!host.resuming.delete(session) || host.resuming.size > 0) return
    if (host.downSince !== undefined) host.disconnectedMs += Date.now() - host.downSince
    host.downSince = undefined
    if (resumed) host.resumes++
    this.state(host, undefined, resumed)
  }

  /** Says `hostup`/`hostdown` when a host's state changed, and tells the pool whether calls may go on waiting. */
  state(h: Host, error?: Error, resumed = false): void {
    if (this.owner.closed) return
    const up = this.isUp(h)
    if (up !== h.wasUp) {
      h.wasUp = up
      this.owner.changed(h.transport.host, up, up ? undefined : (error ?? h.error), up && resumed)
    }
    // Looked at on every change, not only when the host's state flips: a
    // host that went down while reconnecting stays down when the attempt
    // fails, and the calls waiting for it must learn then.
    if (up) this.owner.someUp()
    else if (!this.all.some((x) => this.isUp(x) || x.connecting || x.resuming.size > 0)) this.owner.noneLeft(this.noHostError())
  }

  /** Why no host can take a call: each host named, with why it is down. */
  noHostError(): Error {
    const only = this.all.length === 1 ? this.all[0]! : undefined
    if (only?.error) return only.error
    const why = (h: Host) => h.error?.message ?? (h.slots.length > 0 && !h.transport.up ? 'its connection was lost' : 'not connected')
    const list = this.all.map((h) => `${h.transport.host}: ${why(h)}`).join('; ')
    const errors = this.all.map((h) => h.error).filter((e): e is Error => e !== undefined)
    return new TransportError(only ? `host ${list}` : `no host of the pool is up (${list})`, { cause: new AggregateError(errors, list), reason: 'lost' })
  }

  /** Connects a host (once at a time) and creates its slots the first time. */
  connect(host: Host): Promise<void> {
    return (host.connecting ??= (async () => {
      clearTimeout(host.retryTimer)
      host.retryTimer = undefined
      try {
        const n = await host.transport.connect()
        if (!Number.isInteger(n) || n < 1) throw new RangeError(`host ${host.transport.host}: workers must be an integer >= 1, got ${String(n)}`)
        for (let i = host.slots.length; i < n; i++) {
          host.slots.push({ host, index: i, session: undefined, starting: undefined, pending: undefined, reserved: 0, counters: newCounters(), failures: 0, error: undefined, retryTimer: undefined })
        }
        // The host is back: slots whose workers failed to start while it was going are tried again at once.
        for (const slot of host.slots) {
          clearTimeout(slot.retryTimer)
          slot.retryTimer = undefined
          slot.failures = 0
        }
        host.error = undefined
        host.failures = 0
        host.retryAt = 0
        if (host.resuming.size > 0) this.owner.reconnected(host)
      } catch (err) {
        host.error = err as Error
        host.failures++
        this.retryLater(host)
        throw err
      } finally {
        host.connecting = undefined
        this.state(host)
      }
    })())
  }

  /**
   * The host's connection dropped (a worker died and the transport is not
   * up): it is down until a reconnection, tried at once (the calls queued
   * and the next ones wait for it). It starts before the host is said to be
   * down, so that queued calls are not failed for want of a host to wait for.
   */
  dropped(host: Host, error: Error): void {
    if (!host.connecting) this.connect(host).catch(() => {})
    this.state(host, error)
  }

  /** Stops every timer (the pool is closing). */
  stop(): void {
    for (const h of this.all) {
      clearTimeout(h.retryTimer)
      for (const slot of h.slots) clearTimeout(slot.retryTimer)
    }
  }

  /**
   * Tries a host that is down again in the background, waiting longer after
   * each failure (1 s, 2 s, 4 s, … 30 s). Meanwhile calls go to the other
   * hosts, or fail at once when none is up.
   */
  private retryLater(host: Host): void {
    if (this.owner.closed) return
    const wait = host.resuming.size > 0 ? RESUME_RETRY_MS : backoff(host.failures)
    host.retryAt = Date.now() + wait
    clearTimeout(host.retryTimer)
    host.retryTimer = setTimeout(() => {
      host.retryTimer = undefined
      if (!this.owner.closed) this.connect(host).catch(() => {})
    }, wait)
    // Retrying a host must not keep the process alive on its own.
    host.retryTimer.unref()
  }
}
