/**
 * What a pool says about itself: `stats()` per host and worker, `hosts`,
 * and the `detail` of the events it dispatches (`hostup`, `hostdown`,
 * `workerexit`), and how the pool fills the first two from its hosts.
 *
 * @module
 */
import type { WorkerCounters } from '../session.ts'
import type { Host, Hosts } from './hosts.ts'

/** Counts of one worker process (its slot: they add up across the processes that filled it). */
export interface WorkerStats extends WorkerCounters {
  /** The worker's index on its host. */
  index: number
  /** True while a worker process is running in this slot. */
  up: boolean
  /** Its process id on the host, while it is up. */
  pid: number | undefined
  /** Calls in flight now (a streaming call counts until its stream ends). */
  inFlight: number
  /**
   * Bytes this side keeps to send again should the connection drop, and the
   * most it kept, for its current worker process (0 where sessions do not
   * resume: see `PoolOptions.resumeWindow`).
   */
  resumeBytes: number
  resumeBytesPeak: number
  /** Why the last start of a worker in this slot failed, while none runs there (it is started again after a backoff). */
  error?: string
  /** Set while the worker starting in this slot waits in a scheduler's queue: `queued by the scheduler (job 12)`. */
  queued?: string
}

/** What `Pool.stats()` says about one host. */
export interface HostStats {
  /** The host as the pool names it. */
  name: string
  /** True when it is connected and has workers. */
  up: boolean
  /** Why it is down, when it is. */
  error?: string
  /** Times its dropped connection was resumed (see `PoolOptions.resumeWindow`). */
  resumes: number
  /** Milliseconds it spent disconnected with calls waiting to resume (up to now, during an outage). */
  disconnectedMs: number
  /** Its worker slots. */
  workers: WorkerStats[]
}

/** What `Pool.stats()` returns. */
export interface PoolStats {
  /** Each host, in the order given. */
  hosts: HostStats[]
  /** Calls waiting for a free worker (see `PoolOptions.concurrency`). */
  queued: number
}

/** The `detail` of a pool's `hostup` and `hostdown` events. */
export interface HostEventDetail {
  /** The host as the pool names it. */
  host: string
  /** Why it went down (`hostdown`). */
  error?: Error
  /** True on a `hostup` that ends an outage its calls survived: they resumed where they were. */
  resumed?: boolean
}

/** The events a pool dispatches, by type. */
export interface PoolEventMap {
  /** A host connected (or came back). */
  hostup: CustomEvent<HostEventDetail>
  /** A host's connection dropped, or an attempt to reach it failed. */
  hostdown: CustomEvent<HostEventDetail>
  /** A worker process ended (died, was replaced, or its connection dropped). */
  workerexit: CustomEvent<WorkerExitDetail>
}

/** The `detail` of a pool's `workerexit` event. */
export interface WorkerExitDetail {
  /** The host as the pool names it. */
  host: string
  /** The worker's index on its host. */
  worker: number
  /** Its process id on the host, if it had said hello. */
  pid: number | undefined
  /** Why it ended (a `TransportError`). */
  error: Error
}

/** What `Pool.hosts` says about one host. */
export interface HostStatus {
  /** The host as given (`local` for the embedded pool). */
  name: string
  /** True when it is connected and has workers. */
  up: boolean
  /** Its worker processes (0 until it first connected). */
  workers: number
  /** Why it is down, when it is. */
  error?: Error
}

/** Why a host is down, for `stats()`. */
function whyDown(h: Host): string {
  if (h.resuming.size > 0) return `its connection dropped; its calls wait to resume${h.error ? ` (${h.error.message})` : ''}`
  if (h.error) return h.error.message
  return h.slots.length > 0 ? 'its connection was lost' : 'not connected'
}

/** Counts per host and worker, as `Pool.stats()` gives them. */
export function poolStats(hosts: Hosts, queued: number): PoolStats {
  return {
    queued,
    hosts: hosts.all.map((h) => ({
      name: h.transport.host,
      up: hosts.isUp(h),
      ...(hosts.isUp(h) ? {} : { error: whyDown(h) }),
      resumes: h.resumes,
      disconnectedMs: h.disconnectedMs + (h.downSince ? Date.now() - h.downSince : 0),
      workers: h.slots.map((s) => ({
        index: s.index,
        up: s.session?.usable ?? false,
        pid: s.session?.usable ? s.session.pid : undefined,
        inFlight: s.session?.load ?? 0,
        resumeBytes: s.session?.resumeKept.now ?? 0,
        resumeBytesPeak: s.session?.resumeKept.peak ?? 0,
        ...s.counters,
        ...(s.error && !s.session?.usable ? { error: s.error.message } : {}),
        ...(s.pending?.queuedJob !== undefined ? { queued: `queued by the scheduler (job ${s.pending.queuedJob})` } : {}),
      })),
    })),
  }
}

/** The hosts, as `Pool.hosts` gives them. */
export function hostStatuses(hosts: Hosts): HostStatus[] {
  return hosts.all.map((h) => ({ name: h.transport.host, up: h.transport.up && h.slots.length > 0, workers: h.slots.length, ...(h.error ? { error: h.error } : {}) }))
}
