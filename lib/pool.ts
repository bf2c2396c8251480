/**
 * The pool: hosts × worker processes. It starts the workers, sends each call
 * to the least-loaded one, replaces a worker that died (its calls have
 * already failed with `TransportError`), and closes everything on
 * `close()` or `await using`.
 *
 * @module
 */
import { bundleModule } from './bundle.ts'
import { CallCore, captureCallSite, coreOf, RemoteCall, type AnyFunction, type CallArg, type CallArgs, type CallOf, type CallTarget, type IsGenerator, type ResultOf, type YieldOf } from './call.ts'
import { CancelError, FarpipeError, TransportError } from './errors.ts'
import { isStreamSource } from './input.ts'
import { checkOptional, describe, MAX_TIMER_MS, resolveCallOptions, resolveLimits, type CallOptions, type Limits } from './options.ts'
import { exportNameOf, remoteInfo, stackSites, type Remote, type RemoteInfo } from './remote.ts'
import { printLog, Session, type LogEntry, type WorkerCounters } from './session.ts'
import { LocalTransport } from './transports/local.ts'
import type { Transport } from './transports/transport.ts'
import type { HostOptions } from './ssh/config.ts'
import type { CommandHost } from './transports/command.ts'
import { hostTransports } from './hosts.ts'
import { mapStream, type MapStream } from './map.ts'

/** Options of {@link pool}. */
export interface PoolOptions {
  /**
   * Hosts to run workers on: SSH destinations as OpenSSH takes them
   * (`host`, `user@host`, `ssh://user@host:port`, aliases from
   * `~/.ssh/config`), objects with per-host options, or command hosts,
   * reached through a command that opens a stdio channel there
   * (`{ name: 'pod-1', command: ['kubectl', 'exec', '-i', 'pod-1', '--'] }`).
   * Names are unique. Without hosts, the pool runs local worker processes.
   */
  hosts?: (string | HostOptions | CommandHost)[]
  /** The SSH client configuration to read. @default ~/.ssh/config */
  sshConfig?: string
  /**
   * Worker processes per host (a host's own `workers` wins).
   * @default os.availableParallelism() locally; the host's core count over SSH
   */
  workers?: number
  /** Where workers cache bundles. @default `$XDG_CACHE_HOME/farpipe`, else `~/.cache/farpipe` (on each host) */
  cacheDir?: string
  /** Receives every line remote code prints. @default printed to this process's stdout/stderr, prefixed with `[host/worker]` */
  onLog?: (entry: LogEntry) => void
  /** Wire limits (frame sizes). */
  limits?: Partial<Limits>
  /** Defaults for every call of the pool (overridden by `remote(fn, options)` and `Pool.with()`). */
  defaults?: CallOptions
  /**
   * Transports to run workers with, one per host; replaces the embedded
   * local pool. For transport authors and specs (e.g. `new MemoryTransport()`).
   */
  transports?: Transport[]
  /** Extra arguments for `node` when starting local workers. @default [] */
  nodeArgs?: string[]
  /** The `node` executable that runs local workers. @default this process's own executable (`process.execPath`) under Node; the `node` found on `PATH` under Deno or Bun */
  node?: string
  /**
   * Milliseconds a worker has to say hello once started; a worker that says
   * nothing, or prints something else first (a login script's greeting on
   * stdout), fails with a `TransportError` that quotes what it sent.
   * @default 30000
   */
  startTimeout?: number
  /**
   * Calls in flight at most on each worker process (a streaming call counts
   * until its stream ends). Past that, calls wait in order for a free worker
   * on any host. @default Infinity (calls are spread, never queued)
   */
  concurrency?: number
  /**
   * Milliseconds `close()` lets calls in flight (and calls waiting for a
   * worker) finish on their own; then it cancels the rest (their `finally`
   * blocks run, within their `cancelGrace`). A stream nobody reads never
   * finishes: cancel or read it before closing, or close with a short grace.
   * @default 5000
   */
  closeGrace?: number
}

/** What a pool and its views (`Pool.with()`) can do. */
export interface Runner {
  /**
   * Starts one remote call of `fn` and returns it at once. A value that
   * cannot be sent throws `SerializeError` here, before anything is sent.
   */
  run<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A>
  /** Runs the call once on every host of the pool; one call per host, in the order of the hosts. */
  broadcast<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A>[]
  /**
   * Spreads the items of `source` over the pool's workers (one call of `fn`
   * per item, at most `concurrency` at a time) and returns their results as
   * one stream in the order of the source (`ordered: false`: as they come).
   * For a generator `fn`, every item it yields is passed on, call after call.
   *
   * An item whose call was lost with its worker or host (a `TransportError`)
   * before anything of it was passed on runs again on another host, once;
   * every result arrives exactly once. A failed item errors the stream with
   * a `MapError` (`index`, the call's error as `cause`). Cancelling the
   * stream cancels the calls in flight and returns the source. The stream's
   * `progress` says how far it has got.
   *
   * @typeParam F a remote function of one argument, the item
   */
  map<F extends Remote<(item: any) => unknown>>(
    fn: F,
    source: Iterable<CallArg<Parameters<F>[0]>> | AsyncIterable<CallArg<Parameters<F>[0]>> | Iterator<CallArg<Parameters<F>[0]>>,
    options?: MapOptions,
  ): MapStream<MapItem<F>>
  /** A view of the pool whose calls use these options (over the pool's defaults). */
  with(options: CallOptions): Runner
}

/** What `Pool.map` yields for `F`: each call's result, or for a generator each item it yields. */
export type MapItem<F extends AnyFunction> = IsGenerator<F> extends true ? YieldOf<F> : ResultOf<F>

/** Options of {@link Runner.map}. */
export interface MapOptions extends CallOptions {
  /** Items in flight at once (started and not yet passed on): a consumer that stops reading stops the source. @default the pool's worker count */
  concurrency?: number
  /** Pass results on in the order of the source; `false`: in the order they come. @default true */
  ordered?: boolean
}

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
  /** Why the last start of a worker in this slot failed, while none runs there (it is started again after a backoff). */
  error?: string
}

/** What {@link Pool.stats} says about one host. */
export interface HostStats {
  /** The host as the pool names it. */
  name: string
  /** True when it is connected and has workers. */
  up: boolean
  /** Why it is down, when it is. */
  error?: string
  /** Its worker slots. */
  workers: WorkerStats[]
}

/** What {@link Pool.stats} returns. */
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
}

type AnyListener = Parameters<EventTarget['addEventListener']>[1]
type AddOptions = Parameters<EventTarget['addEventListener']>[2]
type RemoveOptions = Parameters<EventTarget['removeEventListener']>[2]

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

/** How long `close()` lets calls in flight finish on their own (see {@link PoolOptions.closeGrace}). */
const CLOSE_GRACE_MS = 5000

/** What {@link Pool.hosts} says about one host. */
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

/** One worker slot of a host: its session, when one is up. */
interface Slot {
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
   * background after a backoff (see {@link Pool.#slotFailed}).
   */
  failures: number
  /** Why its last start failed. */
  error: Error | undefined
  /** Starts the slot again once its backoff has passed. */
  retryTimer: NodeJS.Timeout | undefined
}

/** One host: its transport, and its worker slots once it has connected and said how many. */
interface Host {
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
}

/** The first wait before a host that is down is tried again; it doubles with each failure. */
const RETRY_FIRST_MS = 1000
/** The longest wait between attempts at a host that is down. */
const RETRY_MAX_MS = 30_000

/** A call waiting for a free worker: handed a slot (reserved for it) when one is. */
interface Waiter {
  host: Host | undefined
  avoid: string | undefined
  resolve(slot: Slot): void
  reject(error: unknown): void
}

function newCounters(): WorkerCounters {
  return { calls: 0, errors: 0, itemsIn: 0, bytesIn: 0, itemsOut: 0, bytesOut: 0, exits: 0 }
}

/**
 * A pool of worker processes. Open one with {@link pool}; close it with
 * `close()` or `await using`.
 */
export class Pool extends EventTarget implements Runner, AsyncDisposable {
  readonly #hosts: Host[]
  readonly #options: PoolOptions
  readonly #calls = new Set<CallCore>()
  /** Workers retired because a call on them would not stop; ended once their other calls are done, destroyed by `close()`. */
  readonly #retired = new Set<Session>()
  #keepAlive: NodeJS.Timeout | undefined
  #busyCount = 0
  readonly #limits: Limits
  #closed: Promise<void> | undefined
  #turn = 0
  readonly #waiters: Waiter[] = []
  readonly #concurrency: number

  /** @internal use {@link pool} */
  constructor(transports: Transport[], options: PoolOptions) {
    super()
    this.#options = options
    checkOptional('concurrency', options.concurrency, 1)
    checkOptional('closeGrace', options.closeGrace, 0, MAX_TIMER_MS)
    this.#concurrency = options.concurrency ?? Infinity
    this.#limits = resolveLimits(options.limits)
    resolveCallOptions(options.defaults) // refuse bad defaults when the pool opens, not at its first call
    checkOptional('startTimeout', options.startTimeout, 1, MAX_TIMER_MS)
    this.#hosts = transports.map((transport) => ({ transport, slots: [], connecting: undefined, error: undefined, failures: 0, retryAt: 0, retryTimer: undefined, wasUp: false }))
  }

  /** Worker processes in the pool (all hosts). */
  get size(): number {
    return this.#hosts.reduce((n, h) => n + h.slots.length, 0)
  }

  /** The hosts of the pool: their names, whether they are up, their workers, and why one is down. */
  get hosts(): HostStatus[] {
    return this.#hosts.map((h) => ({ name: h.transport.host, up: h.transport.up && h.slots.length > 0, workers: h.slots.length, ...(h.error ? { error: h.error } : {}) }))
  }

  /** Listens to `hostup`, `hostdown` and `workerexit` (typed), or any other event. */
  override addEventListener<K extends keyof PoolEventMap>(type: K, listener: (event: PoolEventMap[K]) => void, options?: AddOptions): void
  override addEventListener(type: string, listener: AnyListener, options?: AddOptions): void
  override addEventListener(type: string, listener: AnyListener | ((event: never) => void), options?: AddOptions): void {
    super.addEventListener(type, listener as AnyListener, options)
  }

  /** Stops listening (see {@link addEventListener}). */
  override removeEventListener<K extends keyof PoolEventMap>(type: K, listener: (event: PoolEventMap[K]) => void, options?: RemoveOptions): void
  override removeEventListener(type: string, listener: AnyListener, options?: RemoveOptions): void
  override removeEventListener(type: string, listener: AnyListener | ((event: never) => void), options?: RemoveOptions): void {
    super.removeEventListener(type, listener as AnyListener, options)
  }

  /** Counts per host and worker: up, calls in flight, calls, errors, items and bytes each way. */
  stats(): PoolStats {
    return {
      queued: this.#waiters.length,
      hosts: this.#hosts.map((h) => ({
        name: h.transport.host,
        up: this.#isUp(h),
        ...(this.#isUp(h) ? {} : { error: h.error?.message ?? (h.slots.length > 0 ? 'its connection was lost' : 'not connected') }),
        workers: h.slots.map((s) => ({
          index: s.index,
          up: s.session?.usable ?? false,
          pid: s.session?.usable ? s.session.pid : undefined,
          inFlight: s.session?.load ?? 0,
          ...s.counters,
          ...(s.error && !s.session?.usable ? { error: s.error.message } : {}),
        })),
      })),
    }
  }

  #isUp(h: Host): boolean {
    return h.slots.length > 0 && h.transport.up && !h.error
  }

  /** Says `hostup`/`hostdown` when a host's state changed. */
  #hostState(h: Host, error?: Error): void {
    if (this.#closed) return
    const up = this.#isUp(h)
    if (up !== h.wasUp) {
      h.wasUp = up
      const detail: HostEventDetail = { host: h.transport.host, ...(up ? {} : { error: error ?? h.error }) }
      this.dispatchEvent(new CustomEvent<HostEventDetail>(up ? 'hostup' : 'hostdown', { detail }))
    }
    // Looked at on every change, not only when the host's state flips: a
    // host that went down while reconnecting stays down when the attempt
    // fails, and the calls waiting for it must learn then.
    if (up) this.#drain()
    else if (!this.#hosts.some((x) => this.#isUp(x) || x.connecting)) {
      // Nothing left to wait for: queued calls fail now, as new ones do.
      const err = this.#noHostError()
      for (const w of this.#waiters.splice(0)) w.reject(err)
    }
  }

  /**
   * Connects every host and starts its workers; resolves once the first
   * worker is ready. A host that cannot be reached is reported and left out
   * (calls go to the others, and it is tried again later); when no host can
   * be reached, or no worker starts, this rejects.
   */
  async start(): Promise<void> {
    const connecting = Promise.allSettled(this.#hosts.map((h) => this.#connectHost(h)))
    this.#busy(connecting)
    await connecting
    const up = this.#hosts.filter((h) => h.slots.length > 0)
    if (up.length === 0) throw this.#noHostError()
    for (const h of this.#hosts) {
      if (h.error) this.#warn(h, `unreachable, calls go to the other hosts: ${h.error.message}`)
    }
    // The pool is ready when its first worker is: the others join as they
    // come up (dispatch prefers running workers and waits for a starting
    // one only when that is the least loaded). It fails only when none
    // comes up, with the first worker's error.
    try {
      await Promise.any(up.flatMap((h) => h.slots.map((s) => this.#session(s))))
    } catch (err) {
      throw (err as AggregateError).errors[0]
    }
  }

  /** Why no host can take a call: each host named, with why it is down. */
  #noHostError(): Error {
    const only = this.#hosts.length === 1 ? this.#hosts[0]! : undefined
    if (only?.error) return only.error
    const why = (h: Host) => h.error?.message ?? (h.slots.length > 0 && !h.transport.up ? 'its connection was lost' : 'not connected')
    const list = this.#hosts.map((h) => `${h.transport.host}: ${why(h)}`).join('; ')
    const errors = this.#hosts.map((h) => h.error).filter((e): e is Error => e !== undefined)
    return new TransportError(only ? `host ${list}` : `no host of the pool is up (${list})`, { cause: new AggregateError(errors, list), reason: 'lost' })
  }

  #warn(host: Host, line: string): void {
    const entry = { where: host.transport.host, fd: 2, line: `farpipe: ${line}`, callId: 0 }
    if (this.#options.onLog) this.#options.onLog(entry)
    else printLog(entry)
  }

  /** Connects a host (once at a time) and creates its slots the first time. */
  #connectHost(host: Host): Promise<void> {
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
      } catch (err) {
        host.error = err as Error
        host.failures++
        this.#retryLater(host)
        throw err
      } finally {
        host.connecting = undefined
        this.#hostState(host)
      }
    })())
  }

  /**
   * Tries a host that is down again in the background, waiting longer after
   * each failure (1 s, 2 s, 4 s, … 30 s). Meanwhile calls go to the other
   * hosts, or fail at once when none is up.
   */
  #retryLater(host: Host): void {
    if (this.#closed) return
    const wait = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.max(0, host.failures - 1))
    host.retryAt = Date.now() + wait
    clearTimeout(host.retryTimer)
    host.retryTimer = setTimeout(() => {
      host.retryTimer = undefined
      if (!this.#closed) this.#connectHost(host).catch(() => {})
    }, wait)
    // Retrying a host must not keep the process alive on its own.
    host.retryTimer.unref()
  }

  run<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A> {
    return this.#run(undefined, undefined, fn, args) as CallOf<F, A>
  }

  broadcast<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A>[] {
    return this.#broadcast(undefined, fn, args) as CallOf<F, A>[]
  }

  #broadcast(viewOptions: CallOptions | undefined, fn: Function, args: unknown[]): RemoteCall<unknown, unknown, unknown>[] {
    if (this.#hosts.length > 1 && args.some(isStreamSource)) {
      throw new TypeError('broadcast() cannot send one streamed argument to several hosts; pass a value, or run() a call per host with a stream each')
    }
    return this.#hosts.map((h) => this.#run(viewOptions, h, fn, args))
  }

  /** @inheritDoc Runner.map */
  map<F extends Remote<(item: any) => unknown>>(
    fn: F,
    source: Iterable<CallArg<Parameters<F>[0]>> | AsyncIterable<CallArg<Parameters<F>[0]>> | Iterator<CallArg<Parameters<F>[0]>>,
    options?: MapOptions,
  ): MapStream<MapItem<F>> {
    return this.#map(undefined, fn, source, options)
  }

  with(options: CallOptions): Runner {
    resolveCallOptions(options) // refuse bad options here, not at the first call
    const view: Runner = {
      run: (fn, ...args) => this.#run(options, undefined, fn, args) as never,
      broadcast: (fn, ...args) => this.#broadcast(options, fn, args) as never,
      map: (fn, source, mapOptions) => this.#map(options, fn, source, mapOptions) as never,
      with: (more) => this.with({ ...options, ...more }),
    }
    return view
  }

  /**
   * Closes the pool: no new calls; calls in flight get `closeGrace` to
   * finish, then the rest are cancelled (their `finally` blocks run on the
   * workers); then the workers exit, including any that were starting, and
   * nothing (process, channel, timer, listener) is left.
   */
  close(): Promise<void> {
    return (this.#closed ??= this.#close())
  }

  /** Closes the pool at the end of an `await using` block (see {@link close}). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  async #close(): Promise<void> {
    const reason = new CancelError('the pool was closed')
    for (const h of this.#hosts) {
      clearTimeout(h.retryTimer)
      for (const slot of h.slots) clearTimeout(slot.retryTimer)
    }
    // Calls in flight (and queued ones) get the grace to finish on their own.
    const graceMs = this.#options.closeGrace ?? CLOSE_GRACE_MS
    let grace: NodeJS.Timeout | undefined
    if (this.#calls.size > 0 && graceMs > 0) {
      await Promise.race([
        Promise.allSettled([...this.#calls].map((c) => c.finalPromise)),
        new Promise((r) => (grace = setTimeout(r, graceMs))),
      ])
      clearTimeout(grace)
    }
    for (const w of this.#waiters.splice(0)) w.reject(new FarpipeError('this pool is closed'))
    // The rest are cancelled: each waits for its worker's confirmation (finally blocks run) at most its cancelGrace.
    await Promise.allSettled([...this.#calls].map((c) => c.cancel(reason)))
    // Workers still starting are stopped, not left to come up after the pool is gone.
    const starting: Promise<unknown>[] = []
    for (const h of this.#hosts) {
      for (const s of h.slots) {
        s.pending?.destroy('the pool was closed while it was starting')
        if (s.starting) starting.push(s.starting)
        s.session?.end()
        s.session = undefined
      }
    }
    for (const r of this.#retired) r.destroy('the pool was closed')
    this.#retired.clear()
    await Promise.allSettled(starting)
    await Promise.allSettled(this.#hosts.map((h) => h.transport.close()))
  }

  #run(viewOptions: CallOptions | undefined, host: Host | undefined, fn: Function, args: unknown[], avoid?: string): RemoteCall<unknown, unknown, unknown> {
    if (this.#closed) throw new FarpipeError('this pool is closed')
    const info = remoteInfo(fn)
    if (!info) {
      throw new TypeError(`run() expects a function made with remote(), got ${typeof fn === 'function' ? `function ${fn.name || '(anonymous)'}` : typeof fn}`)
    }
    if (!info.exportName) refuseTopLevel(fn, info, this.#run)
    const options = resolveCallOptions(this.#options.defaults, info.options, viewOptions)
    const core = new CallCore(() => info.exportName ?? (fn.name || 'a remote function'), info.generator, args, options, this.#limits.maxFrameBytes, captureCallSite(this.#run))
    this.#track(core)
    const target: CallTarget = {
      locate: async () => {
        const [bundle, name] = await Promise.all([bundleModule(info.module), exportNameOf(fn, info)])
        return { bundle: bundle.hash, fn: name, module: bundle.name }
      },
      session: (withdrawn) => this.#pick(host, avoid, withdrawn),
      unused: (session) => this.#unreserve(session),
    }
    void core.start(target)
    return new RemoteCall(core)
  }

  #map(viewOptions: CallOptions | undefined, fn: Function, source: unknown, options: MapOptions = {}): MapStream<any> {
    const { concurrency = Math.max(1, this.size), ordered = true, ...callOptions } = options
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`option concurrency must be an integer >= 1, got ${String(concurrency)}`)
    if (typeof ordered !== 'boolean') throw new TypeError(`option ordered must be a boolean, got ${typeof ordered}`)
    if (this.#closed) throw new FarpipeError('this pool is closed')
    const info = remoteInfo(fn)
    if (!info) throw new TypeError(`map() expects a function made with remote(), got ${typeof fn === 'function' ? `function ${fn.name || '(anonymous)'}` : typeof fn}`)
    const merged = { ...viewOptions, ...callOptions }
    resolveCallOptions(merged) // refuse bad options before the source is touched
    const src = source as Record<PropertyKey, unknown>
    if (src === null || typeof src !== 'object') throw new TypeError(`map() expects an iterable, an async iterable or an iterator as its source, got ${describe(source)}`)
    const it: AsyncIterator<unknown> | Iterator<unknown> =
      typeof src[Symbol.asyncIterator] === 'function'
        ? (src[Symbol.asyncIterator] as () => AsyncIterator<unknown>)()
        : typeof src[Symbol.iterator] === 'function'
          ? (src[Symbol.iterator] as () => Iterator<unknown>)()
          : typeof src.next === 'function'
            ? (src as unknown as Iterator<unknown>)
            : (() => {
                throw new TypeError(`map() expects an iterable, an async iterable or an iterator as its source, got ${describe(source)}`)
              })()
    return mapStream(
      { run: (item, avoid) => this.#run(merged, undefined, fn, [item], avoid), name: () => info.exportName ?? (fn.name || 'a remote function') },
      it,
      { concurrency, ordered },
    )
  }

  /**
   * Keeps this process alive while a call is in flight, and only then: an
   * idle pool holds nothing open (its channels are unreferenced), so a
   * script that forgets `close()` still ends when its work is done.
   */
  #track(core: CallCore): void {
    this.#calls.add(core)
    this.#busy(core.finalPromise.then(() => void this.#calls.delete(core)))
    core.keepAlive = (work) => this.#busy(work)
  }

  /** Holds the process open until `work` settles (a call, or a worker starting). */
  #busy(work: Promise<unknown>): void {
    this.#busyCount++
    this.#keepAlive ??= setInterval(() => {}, 1 << 30)
    const done = () => {
      if (--this.#busyCount === 0 && this.#keepAlive) {
        clearInterval(this.#keepAlive)
        this.#keepAlive = undefined
      }
    }
    work.then(done, done)
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
   * another can take it: its slot backs off (see {@link #slotFailed}) and
   * the call is dispatched again. It fails when no worker runs or can be
   * started on the hosts it may use.
   */
  async #pick(host: Host | undefined, avoid: string | undefined, withdrawn: AbortSignal): Promise<Session> {
    const hosts = host ? [host] : this.#hosts
    for (let tries = 0; ; tries++) {
      if (withdrawn.aborted) throw withdrawn.reason
      if (!hosts.some((h) => this.#isUp(h))) {
        const now = Date.now()
        const attempts = hosts.filter((h) => h.connecting || h.retryAt <= now).map((h) => this.#connectHost(h))
        await Promise.allSettled(attempts)
        if (!hosts.some((h) => this.#isUp(h))) throw host ? (host.error ?? this.#noHostError()) : this.#noHostError()
      }
      let slot = this.#freeSlot(host, avoid)
      if (slot) slot.reserved++
      else {
        const broken = this.#unserviceable(hosts)
        if (broken) throw broken
        slot = await this.#queue(host, avoid, withdrawn)
      }
      try {
        return await this.#session(slot)
      } catch (err) {
        slot.reserved--
        this.#drain()
        // That slot backs off now; another worker may take the call.
        if (this.#closed || withdrawn.aborted || tries >= this.size) throw err
      }
    }
  }

  /** Waits in the queue for a slot (reserved for the call when handed out); leaves it when `withdrawn` aborts. */
  #queue(host: Host | undefined, avoid: string | undefined, withdrawn: AbortSignal): Promise<Slot> {
    return new Promise<Slot>((resolve, reject) => {
      const onWithdraw = () => {
        const at = this.#waiters.indexOf(waiter)
        if (at >= 0) this.#waiters.splice(at, 1)
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
      this.#waiters.push(waiter)
    })
  }

  /**
   * The least-loaded slot with room, or undefined when every worker has
   * `concurrency` calls. Running workers are preferred at equal load; an
   * empty slot is started on demand, unless its last start failed (it is
   * started again in the background after its backoff).
   */
  #freeSlot(host: Host | undefined, avoid: string | undefined): Slot | undefined {
    let up = (host ? [host] : this.#hosts).filter((h) => this.#isUp(h))
    if (avoid !== undefined && up.some((h) => h.transport.host !== avoid)) up = up.filter((h) => h.transport.host !== avoid)
    const slots = up.flatMap((h) => h.slots)
    const n = slots.length
    if (n === 0) return undefined
    let best: Slot | undefined
    let bestLoad = Infinity
    const start = this.#turn++ % n
    for (let k = 0; k < n; k++) {
      const s = slots[(start + k) % n]!
      const usable = s.session?.usable ?? false
      if (!usable && !s.starting && s.failures > 0) continue
      const calls = (usable ? s.session!.load : 0) + s.reserved
      if (calls >= this.#concurrency) continue
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
  #unserviceable(hosts: Host[]): Error | undefined {
    let error: Error | undefined
    for (const h of hosts) {
      if (!this.#isUp(h)) continue
      for (const s of h.slots) {
        if (s.session?.usable || s.starting || s.failures === 0) return undefined
        error ??= s.error
      }
    }
    return error
  }

  /** A call that was handed `session` ended before it registered there. */
  #unreserve(session: Session): void {
    const slot = this.#slotOf(session)
    if (slot && slot.reserved > 0) slot.reserved--
    this.#drain()
  }

  #slotOf(session: Session): Slot | undefined {
    for (const h of this.#hosts) for (const s of h.slots) if (s.session === session || s.pending === session) return s
    return undefined
  }

  /** Hands free workers to waiting calls, in order; fails those that nothing could ever serve. */
  #drain(): void {
    while (this.#waiters.length > 0) {
      const w = this.#waiters[0]!
      const slot = this.#freeSlot(w.host, w.avoid)
      if (!slot) {
        // A call waiting for a host of its own (broadcast) fails when that host is down and not reconnecting.
        if (w.host && !this.#isUp(w.host) && !w.host.connecting) {
          this.#waiters.shift()
          w.reject(w.host.error ?? new TransportError(`host ${w.host.transport.host} is down`, { host: w.host.transport.host, reason: 'lost' }))
          continue
        }
        // No worker runs or can start where it may go: it would wait for ever.
        const broken = this.#unserviceable(w.host ? [w.host] : this.#hosts)
        if (broken) {
          this.#waiters.shift()
          w.reject(broken)
          continue
        }
        return
      }
      this.#waiters.shift()
      slot.reserved++
      w.resolve(slot)
    }
  }

  /** The slot's live session, starting a new worker when there is none. */
  #session(slot: Slot): Promise<Session> {
    if (slot.session?.usable) return Promise.resolve(slot.session)
    if (this.#closed) return Promise.reject(new FarpipeError('this pool is closed'))
    if (!slot.starting) {
      slot.starting = this.#startSession(slot).then(
        (session) => {
          slot.starting = undefined
          slot.failures = 0
          slot.error = undefined
          return session
        },
        (err: unknown) => {
          slot.starting = undefined
          this.#slotFailed(slot, err as Error)
          throw err
        },
      )
      this.#busy(slot.starting)
    }
    return slot.starting
  }

  /**
   * A worker failed to start in `slot`. Calls go to the other workers; the
   * slot is started again in the background after a backoff (1 s, 2 s, 4 s,
   * … 30 s), not by the next call that comes (which would fail with it, and
   * start it again at once, call after call).
   */
  #slotFailed(slot: Slot, error: Error): void {
    slot.failures++
    slot.error = error
    clearTimeout(slot.retryTimer)
    slot.retryTimer = undefined
    if (!this.#closed) {
      const wait = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (slot.failures - 1))
      slot.retryTimer = setTimeout(() => {
        slot.retryTimer = undefined
        if (this.#closed || slot.session?.usable || slot.starting || !this.#isUp(slot.host)) return
        this.#session(slot).then(
          () => this.#drain(),
          () => {},
        )
      }, wait)
      // Trying a slot again must not keep the process alive on its own.
      slot.retryTimer.unref()
    }
    this.#drain()
  }

  async #startSession(slot: Slot): Promise<Session> {
    const { transport } = slot.host
    const session = new Session({
      host: transport.host,
      worker: slot.index,
      workers: slot.host.slots.length,
      cacheDir: transport.cacheDir ?? this.#options.cacheDir,
      limits: this.#limits,
      onLog: this.#options.onLog,
      startTimeout: this.#options.startTimeout,
      counters: slot.counters,
    })
    const channel = await transport.open(slot.index, {
      data: (chunk) => session.data(chunk),
      close: (err) => session.close(err),
      stderr: (text) => session.stderr(text),
    })
    if (this.#closed) {
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
    if (this.#closed) {
      session.destroy('the pool was closed while it was starting')
      throw new FarpipeError('this pool is closed')
    }
    // An idle worker must not keep this process alive; calls in flight do (see #track).
    channel.unref?.()
    session.onDeath = (error) => {
      if (slot.session === session) slot.session = undefined
      this.#retired.delete(session)
      slot.counters.exits++
      if (this.#closed) return
      const detail: WorkerExitDetail = { host: transport.host, worker: slot.index, pid: session.pid, error }
      this.dispatchEvent(new CustomEvent<WorkerExitDetail>('workerexit', { detail }))
      const host = slot.host
      if (!transport.up) {
        // The connection dropped: the host is down until a reconnection, tried at once (the calls queued and
        // the next ones wait for it). It starts before the host is said to be down, so that queued calls are
        // not failed for want of a host to wait for.
        if (!host.connecting) this.#connectHost(host).catch(() => {})
        this.#hostState(host, error)
      }
      this.#drain()
    }
    session.onRetire = () => {
      if (slot.session === session) slot.session = undefined
      this.#retired.add(session)
      this.#drain()
    }
    session.onRegister = () => {
      if (slot.reserved > 0) slot.reserved--
    }
    session.onRelease = () => this.#drain()
    slot.session = session
    return session
  }
}

/**
 * Refuses a call made while the function's own module is still running its
 * top-level code: that module would open a pool on every worker that loads
 * it (and importing it here to find the export would wait for itself).
 */
function refuseTopLevel(fn: Function, info: RemoteInfo, below: Function): void {
  if (!stackSites(below).some((s) => s.topLevel && s.url === info.module)) return
  throw new FarpipeError(
    `${fn.name || 'a remote function'} is defined in ${info.site.replace(/:\d+:\d+$/, '')}, which is also running a pool at its top level. ` +
      'A module of remote functions is bundled and evaluated on every worker, so it must not open a pool or run calls ' +
      'when it loads: keep the remote functions in a module of their own (for example tasks.ts) and import them from ' +
      'the module that opens the pool (for example main.ts).',
  )
}

/**
 * Opens a pool. With no transports it runs local worker processes (one per
 * core): the embedded default.
 *
 * ```ts
 * await using p = await pool()
 * for await (const x of p.run(fibonacci, 10)) console.log(x)
 * ```
 */
export async function pool(options: PoolOptions = {}): Promise<Pool> {
  const transports = options.transports ?? (options.hosts ? await hostTransports(options.hosts, options) : [new LocalTransport({ workers: options.workers, nodeArgs: options.nodeArgs, node: options.node })])
  if (transports.length === 0) throw new RangeError('a pool needs at least one host')
  const p = new Pool(transports, options)
  try {
    await p.start()
  } catch (err) {
    await p.close()
    throw err
  }
  return p
}
