/**
 * The pool: hosts × worker processes, as its users see it. It runs calls
 * (`run`, `broadcast`, `map`, `with`), opens its hosts and their first
 * workers, keeps the process alive while calls are in flight, and closes
 * everything on `close()` or `await using`. Which worker takes a call is
 * dispatch's (dispatch.ts); the hosts' lifecycle is hosts.ts's.
 *
 * @module
 */
import { bundleModule } from '../bundle.ts'
import { CallCore, type CallTarget } from '../call/core.ts'
import { captureCallSite } from '../call/remote-error.ts'
import { RemoteCall } from '../call/remote-call.ts'
import type { AnyFunction, CallArg, CallArgs, CallOf } from '../call/types.ts'
import { CancelError, FarpipeError } from '../errors.ts'
import { isStreamSource } from '../input.ts'
import { checkOptional, describe, MAX_TIMER_MS, resolveCallOptions, resolveLimits, type CallOptions, type Limits } from '../options.ts'
import { exportNameOf, remoteInfo, stackSites, type Remote, type RemoteInfo } from '../remote.ts'
import { printLog } from '../session.ts'
import { LocalTransport } from '../transports/local.ts'
import type { Transport } from '../transports/transport.ts'
import { Dispatch } from './dispatch.ts'
import { DEFAULT_RESUME_WINDOW } from './resume.ts'
import { PoolEvents } from './events.ts'
import { hostTransports } from './host-specs.ts'
import { Hosts, type Host } from './hosts.ts'
import { mapStream, type MapStream } from './map.ts'
import type { MapItem, MapOptions, PoolOptions, Runner } from './options.ts'
import { hostStatuses, poolStats, type HostStatus, type PoolStats } from './stats.ts'

/** How long `close()` lets calls in flight finish on their own (see `PoolOptions.closeGrace`). */
const CLOSE_GRACE_MS = 5000

/**
 * A pool of worker processes. Open one with {@link pool}; close it with
 * `close()` or `await using`.
 */
export class Pool extends PoolEvents implements Runner, AsyncDisposable {
  readonly #hosts: Hosts
  readonly #dispatch: Dispatch
  readonly #options: PoolOptions
  readonly #calls = new Set<CallCore>()
  #keepAlive: NodeJS.Timeout | undefined
  #busyCount = 0
  readonly #limits: Limits
  #closed: Promise<void> | undefined

  /** @internal use {@link pool} */
  constructor(transports: Transport[], options: PoolOptions) {
    super()
    this.#options = options
    checkOptional('concurrency', options.concurrency, 1)
    checkOptional('closeGrace', options.closeGrace, 0, MAX_TIMER_MS)
    this.#limits = resolveLimits(options.limits)
    resolveCallOptions(options.defaults) // refuse bad defaults when the pool opens, not at its first call
    checkOptional('startTimeout', options.startTimeout, 1, MAX_TIMER_MS)
    checkOptional('resumeWindow', options.resumeWindow, 0, MAX_TIMER_MS)
    const pool = this
    this.#hosts = new Hosts(transports, {
      get closed() {
        return pool.#closed !== undefined
      },
      changed: (host, up, error, resumed) => this.emitHost(up, { host, ...(up ? (resumed ? { resumed } : {}) : { error }) }),
      reconnected: (host) => this.#dispatch.reconnected(host),
      someUp: () => this.#dispatch.drain(),
      noneLeft: (error) => this.#dispatch.rejectAll(error),
    })
    this.#dispatch = new Dispatch(
      {
        get closed() {
          return pool.#closed !== undefined
        },
        get size() {
          return pool.size
        },
        busy: (work) => this.#busy(work),
        workerExit: (detail) => this.emitWorkerExit(detail),
      },
      this.#hosts,
      options.concurrency ?? Infinity,
      { cacheDir: options.cacheDir, limits: this.#limits, onLog: options.onLog, startTimeout: options.startTimeout, resumeWindow: options.resumeWindow ?? DEFAULT_RESUME_WINDOW },
    )
  }

  /** Worker processes in the pool (all hosts). */
  get size(): number {
    return this.#hosts.all.reduce((n, h) => n + h.slots.length, 0)
  }

  /** The hosts of the pool: their names, whether they are up, their workers, and why one is down. */
  get hosts(): HostStatus[] {
    return hostStatuses(this.#hosts)
  }

  /** Counts per host and worker: up, calls in flight, calls, errors, items and bytes each way. */
  stats(): PoolStats {
    return poolStats(this.#hosts, this.#dispatch.queued)
  }

  /**
   * Connects every host and starts its workers; resolves once the first
   * worker is ready. A host that cannot be reached is reported and left out
   * (calls go to the others, and it is tried again later); when no host can
   * be reached, or no worker starts, this rejects.
   */
  async start(): Promise<void> {
    const connecting = Promise.allSettled(this.#hosts.all.map((h) => this.#hosts.connect(h)))
    this.#busy(connecting)
    await connecting
    const up = this.#hosts.all.filter((h) => h.slots.length > 0)
    if (up.length === 0) throw this.#hosts.noHostError()
    for (const h of this.#hosts.all) {
      if (h.error) this.#warn(h, `unreachable, calls go to the other hosts: ${h.error.message}`)
    }
    // The pool is ready when its first worker is: the others join as they
    // come up (dispatch prefers running workers and waits for a starting
    // one only when that is the least loaded). It fails only when none
    // comes up, with the first worker's error.
    try {
      await Promise.any(up.flatMap((h) => h.slots.map((s) => this.#dispatch.session(s))))
    } catch (err) {
      throw (err as AggregateError).errors[0]
    }
  }

  #warn(host: Host, line: string): void {
    const entry = { where: host.transport.host, fd: 2, line: `farpipe: ${line}`, callId: 0 }
    if (this.#options.onLog) this.#options.onLog(entry)
    else printLog(entry)
  }

  run<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A> {
    return this.#run(undefined, undefined, fn, args) as CallOf<F, A>
  }

  broadcast<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A>[] {
    return this.#broadcast(undefined, fn, args) as CallOf<F, A>[]
  }

  #broadcast(viewOptions: CallOptions | undefined, fn: Function, args: unknown[]): RemoteCall<unknown, unknown, unknown>[] {
    if (this.#hosts.all.length > 1 && args.some(isStreamSource)) {
      throw new TypeError('broadcast() cannot send one streamed argument to several hosts; pass a value, or run() a call per host with a stream each')
    }
    return this.#hosts.all.map((h) => this.#run(viewOptions, h, fn, args))
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
    this.#hosts.stop()
    // Calls on workers whose connection is down cannot finish within any grace, nor be told to stop: they fail
    // now, and their workers end on their hosts when their windows pass.
    for (const h of this.#hosts.all) for (const s of h.slots) if (s.session?.detached) s.session.end()
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
    this.#dispatch.rejectAll(new FarpipeError('this pool is closed'))
    // The rest are cancelled: each waits for its worker's confirmation (finally blocks run) at most its cancelGrace.
    await Promise.allSettled([...this.#calls].map((c) => c.cancel(reason)))
    // Workers still starting are stopped, not left to come up after the pool is gone.
    const starting: Promise<unknown>[] = []
    for (const h of this.#hosts.all) {
      for (const s of h.slots) {
        s.pending?.destroy('the pool was closed while it was starting')
        if (s.starting) starting.push(s.starting)
        s.session?.end()
        s.session = undefined
      }
    }
    for (const r of this.#dispatch.retired) r.destroy('the pool was closed')
    this.#dispatch.retired.clear()
    await Promise.allSettled(starting)
    await Promise.allSettled(this.#hosts.all.map((h) => h.transport.close()))
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
      session: (withdrawn) => this.#dispatch.pick(host, avoid, withdrawn),
      unused: (session) => this.#dispatch.unreserve(session),
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
