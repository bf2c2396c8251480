/**
 * Dispatch: which worker takes a call. The least-loaded worker of the hosts
 * that are up (a streaming call counts until its stream ends), optionally
 * capped per worker (`concurrency`) with a FIFO queue that a call leaves
 * when it settles while waiting; worker slots started on demand, a slot
 * whose start failed backed off and restarted in the background, and the
 * sessions of the workers, whose death, retirement and calls it follows.
 *
 * @module
 */
import { FarpipeError, TransportError } from '../errors.ts'
import type { Limits } from '../options.ts'
import { Session, type LogEntry } from '../session.ts'
import { backoff, type Host, type Hosts, type Slot } from './hosts.ts'
import { Resumer } from './resume.ts'
import type { WorkerExitDetail } from './stats.ts'

/** A call waiting for a free worker: handed a slot (reserved for it) when one is. */
interface Waiter {
  host: Host | undefined
  avoid: string | undefined
  resolve(slot: Slot): void
  reject(error: unknown): void
}

/** What dispatch needs from the pool. */
export interface DispatchOwner {
  /** True once the pool is closing. */
  readonly closed: boolean
  /** Worker slots in the pool (all hosts). */
  readonly size: number
  /** Holds the process open until `work` settles (a worker starting). */
  busy(work: Promise<unknown>): void
  /** A worker process ended. */
  workerExit(detail: WorkerExitDetail): void
}

/** How the pool's sessions are made. */
export interface SessionSettings {
  cacheDir: string | undefined
  limits: Limits
  onLog: ((entry: LogEntry) => void) | undefined
  startTimeout: number | undefined
  /** Ms a session on a host that can reach its workers again waits to be resumed (0: never). */
  resumeWindow: number
}

/** The calls waiting, and the worker slots they go to. */
/** Why a call handed a slot goes back to be handed another: the slot's worker waits in a scheduler's queue. */
const QUEUED = Symbol('queued')

export class Dispatch {
  private readonly waiters: Waiter[] = []
  private turn = 0
  /** Workers retired because a call on them would not stop; ended once their other calls are done, destroyed by `close()`. */
  readonly retired = new Set<Session>()
  private readonly resumer: Resumer

  constructor(
    private readonly owner: DispatchOwner,
    private readonly hosts: Hosts,
    private readonly concurrency: number,
    private readonly sessions: SessionSettings,
  ) {
    this.resumer = new Resumer(hosts, {
      get closed() {
        return owner.closed
      },
      drain: () => this.drain(),
    })
  }

  /** `host` is connected again: its sessions that wait are resumed. */
  reconnected(host: Host): void {
    this.resumer.reconnected(host)
  }

  /** Calls waiting for a free worker. */
  get queued(): number {
    return this.waiters.length
  }

  /** Fails every waiting call with `error` (no host is left, or the pool closed). */
  rejectAll(error: unknown): void {
    for (const w of this.waiters.splice(0)) w.reject(error)
  }

  /**
   * The least-loaded worker (of `host`, or of any host; away from `avoid`
   * while another host is up), started if its slot is empty. When every
   * worker has `concurrency` calls, the call waits in order for one to be
   * free, and leaves the queue when `withdrawn` aborts. Hosts that are down
   * are skipped while others are up (and retried in the background); when
   * none is up, those that may be tried now are reconnected and the call
   * waits for that, else it fails at once with an error that names each
   * host and why.
   *
   * A worker that fails to start does not fail the call handed to it while
   * another can take it: its slot backs off (see {@link slotFailed}) and
   * the call is dispatched again. It fails when no worker runs or can be
   * started on the hosts it may use.
   */
  async pick(host: Host | undefined, avoid: string | undefined, withdrawn: AbortSignal): Promise<Session> {
    const hosts = host ? [host] : this.hosts.all
    for (let tries = 0; ; tries++) {
      if (withdrawn.aborted) throw withdrawn.reason
      if (!hosts.some((h) => this.hosts.isUp(h))) {
        const now = Date.now()
        const attempts = hosts.filter((h) => h.connecting || h.retryAt <= now).map((h) => this.hosts.connect(h))
        await Promise.allSettled(attempts)
        // A host whose calls wait to resume will be back within its window: new calls wait for it too.
        if (!hosts.some((h) => this.hosts.isUp(h) || h.resuming.size > 0)) throw host ? (host.error ?? this.hosts.noHostError()) : this.hosts.noHostError()
      }
      let slot = this.freeSlot(host, avoid)
      if (slot) slot.reserved++
      else {
        const broken = this.unserviceable(hosts)
        if (broken) throw broken
        slot = await this.queue(host, avoid, withdrawn)
      }
      try {
        return await this.sessionUnlessQueued(slot)
      } catch (err) {
        slot.reserved--
        this.drain()
        // Its worker waits in a scheduler's queue: the call goes back to be handed a worker that runs (or waits for one).
        if (err === QUEUED) continue
        // That slot backs off now; another worker may take the call.
        if (this.owner.closed || withdrawn.aborted || tries >= this.owner.size) throw err
      }
    }
  }

  /** Waits in the queue for a slot (reserved for the call when handed out); leaves it when `withdrawn` aborts. */
  private queue(host: Host | undefined, avoid: string | undefined, withdrawn: AbortSignal): Promise<Slot> {
    return new Promise<Slot>((resolve, reject) => {
      const onWithdraw = () => {
        const at = this.waiters.indexOf(waiter)
        if (at >= 0) this.waiters.splice(at, 1)
        reject(withdrawn.reason)
      }
      const waiter: Waiter = {
        host,
        avoid,
        resolve: (slot) => {
          withdrawn.removeEventListener('abort', onWithdraw)
          resolve(slot)
        },
        reject: (error) => {
          withdrawn.removeEventListener('abort', onWithdraw)
          reject(error)
        },
      }
      withdrawn.addEventListener('abort', onWithdraw, { once: true })
      this.waiters.push(waiter)
    })
  }

  /**
   * The least-loaded slot with room, or undefined when every worker has
   * `concurrency` calls. Running workers are preferred at equal load; an
   * empty slot is started on demand, unless its last start failed: it is
   * started again in the background after its backoff, and takes calls only
   * once that start succeeds (a restart can take as long as the start
   * timeout to fail, while a running worker could have served the call).
   * A slot whose worker waits in a scheduler's queue takes none either.
   */
  private freeSlot(host: Host | undefined, avoid: string | undefined): Slot | undefined {
    let up = (host ? [host] : this.hosts.all).filter((h) => this.hosts.isUp(h))
    if (avoid !== undefined && up.some((h) => h.transport.host !== avoid)) up = up.filter((h) => h.transport.host !== avoid)
    const slots = up.flatMap((h) => h.slots)
    const n = slots.length
    if (n === 0) return undefined
    let best: Slot | undefined
    let bestLoad = Infinity
    const start = this.turn++ % n
    for (let k = 0; k < n; k++) {
      const s = slots[(start + k) % n]!
      const usable = s.session?.usable ?? false
      if (!usable && s.failures > 0) continue
      // A worker waiting in a scheduler's queue may wait for minutes: calls go to the workers that run.
      if (!usable && s.pending?.queuedJob !== undefined) continue
      const calls = (usable ? s.session!.load : 0) + s.reserved
      if (calls >= this.concurrency) continue
      // An empty slot costs a worker start: prefer a running worker with the same load.
      const load = calls + (usable ? 0 : s.starting ? 0.5 : 0.75)
      if (load < bestLoad) {
        best = s
        bestLoad = load
      }
    }
    return best
  }

  /**
   * Why no worker of `hosts` can take a call, when none can: no worker runs
   * or is starting on a host that is up, and every slot's last start failed
   * (they back off). Undefined while a call may wait for one.
   */
  private unserviceable(hosts: Host[]): Error | undefined {
    let error: Error | undefined
    for (const h of hosts) {
      if (!this.hosts.isUp(h)) continue
      for (const s of h.slots) {
        if (s.session?.usable || s.starting || s.failures === 0) return undefined
        error ??= s.error
      }
    }
    return error
  }

  /** A call that was handed `session` ended before it registered there. */
  unreserve(session: Session): void {
    const slot = this.slotOf(session)
    if (slot && slot.reserved > 0) slot.reserved--
    this.drain()
  }

  private slotOf(session: Session): Slot | undefined {
    for (const h of this.hosts.all) for (const s of h.slots) if (s.session === session || s.pending === session) return s
    return undefined
  }

  /** Hands free workers to waiting calls, in order; fails those that nothing could ever serve. */
  drain(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters[0]!
      const slot = this.freeSlot(w.host, w.avoid)
      if (!slot) {
        // A call waiting for a host of its own (broadcast) fails when that host is down and not reconnecting.
        if (w.host && !this.hosts.isUp(w.host) && !w.host.connecting && w.host.resuming.size === 0) {
          this.waiters.shift()
          w.reject(w.host.error ?? new TransportError(`host ${w.host.transport.host} is down`, { host: w.host.transport.host, reason: 'lost' }))
          continue
        }
        // No worker runs or can start where it may go: it would wait for ever.
        const broken = this.unserviceable(w.host ? [w.host] : this.hosts.all)
        if (broken) {
          this.waiters.shift()
          w.reject(broken)
          continue
        }
        return
      }
      this.waiters.shift()
      slot.reserved++
      w.resolve(slot)
    }
  }

  /** The slot's live session, starting a new worker when there is none. */
  /**
   * {@link session}, but rejects with {@link QUEUED} when the worker being
   * started turns out to wait in a scheduler's queue (a call handed the slot
   * before that was known need not wait minutes while another worker runs).
   */
  private sessionUnlessQueued(slot: Slot): Promise<Session> {
    const starting = this.session(slot)
    if (slot.session?.usable) return starting
    return new Promise<Session>((resolve, reject) => {
      const onQueued = () => {
        slot.onQueued?.delete(onQueued)
        reject(QUEUED)
      }
      ;(slot.onQueued ??= new Set()).add(onQueued)
      starting.then(
        (session) => {
          slot.onQueued?.delete(onQueued)
          resolve(session)
        },
        (err: unknown) => {
          slot.onQueued?.delete(onQueued)
          reject(err)
        },
      )
    })
  }

  session(slot: Slot): Promise<Session> {
    if (slot.session?.usable) return Promise.resolve(slot.session)
    if (this.owner.closed) return Promise.reject(new FarpipeError('this pool is closed'))
    if (!slot.starting) {
      slot.starting = this.startSession(slot).then(
        (session) => {
          slot.starting = undefined
          slot.failures = 0
          slot.error = undefined
          return session
        },
        (err: unknown) => {
          slot.starting = undefined
          this.slotFailed(slot, err as Error)
          throw err
        },
      )
      this.owner.busy(slot.starting)
    }
    return slot.starting
  }

  /**
   * A worker failed to start in `slot`. Calls go to the other workers; the
   * slot is started again in the background after a backoff (1 s, 2 s, 4 s,
   * … 30 s), not by the next call that comes (which would fail with it, and
   * start it again at once, call after call).
   */
  private slotFailed(slot: Slot, error: Error): void {
    slot.failures++
    slot.error = error
    clearTimeout(slot.retryTimer)
    slot.retryTimer = undefined
    if (!this.owner.closed) {
      const wait = backoff(slot.failures)
      slot.retryTimer = setTimeout(() => {
        slot.retryTimer = undefined
        if (this.owner.closed || slot.session?.usable || slot.starting || !this.hosts.isUp(slot.host)) return
        this.session(slot).then(
          () => this.drain(),
          () => {},
        )
      }, wait)
      // Trying a slot again must not keep the process alive on its own.
      slot.retryTimer.unref()
    }
    this.drain()
  }

  private async startSession(slot: Slot): Promise<Session> {
    const { transport } = slot.host
    const session = new Session({
      host: transport.host,
      worker: slot.index,
      workers: slot.host.slots.length,
      cacheDir: transport.cacheDir ?? this.sessions.cacheDir,
      limits: this.sessions.limits,
      onLog: this.sessions.onLog,
      startTimeout: this.sessions.startTimeout,
      silenceHint: transport.silenceHint,
      counters: slot.counters,
      resumeWindow: transport.reattach ? this.sessions.resumeWindow : 0,
    })
    const channel = await transport.open(slot.index, {
      data: (chunk) => session.data(chunk),
      close: (err) => session.close(err),
      stderr: (text) => session.stderr(text),
      queued: (job) => {
        session.queued(job)
        if (job !== undefined) for (const tell of [...(slot.onQueued ?? [])]) tell()
      },
    })
    if (this.owner.closed) {
      channel.destroy()
      throw new FarpipeError('this pool is closed')
    }
    slot.pending = session
    try {
      session.start(channel)
      await session.ready
    } finally {
      slot.pending = undefined
    }
    if (this.owner.closed) {
      session.destroy('the pool was closed while it was starting')
      throw new FarpipeError('this pool is closed')
    }
    // An idle worker must not keep this process alive; calls in flight do (see Pool.track).
    channel.unref?.()
    this.resumer.watch(slot, session)
    session.onDeath = (error) => {
      this.resumer.forget(slot, session)
      if (slot.session === session) slot.session = undefined
      this.retired.delete(session)
      slot.counters.exits++
      if (this.owner.closed) return
      this.owner.workerExit({ host: transport.host, worker: slot.index, pid: session.pid, error })
      // The connection dropped: the host is down until a reconnection (see Hosts.dropped).
      if (!transport.up) this.hosts.dropped(slot.host, error)
      this.drain()
    }
    session.onRetire = () => {
      if (slot.session === session) slot.session = undefined
      this.retired.add(session)
      this.drain()
    }
    session.onRegister = () => {
      if (slot.reserved > 0) slot.reserved--
    }
    session.onRelease = () => this.drain()
    slot.session = session
    return session
  }
}
