/**
 * The pool: hosts × worker processes. It starts the workers, sends each call
 * to the least-loaded one, replaces a worker that died (its calls have
 * already failed with `TransportError`), and closes everything on
 * `close()` or `await using`.
 *
 * @module
 */
import { bundleModule } from './bundle.ts'
import { CallCore, coreOf, RemoteCall, type AnyFunction, type CallArgs, type CallOf, type CallTarget, type IsGenerator, type ResultOf, type YieldOf } from './call.ts'
import { CancelError, FarpipeError, TransportError } from './errors.ts'
import { isStreamSource } from './input.ts'
import { checkOptional, MAX_TIMER_MS, resolveCallOptions, resolveLimits, type CallOptions, type Limits } from './options.ts'
import { exportNameOf, remoteInfo, stackSites, type Remote, type RemoteInfo } from './remote.ts'
import { printLog, Session, type LogEntry } from './session.ts'
import { LocalTransport } from './transports/local.ts'
import type { Transport } from './transports/transport.ts'
import type { HostOptions } from './ssh/config.ts'
import { hostTransports } from './hosts.ts'

/** Options of {@link pool}. */
export interface PoolOptions {
  /**
   * SSH hosts to run workers on, as OpenSSH takes them (`host`,
   * `user@host`, `ssh://user@host:port`, aliases from `~/.ssh/config`), or
   * objects with per-host options. Without hosts, the pool runs local worker
   * processes.
   */
  hosts?: (string | HostOptions)[]
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
  /** The `node` executable that runs local workers. @default this process's own executable (`process.execPath`) */
  node?: string
  /**
   * Milliseconds a worker has to say hello once started; a worker that says
   * nothing, or prints something else first (a login script's greeting on
   * stdout), fails with a `TransportError` that quotes what it sent.
   * @default 30000
   */
  startTimeout?: number
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
   * one stream in the order of the source. For a generator `fn`, every item
   * it yields is passed on, call after call.
   *
   * @typeParam F a remote function of one argument, the item
   */
  map<F extends Remote<(item: any) => unknown>>(
    fn: F,
    source: Iterable<Parameters<F>[0]> | AsyncIterable<Parameters<F>[0]> | Iterator<Parameters<F>[0]>,
    options?: MapOptions,
  ): ReadableStream<MapItem<F>>
  /** A view of the pool whose calls use these options (over the pool's defaults). */
  with(options: CallOptions): Runner
}

/** What `Pool.map` yields for `F`: each call's result, or for a generator each item it yields. */
export type MapItem<F extends AnyFunction> = IsGenerator<F> extends true ? YieldOf<F> : ResultOf<F>

/** Options of {@link Runner.map}. */
export interface MapOptions extends CallOptions {
  /** Calls in flight at once. @default the pool's worker count */
  concurrency?: number
}

/** How long `close()` waits for running calls to confirm their cancellation before ending the workers anyway. */
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
}

/** One host: its transport, and its worker slots once it has connected and said how many. */
interface Host {
  transport: Transport
  slots: Slot[]
  connecting: Promise<void> | undefined
  /** Why the last connection attempt failed, if it did. */
  error: Error | undefined
  lastAttempt: number
}

/** How often a host that is down is tried again while others serve the calls. */
const RETRY_MS = 5000

/**
 * A pool of worker processes. Open one with {@link pool}; close it with
 * `close()` or `await using`.
 */
export class Pool implements Runner, AsyncDisposable {
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

  /** @internal use {@link pool} */
  constructor(transports: Transport[], options: PoolOptions) {
    this.#options = options
    this.#limits = resolveLimits(options.limits)
    resolveCallOptions(options.defaults) // refuse bad defaults when the pool opens, not at its first call
    checkOptional('startTimeout', options.startTimeout, 1, MAX_TIMER_MS)
    this.#hosts = transports.map((transport) => ({ transport, slots: [], connecting: undefined, error: undefined, lastAttempt: 0 }))
  }

  /** Worker processes in the pool (all hosts). */
  get size(): number {
    return this.#hosts.reduce((n, h) => n + h.slots.length, 0)
  }

  /** The hosts of the pool: their names, whether they are up, their workers, and why one is down. */
  get hosts(): HostStatus[] {
    return this.#hosts.map((h) => ({ name: h.transport.host, up: h.transport.up && h.slots.length > 0, workers: h.slots.length, ...(h.error ? { error: h.error } : {}) }))
  }

  /**
   * Connects every host and starts its workers. A host that cannot be
   * reached is reported and left out (calls go to the others, and it is
   * tried again later); when no host can be reached, this rejects.
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
    const starts = await Promise.allSettled(up.flatMap((h) => h.slots.map((s) => this.#session(s))))
    const failed = starts.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed && up.every((h) => h.slots.every((s) => !s.session))) throw failed.reason
  }

  #noHostError(): Error {
    const errors = this.#hosts.map((h) => h.error).filter((e): e is Error => e !== undefined)
    if (errors.length === 1) return errors[0]!
    const list = this.#hosts.map((h) => `${h.transport.host}: ${h.error?.message ?? 'not connected'}`).join('; ')
    return new TransportError(`no host of the pool could be reached (${list})`, { cause: new AggregateError(errors, list) })
  }

  #warn(host: Host, line: string): void {
    const entry = { where: host.transport.host, fd: 2, line: `farpipe: ${line}`, callId: 0 }
    if (this.#options.onLog) this.#options.onLog(entry)
    else printLog(entry)
  }

  /** Connects a host (once at a time) and creates its slots the first time. */
  #connectHost(host: Host): Promise<void> {
    return (host.connecting ??= (async () => {
      host.lastAttempt = Date.now()
      try {
        const n = await host.transport.connect()
        if (!Number.isInteger(n) || n < 1) throw new RangeError(`host ${host.transport.host}: workers must be an integer >= 1, got ${String(n)}`)
        for (let i = host.slots.length; i < n; i++) host.slots.push({ host, index: i, session: undefined, starting: undefined, pending: undefined })
        host.error = undefined
      } catch (err) {
        host.error = err as Error
        throw err
      } finally {
        host.connecting = undefined
      }
    })())
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
    source: Iterable<Parameters<F>[0]> | AsyncIterable<Parameters<F>[0]> | Iterator<Parameters<F>[0]>,
    options?: MapOptions,
  ): ReadableStream<MapItem<F>> {
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
   * Closes the pool: calls still running are cancelled (their `finally`
   * blocks run on the workers), then the workers exit.
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
    // Wait for the workers to confirm (finally blocks run), but not for a call that ignores its cancellation.
    let grace: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled([...this.#calls].map((c) => c.cancel(reason))),
      new Promise((r) => (grace = setTimeout(r, CLOSE_GRACE_MS))),
    ])
    clearTimeout(grace)
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

  #run(viewOptions: CallOptions | undefined, host: Host | undefined, fn: Function, args: unknown[]): RemoteCall<unknown, unknown, unknown> {
    if (this.#closed) throw new FarpipeError('this pool is closed')
    const info = remoteInfo(fn)
    if (!info) {
      throw new TypeError(`run() expects a function made with remote(), got ${typeof fn === 'function' ? `function ${fn.name || '(anonymous)'}` : typeof fn}`)
    }
    if (!info.exportName) refuseTopLevel(fn, info, this.#run)
    const options = resolveCallOptions(this.#options.defaults, info.options, viewOptions)
    const core = new CallCore(() => info.exportName ?? (fn.name || 'a remote function'), info.generator, args, options, this.#limits.maxFrameBytes)
    this.#track(core)
    const target: CallTarget = {
      locate: async () => {
        const [bundle, name] = await Promise.all([bundleModule(info.module), exportNameOf(fn, info)])
        return { bundle: bundle.hash, fn: name, module: bundle.name }
      },
      session: () => this.#pick(host),
    }
    void core.start(target)
    return new RemoteCall(core)
  }

  #map(viewOptions: CallOptions | undefined, fn: Function, source: unknown, options: MapOptions = {}): ReadableStream<any> {
    const { concurrency = this.size, ...callOptions } = options
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`option concurrency must be an integer >= 1, got ${String(concurrency)}`)
    const runner = this.with({ ...viewOptions, ...callOptions })
    const src = source as Record<PropertyKey, unknown>
    const it: AsyncIterator<unknown> | Iterator<unknown> =
      typeof src[Symbol.asyncIterator] === 'function'
        ? (src[Symbol.asyncIterator] as () => AsyncIterator<unknown>)()
        : typeof src[Symbol.iterator] === 'function'
          ? (src[Symbol.iterator] as () => Iterator<unknown>)()
          : (src as unknown as Iterator<unknown>)
    const inflight: RemoteCall<unknown, unknown, unknown>[] = []
    let current: AsyncIterator<unknown> | undefined
    let sourceDone = false
    const cancelAll = (reason: unknown) => Promise.allSettled(inflight.splice(0).map((c) => c.cancel(reason)))
    return new ReadableStream(
      {
        pull: async (controller) => {
          try {
            for (;;) {
              while (!sourceDone && inflight.length < concurrency) {
                const r = await it.next()
                if (r.done) sourceDone = true
                else inflight.push(runner.run(fn as Remote<AnyFunction>, r.value) as RemoteCall<unknown, unknown, unknown>)
              }
              const head = inflight[0]
              if (!head) return controller.close()
              // Every call's stream is read, so that a function that returns a
              // generator without being declared `function*` streams here too
              // (as its type says) instead of filling its window unread.
              current ??= head[Symbol.asyncIterator]()
              const r = await current.next()
              if (!r.done) return controller.enqueue(r.value)
              inflight.shift()
              current = undefined
              if (!coreOf(head).streamed) return controller.enqueue(await head.result)
            }
          } catch (err) {
            await cancelAll(err)
            await Promise.resolve(it.return?.()).catch(() => {})
            throw err
          }
        },
        cancel: async (reason) => {
          await cancelAll(reason)
          await Promise.resolve(it.return?.()).catch(() => {})
        },
      },
      { highWaterMark: 0 },
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
   * The least-loaded worker (of `host`, or of any host), started if its slot
   * is empty. Hosts that are down are skipped while others are up (and
   * retried in the background now and then); when none is up, they are
   * reconnected and the call waits for that.
   */
  async #pick(host?: Host): Promise<Session> {
    const hosts = host ? [host] : this.#hosts
    let up = hosts.filter((h) => h.slots.length > 0 && h.transport.up)
    if (up.length === 0) {
      await Promise.allSettled(hosts.map((h) => this.#connectHost(h)))
      up = hosts.filter((h) => h.slots.length > 0 && h.transport.up)
      if (up.length === 0) throw host?.error ?? this.#noHostError()
    } else {
      for (const h of hosts) {
        if (!up.includes(h) && Date.now() - h.lastAttempt > RETRY_MS) this.#connectHost(h).catch(() => {})
      }
    }
    const slots = up.flatMap((h) => h.slots)
    let best: Slot | undefined
    let bestLoad = Infinity
    const n = slots.length
    const start = this.#turn++ % n
    for (let k = 0; k < n; k++) {
      const s = slots[(start + k) % n]!
      const load = s.session?.usable ? s.session.load : s.starting ? 0.5 : 1
      if (load < bestLoad) {
        best = s
        bestLoad = load
      }
    }
    return this.#session(best!)
  }

  /** The slot's live session, starting a new worker when there is none. */
  #session(slot: Slot): Promise<Session> {
    if (slot.session?.usable) return Promise.resolve(slot.session)
    if (this.#closed) return Promise.reject(new FarpipeError('this pool is closed'))
    if (!slot.starting) {
      slot.starting = this.#startSession(slot).finally(() => (slot.starting = undefined))
      this.#busy(slot.starting)
    }
    return slot.starting
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
    session.onDeath = () => {
      if (slot.session === session) slot.session = undefined
      this.#retired.delete(session)
    }
    session.onRetire = () => {
      if (slot.session === session) slot.session = undefined
      this.#retired.add(session)
    }
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
