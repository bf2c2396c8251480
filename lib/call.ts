/**
 * A remote call as the caller sees it: a TransformStream-shaped pair
 * (`writable` feeds the `input` argument, `readable` carries what the
 * function yields), a `result` promise, and `cancel()`.
 *
 * Credits come from the consumer: reading the output frees room in its
 * queue, which grants the worker more; streamed arguments are pulled from
 * their sources only while the worker has granted room for them.
 *
 * @module
 */
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { readItems, readValue, streamsInItems, valueBytes, type StreamHooks } from './codec.ts'
import { CancelError, FarpipeError, ProtocolError, RemoteError, SerializeError, TimeoutError, type TransportError } from './errors.ts'
import { NestedBudget, nestedInitial, type Watermarks } from './flow.ts'
import { isInput, isStreamSource, type Input, type StreamSource } from './input.ts'
import { openReceiver, WORKER_STREAMS } from './nested.ts'
import { registerSink } from './pipe.ts'
import { checkUnsent, pathTo, PendingPumps, StreamPump, type PumpOwner } from './pump.ts'
import { describe, type ResolvedCallOptions } from './options.ts'
import { ItemQueue, ItemStream, type NestedRef } from './queue.ts'
import type { Session, SessionCall } from './session.ts'
import { Kind, kindName, payloads, type Frame } from './wire.ts'
import type { CallHeader, ErrorPayload } from './worker/runtime.ts'

// -- types ----------------------------------------------------------------------

/** Any function `remote()` accepts. */
export type AnyFunction = (...args: any[]) => unknown

/** What a call of `F` yields: the generator's yield type, or `never` for other functions. */
export type YieldOf<F extends AnyFunction> =
  ReturnType<F> extends AsyncGenerator<infer T, any, any> ? T : ReturnType<F> extends Generator<infer T, any, any> ? T : never

/** What a call of `F` settles `result` with: a generator's return value, or the function's (awaited) result. */
export type ResultOf<F extends AnyFunction> =
  ReturnType<F> extends AsyncGenerator<any, infer R, any> ? R : ReturnType<F> extends Generator<any, infer R, any> ? R : Awaited<ReturnType<F>>

/** What may be passed for a parameter of type `P`: a parameter typed `AsyncIterable<T>` also takes any stream source of `T`. */
export type CallArg<P> = P extends AsyncIterable<infer T> ? StreamSource<T> | P : P

/** The arguments `Pool.run` accepts for `F`. */
export type CallArgs<F extends AnyFunction> = MapArgs<Parameters<F>>

/** Maps a parameter tuple element by element (a mapped type over a type parameter keeps tuples tuples). */
type MapArgs<P extends readonly unknown[]> = { [K in keyof P]: CallArg<P[K]> }

type ElementOf<P> = P extends AsyncIterable<infer T> ? T : never

/** The element type of the parameter where `input` was passed (`never` when it was not). */
export type InputOf<F extends AnyFunction, A extends readonly unknown[]> = {
  [K in keyof A]: A[K] extends Input ? (K extends keyof Parameters<F> ? ElementOf<Parameters<F>[K]> : never) : never
}[number]

/** A call of a non-generator function: also awaitable for its result. */
export type ThenableCall<In, R> = RemoteCall<In, never, R> & PromiseLike<R>

/** True when `F` is a generator function (its calls stream what it yields). A function that never returns is not. */
export type IsGenerator<F extends AnyFunction> = [ReturnType<F>] extends [never]
  ? false
  : ReturnType<F> extends AsyncGenerator<any, any, any> | Generator<any, any, any>
    ? true
    : false

/** The call `Pool.run(fn, ...args)` returns for `F`. */
export type CallOf<F extends AnyFunction, A extends readonly unknown[]> =
  IsGenerator<F> extends true ? RemoteCall<InputOf<F, A>, YieldOf<F>, ResultOf<F>> : ThenableCall<InputOf<F, A>, ResultOf<F>>

// -- the public object ------------------------------------------------------

/**
 * One remote call. It is shaped like a TransformStream, so it can sit in a
 * pipeline, and it is async-iterable over what the function yields:
 *
 * ```ts
 * for await (const x of p.run(fibonacci, 10)) console.log(x)
 * await source.pipeThrough(p.run(movingAverage, input, 3)).pipeTo(sink)
 * ```
 *
 * A call of a non-generator function is also awaitable: `await p.run(f, x)`
 * gives its result.
 *
 * @typeParam In what `writable` takes (the items of the `input` argument)
 * @typeParam Out what `readable` carries (what the function yields)
 * @typeParam R what `result` settles with (the function's return value)
 */
export class RemoteCall<In, Out, R> implements AsyncIterable<Out> {
  readonly #core: CallCore

  /**
   * A call of a function not declared as a generator is awaitable: its
   * `then` settles with the result. Such a function may still return a
   * generator (`(n) => inner(n)`), and then its type is a plain
   * `RemoteCall`, not awaitable: so `await` gives the call itself (a view of
   * it without `then`), once the worker has said that the function returned
   * a generator. Awaiting, or returning the call from an async function,
   * gives what its type says either way.
   *
   * @internal
   */
  constructor(core: CallCore, thenable = !core.generator) {
    this.#core = core
    cores.set(this, core)
    if (thenable) {
      Object.defineProperty(this, 'then', {
        value: (onFulfilled?: (v: unknown) => unknown, onRejected?: (e: unknown) => unknown) =>
          core.shape.then((streams): unknown => (streams ? new RemoteCall(core, false) : core.result)).then(onFulfilled, onRejected),
      })
    }
  }

  /** What the function yields, as it yields it. Errors with `RemoteError` (after the items sent before the error) when the function throws. */
  get readable(): ReadableStream<Out> {
    return this.#core.readable() as ReadableStream<Out>
  }

  /** Feeds the argument passed as `input`. Writes wait while the worker has no room. */
  get writable(): WritableStream<In> {
    return this.#core.writable() as WritableStream<In>
  }

  /**
   * Settles with the function's return value (a generator's `return` value),
   * or rejects with `RemoteError`, `TransportError`, `TimeoutError`,
   * `CancelError`, `SerializeError` or the signal's abort reason. Never an
   * unhandled rejection when only the stream is read.
   */
  get result(): Promise<R> {
    return this.#core.result as Promise<R>
  }

  /**
   * Stops the call on both sides: the remote generator's `return()` runs
   * (its `finally` blocks), its `context().signal` aborts, input pumps stop.
   * Resolves once the worker confirms; `result` rejects with `CancelError`.
   */
  cancel(reason?: unknown): Promise<void> {
    return this.#core.cancel(reason)
  }

  /** Iterates what the function yields; breaking out cancels the call. */
  [Symbol.asyncIterator](): AsyncIterator<Out> {
    return (this.#core.readable() as ItemStream<Out>).values()
  }
}

// -- the machinery ----------------------------------------------------------

const cores = new WeakMap<RemoteCall<unknown, unknown, unknown>, CallCore>()

/** The library's own directories (built, and its sources, which source maps point to): their frames are left out of call sites. */
const LIB_DIRS = ((root) => [path.join(root, 'dist') + path.sep, path.join(root, 'lib') + path.sep])(path.dirname(path.dirname(fileURLToPath(import.meta.url))))

/**
 * Where `run()` was called: a stack captured now, formatted only if an error
 * needs it (V8 formats `stack` on first access, so a call that succeeds pays
 * for the capture alone).
 */
export function captureCallSite(below: Function): { stack?: string } {
  const holder: { stack?: string } = {}
  Error.captureStackTrace(holder, below)
  return holder
}

/** The stack lines of a call site outside the library, or undefined. */
function callSiteLines(site: { stack?: string } | undefined): string | undefined {
  const lines = site?.stack?.split('\n').slice(1).filter((l) => !LIB_DIRS.some((d) => l.includes(d)))
  return lines && lines.length > 0 ? lines.join('\n') : undefined
}

/** The machinery of a call (for the pool; not exported from the package). */
export function coreOf(call: RemoteCall<any, any, any>): CallCore {
  return cores.get(call)!
}

/** Where a call runs: supplied by the pool. */
export interface CallTarget {
  /**
   * The session (worker) to run on, once one is free. `withdrawn` aborts when
   * the call settles before it got one (a timeout, a cancel, an abort): a
   * call waiting in the pool's queue then leaves it at once.
   */
  session(withdrawn: AbortSignal): Promise<Session>
  /** Bundle hash, export name and module name of the function, once bundled. */
  locate(): Promise<{ bundle: string; fn: string; module: string }>
  /** The call ended before it used the session it was handed (it registers there otherwise). */
  unused?(session: Session): void
}

/** A cancel's reason as a frame payload, if it can be sent (a cancel is sent without one otherwise). */
function reasonBytes(reason: unknown): Buffer | undefined {
  if (reason === undefined) return undefined
  try {
    return valueBytes(reason, 'reason')
  } catch {
    return undefined
  }
}

const enum State {
  /** Not yet sent to a worker. */
  Starting,
  /** Sent; waiting for its outcome. */
  Running,
  /** The outcome is decided (result settled); the worker may still owe its final frame. */
  Settled,
}

/** The caller's side of one call (everything but the public face). */
export class CallCore implements SessionCall, PumpOwner {
  readonly generator: boolean
  readonly result: Promise<unknown>
  private resolveResult!: (v: unknown) => void
  private rejectResult!: (e: unknown) => void
  private readonly output: ItemQueue<unknown>
  private stream: ItemStream<unknown> | undefined
  private writableStream: WritableStream<unknown> | undefined
  private writableController: WritableStreamDefaultController | undefined
  /** Streams this side feeds while they run: streamed arguments, and streams nested in the items of an input. */
  private readonly pumps = new Map<number, StreamPump>()
  /** The id the next stream this side opens gets (ids below it were opened). */
  private nextStream = 1
  /** Pumps numbered by an item being encoded: started once it is sent, let go if it cannot be. */
  private readonly pending = new PendingPumps()
  /** Hooks that number the streams nested in an input's items. */
  private readonly itemHooks: StreamHooks = { toId: (v) => this.openPump(v) }
  private inputPump: StreamPump | undefined
  /** Every source this call has sent as a stream: each may be sent once. */
  private readonly sentSources = new WeakSet<object>()
  /** Streams the worker sends, nested in what it yields or returns, while they are open. */
  private readonly receivers = new Map<number, ItemQueue<unknown>>()
  /** First windows of the streams the worker sends nested in values (see {@link NestedBudget}). */
  private readonly receivedBudget: NestedBudget
  /** The same for the streams this side sends nested in the items of an input. */
  private readonly sentBudget: NestedBudget
  /** The highest id of a worker's stream seen so far (they only grow). */
  private highestReceived = WORKER_STREAMS - 1
  private readonly marks: Watermarks
  /** True once the call ended with nested streams still open: the session routes their frames here until they end. */
  private lingering = false
  /** The encoded arguments, until the call frame carries them (or the call settles without sending it). */
  private args: Buffer | undefined
  /** Aborted when the call settles before it was sent: it leaves the pool's queue (see {@link CallTarget.session}). */
  private readonly withdrawn = new AbortController()
  /** How many streams the arguments opened (ids 1 to this). */
  private readonly argumentStreams: number
  private state = State.Starting
  private session: Session | undefined
  /**
   * Holds the process open while `work` is pending (set by the pool): a
   * reader waiting for a nested stream's next item must not see the process
   * exit under it, though the call itself has ended.
   */
  keepAlive: ((work: Promise<unknown>) => void) | undefined
  /** The host the call was sent to, once it was. */
  hostName: string | undefined
  private id = 0
  /** True once the worker's final frame (end, error, cancelled) arrived or can no longer come. */
  private final = false
  private finalResolve!: () => void
  /** Resolves once the worker's last frame for this call arrived, or never will. */
  readonly finalPromise: Promise<void>
  private timers: NodeJS.Timeout[] = []
  /** Runs out when the worker has not confirmed a cancel in time (see {@link fail}). */
  private graceTimer: NodeJS.Timeout | undefined
  private idleTimer: NodeJS.Timeout | undefined
  private lastActivity = 0
  /**
   * True once the worker showed that the function returned a generator (it
   * yielded, or its end frame says so): such a call streams, whether or not
   * the function was declared with `function*`.
   */
  streamed: boolean
  /** Resolves true once the call is known to stream (see {@link streamed}), false once its outcome is known and it does not. */
  readonly shape: Promise<boolean>
  private shapeResolve!: (streams: boolean) => void
  private abortListener: (() => void) | undefined
  /** Resolves once the call frame is sent (or the call settled before it could be). */
  private readonly started: Promise<void>
  private startedResolve!: () => void

  constructor(
    /** The function's name for messages: its export name once known. */
    private readonly name: () => string,
    generator: boolean,
    args: unknown[],
    private readonly options: ResolvedCallOptions,
    maxFrameBytes: number,
    /** Where `run()` was called (see {@link captureCallSite}). */
    private readonly callSite?: { stack?: string },
  ) {
    this.generator = generator
    this.streamed = generator
    this.shape = new Promise((r) => (this.shapeResolve = r))
    this.result = new Promise((resolve, reject) => {
      this.resolveResult = resolve
      this.rejectResult = reject
    })
    // Reading only the stream must not leave an unhandled rejection behind.
    this.result.catch(() => {})
    this.finalPromise = new Promise((r) => (this.finalResolve = r))
    this.started = new Promise((r) => (this.startedResolve = r))
    const marks = { items: options.highWaterMark, bytes: options.highWaterBytes }
    this.marks = marks
    this.receivedBudget = new NestedBudget(marks)
    this.sentBudget = new NestedBudget(marks)
    this.output = new ItemQueue(marks, {
      credit: (c) => this.session?.send(Kind.credit, this.id, 0, payloads.credit(c.items, c.bytes), true),
      cancel: (reason) => this.cancel(reason),
    })
    // Encoding the arguments first means a value that cannot be sent fails here, before anything is sent.
    const toId = (v: unknown): number | undefined => {
      if (!isStreamSource(v)) return undefined
      if (isInput(v) && this.inputPump) throw new TypeError('`input` may appear only once among the arguments of a call')
      if (!isInput(v)) checkUnsent(v, this.sentSources)
      const id = this.streamId()
      let named: string | undefined
      const pump = new StreamPump(this, id, v, { initial: marks, max: marks }, () => (named ??= isInput(v) ? 'input' : pathTo('args', args, v)))
      this.pumps.set(id, pump)
      if (isInput(v)) this.inputPump = pump
      return id
    }
    const encoded = valueBytes(args, 'args', { toId })
    this.args = encoded
    this.argumentStreams = this.nextStream - 1
    // The call frame also carries a small JSON header; leave it room.
    if (encoded.byteLength + 4096 > maxFrameBytes) {
      throw new SerializeError(`args: ${encoded.byteLength} bytes exceed maxFrameBytes ${maxFrameBytes}; pass large data as a stream (an iterator or ReadableStream) instead`, 'args')
    }
  }

  private get label(): string {
    return this.name()
  }

  /**
   * True when the arguments hold a stream (at any depth). Such a call cannot
   * be run again once it failed: its sources were read, in part or whole,
   * or let go when it failed, and a second run would see them consumed.
   */
  get hasStreams(): boolean {
    return this.argumentStreams > 0
  }

  /** Starts the call: locates the bundle, picks a worker, sends the call frame, starts the input pumps. */
  async start(target: CallTarget): Promise<void> {
    const { signal, timeout, idleTimeout } = this.options
    if (signal?.aborted) return this.fail(signal.reason, true)
    if (signal) {
      this.abortListener = () => this.fail(signal.reason, true)
      signal.addEventListener('abort', this.abortListener, { once: true })
    }
    this.activity()
    if (timeout !== undefined) this.timers.push(setTimeout(() => this.fail(new TimeoutError(`${this.label} did not finish within ${timeout} ms`)), timeout))
    if (idleTimeout !== undefined) this.watchIdle(idleTimeout)
    try {
      const where = await target.locate()
      if (this.state !== State.Starting) return
      const session = await target.session(this.withdrawn.signal)
      if (this.state !== State.Starting) return target.unused?.(session)
      this.session = session
      this.hostName = session.host
      this.id = session.register(this)
      const header: CallHeader = {
        ...(this.generator ? {} : { tell: true }),
        bundle: where.bundle,
        fn: where.fn,
        module: where.module,
        out: this.output.ledger.initial,
        streams: [...this.pumps.keys()].map((id) => ({ id, items: this.options.highWaterMark, bytes: this.options.highWaterBytes })),
        nested: this.marks,
      }
      const head = Buffer.from(JSON.stringify(header), 'utf8')
      const args = this.args!
      this.args = undefined
      const payload = Buffer.allocUnsafe(4 + head.byteLength + args.byteLength)
      payload.writeUInt32LE(head.byteLength, 0)
      head.copy(payload, 4)
      args.copy(payload, 4 + head.byteLength)
      session.send(Kind.call, this.id, 0, payload)
      this.state = State.Running
      this.startedResolve()
      // A copy: pumps started here may open more (streams nested in the items they send).
      for (const pump of [...this.pumps.values()]) void pump.run()
    } catch (err) {
      this.fail(err)
    }
  }

  readable(): ItemStream<unknown> {
    return (this.stream ??= new ItemStream(this.output))
  }

  /**
   * Reads the output without building a stream (for `map`, which reads every
   * call): `next()` from the queue, `return()` cancels the call.
   */
  items(): AsyncIterator<unknown> {
    if (this.stream) throw new TypeError(`the output of ${this.label} is already being read as a stream`)
    return {
      next: () => this.output.next(),
      return: async (value?: unknown) => {
        await this.output.cancel(undefined)
        return { done: true, value }
      },
    }
  }

  writable(): WritableStream<unknown> {
    if (this.writableStream) return this.writableStream
    const pump = this.inputPump
    if (!pump) {
      const err = new TypeError(`${this.label} was called without the \`input\` argument, so its writable side leads nowhere`)
      this.writableStream = new WritableStream({ start: (c) => c.error(err) })
      return this.writableStream
    }
    /** Chunks ever written through the stream, and whether it was closed or aborted: a pipe may bypass it only while it is untouched. */
    let written = 0
    let ended = false
    const open = () => this.state !== State.Starting && pump.stopped === undefined && pump.window.open
    const room = () => (this.state === State.Starting ? this.started.then(() => pump.room()) : pump.room())
    /** Sends one chunk within credit; a chunk that cannot be sent fails the call (nothing of it was sent), not just this pipe. */
    const send = (chunk: unknown) => {
      try {
        pump.send(chunk)
      } catch (err) {
        this.fail(err, true)
        throw err
      }
    }
    this.writableStream = new WritableStream(
      {
        start: (c) => {
          this.writableController = c
        },
        // Within credit, a chunk is sent at once: no promise of the sink's own per chunk.
        write: (chunk) => (open() ? send(chunk) : room().then(() => send(chunk))),
        // An input closed or aborted before the call frame went out must still
        // reach the worker once it has: otherwise the remote waits for an end
        // that was dropped, and the call never settles.
        close: async () => {
          ended = true
          await this.started
          if (pump.stopped === undefined) this.inputEnded(pump.id)
        },
        abort: async (reason) => {
          ended = true
          await this.started
          if (pump.stopped === undefined) this.inputFailed(pump.id, reason)
        },
      },
      {
        highWaterMark: 1,
        size: () => {
          written++
          return 1
        },
      },
    )
    registerSink(this.writableStream, {
      get idle() {
        return written === 0 && !ended
      },
      open,
      room,
      write: (item) => {
        try {
          send(item)
        } catch (err) {
          // As a sink's failed write does: the writable errors (with the call's error, if the failure ended the call).
          const stored = pump.stopped ?? err
          this.errorWritable(stored)
          throw stored
        }
      },
    })
    return this.writableStream
  }

  /** The next id for a stream this side opens. */
  private streamId(): number {
    if (this.nextStream >= WORKER_STREAMS) throw new RangeError(`a call may send at most ${WORKER_STREAMS - 1} streams`)
    return this.nextStream++
  }

  /**
   * Writes one item of stream `stream` (the pump checked the credit),
   * numbering the streams nested in it: they start once the item is written
   * (their frames follow it), and are let go if it cannot be.
   */
  sendItem(stream: number, value: unknown, path: () => string): number {
    // Once sent, a call's stream is fed until the worker ends it (it may outlive the call's result); not before, and not once the worker is gone.
    if (this.state === State.Starting || !this.session) throw new CancelError(`${this.label} is not running`)
    this.activity()
    let bytes: number
    try {
      bytes = this.session.sendItem(this.id, stream, value, path, this.itemHooks)
    } catch (err) {
      // The streams numbered in it were never named: their first windows come back.
      this.pending.abandon(err, (pump) => this.sentBudget.give(pump.id))
      throw err
    }
    this.session.counters.itemsOut++
    this.session.counters.bytesOut += bytes
    this.pending.start(path, value, this.pumps)
    return bytes
  }

  /** Numbers a stream found in an input's item being sent. */
  private openPump(v: unknown): number | undefined {
    if (!isStreamSource(v) || isInput(v)) return undefined
    checkUnsent(v, this.sentSources)
    const id = this.streamId()
    const initial = this.sentBudget.take(id, nestedInitial(this.marks))
    this.pending.add(new StreamPump(this, id, v, { initial, max: this.marks }, () => `stream ${id}`))
    return id
  }

  pumpEnded(pump: StreamPump): void {
    this.inputEnded(pump.id)
  }

  pumpFailed(pump: StreamPump, error: unknown): void {
    this.inputFailed(pump.id, error)
  }

  /** An item could not be sent: for a streamed argument the call fails (nothing half-sent); a nested stream errors alone. */
  pumpBroke(pump: StreamPump, error: unknown): void {
    if (this.argument(pump)) return this.fail(error, true)
    this.inputFailed(pump.id, error)
  }

  /** True for a streamed argument of the call (numbered with the arguments), not a stream nested in an input's item. */
  private argument(pump: StreamPump): boolean {
    return pump.id <= this.argumentStreams
  }

  inputEnded(stream: number): void {
    const pump = this.pumps.get(stream)
    if (!pump) return
    this.pumps.delete(stream)
    this.sentBudget.give(stream)
    pump.stop(new CancelError('the input has ended'))
    if (this.state !== State.Starting) this.session?.send(Kind.end, this.id, stream)
    this.checkForget()
  }

  inputFailed(stream: number, error: unknown): void {
    const pump = this.pumps.get(stream)
    if (!pump) return
    this.pumps.delete(stream)
    this.sentBudget.give(stream)
    pump.stop(error)
    if (this.state !== State.Starting && this.session) {
      let payload: Buffer
      try {
        payload = valueBytes(error, `${pump.path()} error`)
      } catch {
        payload = valueBytes(new Error(String(error)), 'error')
      }
      this.session.send(Kind.error, this.id, stream, payload)
    }
    this.checkForget()
  }

  // -- frames from the worker ---------------------------------------------------

  frame(f: Frame): void {
    if (f.stream >= WORKER_STREAMS) return this.nestedFrame(f)
    switch (f.kind) {
      case Kind.data: {
        // The worker sends items only on the output stream and its own streams; the input streams' items go the other way.
        if (f.stream !== 0) throw new ProtocolError(`worker ${this.where} sent data on stream ${f.stream} of call ${this.id}, which is a stream of the caller's`)
        if (this.state !== State.Running) {
          // Dropped unread (the call was cancelled or failed): the streams inside are let go at once.
          streamsInItems(f.payload, (id) => this.dropReceiver(id))
          return
        }
        const nested: NestedRef[] = []
        const items = readItems(f.payload, f.owned, (id, item) => this.receiver(id, nested, item))
        this.activity()
        this.output.push(items, f.payload.byteLength, nested.length > 0 ? nested : undefined)
        this.countIn(items.length, f.payload.byteLength)
        if (items.length > 0) this.markStreamed()
        return
      }
      case Kind.streams:
        this.outputFrame(f)
        this.markStreamed()
        return
      case Kind.credit: {
        const pump = this.pump(f)
        if (!pump) return
        pump.credit(payloads.readCredit(f.payload))
        if (this.state === State.Running) this.activity()
        return
      }
      case Kind.cancel: {
        // The remote function stopped reading this stream.
        const pump = this.pump(f)
        if (!pump) return
        const err = new CancelError(`${this.label} stopped reading ${pump.isInputPlaceholder ? 'its input' : pump.path()}`)
        this.pumps.delete(pump.id)
        this.sentBudget.give(pump.id)
        pump.stop(err)
        if (pump === this.inputPump) this.errorWritable(err)
        this.checkForget()
        return
      }
      case Kind.end: {
        this.outputFrame(f)
        // Decoded before anything changes: a payload that cannot be read is a protocol error, and the call fails with the session.
        const nested: NestedRef[] = []
        const { value, streamed } = payloads.readEnd(f.payload, (p) => readValue(p, { fromId: (id) => this.receiver(id, nested, 0) }))
        if (streamed) this.markStreamed()
        // A function's return value is what it sends this side: counted as an item.
        else this.countIn(1, f.payload.byteLength)
        if (this.settle(true)) {
          this.output.end()
          this.resolveResult(value)
        } else {
          for (const n of nested) n.cancel()
        }
        this.finished()
        return
      }
      case Kind.error: {
        this.outputFrame(f)
        const err = this.remoteError(this.errorReport(f))
        if (this.session) this.session.counters.errors++
        this.finished()
        if (this.settle()) {
          this.output.fail(err)
          this.rejectResult(err)
        }
        return
      }
      case Kind.cancelled:
        this.outputFrame(f)
        this.finished()
        if (this.settle()) {
          const err = new CancelError(`${this.label} was cancelled on its worker`)
          this.output.fail(err, true)
          this.rejectResult(err)
        }
        return
    }
  }

  /** The worker showed that the function returned a generator. */
  private markStreamed(): void {
    this.streamed = true
    this.shapeResolve(true)
  }

  /** The payload of an error frame, checked. */
  private errorReport(f: Frame): ErrorPayload {
    const body = readValue(f.payload) as ErrorPayload
    if (typeof body !== 'object' || body === null || !('error' in body) || typeof body.index !== 'number') {
      throw new ProtocolError(`worker ${this.where} sent an error frame for stream ${f.stream} of call ${this.id} whose payload is not an error report (${describe(body)})`)
    }
    return body
  }

  private countIn(items: number, bytes: number): void {
    const counters = this.session?.counters
    if (!counters) return
    counters.itemsIn += items
    counters.bytesIn += bytes
  }

  /**
   * The reader of the worker's stream `id`, named in a value that just
   * arrived (in item `item` of a batch, whose refs go to `refs`). Ids only
   * grow: one seen before, or not the worker's, is a protocol error.
   */
  private receiver(id: number, refs: NestedRef[], item: number): ReadableStream<unknown> {
    this.claimReceived(id)
    const initial = this.receivedBudget.take(id, nestedInitial(this.marks))
    const { queue, stream } = openReceiver(this.marks, initial, {
      credit: (c) => this.session?.send(Kind.credit, this.id, id, payloads.credit(c.items, c.bytes), true),
      cancel: (reason) => {
        if (!this.closeReceiver(id)) return
        this.session?.send(Kind.cancel, this.id, id, reasonBytes(reason))
        this.checkForget()
      },
      waiting: (until) => this.keepAlive?.(until),
    })
    this.receivers.set(id, queue)
    refs.push({ index: item, cancel: () => void queue.cancel('the item that carried this stream was dropped unread') })
    return stream
  }

  /** Forgets a stream the worker sends (it ended, failed or was cancelled), giving its first window back; false if it was gone. */
  private closeReceiver(id: number): boolean {
    if (!this.receivers.delete(id)) return false
    this.receivedBudget.give(id)
    return true
  }

  /** Takes `id` as the next stream of the worker's: ids only grow, and one seen before, or not the worker's, is a protocol error. */
  private claimReceived(id: number): void {
    if (id < WORKER_STREAMS || id <= this.highestReceived) {
      throw new ProtocolError(`worker ${this.where} named stream ${id} in a value of call ${this.id}, which is not a new stream of the worker's`)
    }
    this.highestReceived = id
  }

  /** A stream named in a value that is dropped unread: the worker is told to stop it. */
  private dropReceiver(id: number): undefined {
    this.claimReceived(id)
    this.session?.send(Kind.cancel, this.id, id)
    return undefined
  }

  /** A frame about one of the worker's streams (a nested stream it sends). */
  private nestedFrame(f: Frame): void {
    // A body streaming is the call moving, though nothing else does (idleTimeout).
    if (this.state === State.Running) this.activity()
    const q = this.receivers.get(f.stream)
    if (!q) {
      // Cancelled or ended here already: its frames may have crossed the cancel. One never named is a lie.
      if (f.stream > this.highestReceived) throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.id}, which it never named`)
      if (f.kind === Kind.data) streamsInItems(f.payload, (id) => this.dropReceiver(id))
      return
    }
    switch (f.kind) {
      case Kind.data: {
        const nested: NestedRef[] = []
        const items = readItems(f.payload, f.owned, (id, item) => this.receiver(id, nested, item))
        q.push(items, f.payload.byteLength, nested.length > 0 ? nested : undefined)
        this.countIn(items.length, f.payload.byteLength)
        return
      }
      case Kind.end:
        q.end()
        break
      case Kind.error:
        q.fail(this.remoteError(this.errorReport(f), 'a stream sent by'))
        break
      default:
        throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for its own stream ${f.stream} of call ${this.id}`)
    }
    this.closeReceiver(f.stream)
    this.checkForget()
  }

  /** The pump of the stream a frame is about (undefined if it stopped already); a stream this side never opened is a protocol error. */
  private pump(f: Frame): StreamPump | undefined {
    const pump = this.pumps.get(f.stream)
    if (!pump && (f.stream === 0 || f.stream >= this.nextStream)) {
      throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.id}, which has no such input stream`)
    }
    return pump
  }

  /** Checks that a call's final frame is about its output (stream 0). */
  private outputFrame(f: Frame): void {
    if (f.stream !== 0) throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.id}; a call ends on its output stream 0`)
  }

  /** `host/worker` of the session, for messages. */
  private get where(): string {
    return this.session?.where ?? 'unknown'
  }

  lost(error: TransportError): void {
    if (this.state !== State.Settled && this.session) this.session.counters.errors++
    this.session = undefined
    for (const q of this.receivers.values()) q.fail(error)
    this.receivers.clear()
    this.fail(error)
    this.stopPumps()
    this.finished()
  }

  // -- ending -----------------------------------------------------------------

  /** Cancels the call; resolves when the worker confirms (its `finally` blocks have run). */
  cancel(reason?: unknown): Promise<void> {
    const err = reason instanceof CancelError ? reason : new CancelError(`${this.label} was cancelled`, reason === undefined ? undefined : { cause: reason })
    // The worker is sent the caller's own reason, if any: encoding an error
    // formats its stack, which costs more than the rest of a cancel (a
    // `break` sends none, and the remote sees its own CancelError).
    this.fail(err, true, { sent: reason })
    return this.finalPromise
  }

  /**
   * Fails the call from this side (timeout, abort, a value that cannot be
   * sent, a lost worker): the result rejects, the stream errors, and the
   * worker is told to stop. With `drop`, items not yet read are discarded.
   * `reason.sent` is what the worker is told (the error, unless said otherwise).
   */
  fail(error: unknown, drop = false, reason?: { sent: unknown }): void {
    const wasRunning = this.state === State.Running
    if (!this.settle()) return
    if (wasRunning && this.session && !(error instanceof CancelError)) this.session.counters.errors++
    this.output.fail(error, drop)
    this.rejectResult(error)
    if (wasRunning && this.session && !this.final) {
      this.session.send(Kind.cancel, this.id, 0, reasonBytes(reason ? reason.sent : error))
      this.awaitConfirmation()
    } else {
      this.finished()
    }
  }

  /**
   * Bounds the wait for the worker's confirmation of a cancel. A remote
   * stuck between yields (awaiting something that never settles, or
   * computing) cannot reach its `finally` blocks; after the grace the call
   * is given up on this side, and its worker, which may still be running
   * it, is retired: it takes no new calls and is ended once its other calls
   * are done (the pool starts a fresh one in its place).
   */
  private awaitConfirmation(): void {
    const session = this.session
    if (!session || this.graceTimer) return
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined
      if (this.final) return
      this.finished()
      session.stuck(`${this.label} (call ${this.id}) did not confirm its cancellation within ${this.options.cancelGrace} ms`)
    }, this.options.cancelGrace)
  }

  /**
   * Marks the outcome decided; false if it already was. Stops timers, and
   * unless the function returned (`success`: the worker may still read its
   * inputs, and ends each itself), pumps and the writable.
   */
  private settle(success = false): boolean {
    if (this.state === State.Settled) return false
    if (this.state === State.Starting) {
      // Never sent: it leaves the pool's queue now, and its arguments are let go.
      this.args = undefined
      this.withdrawn.abort()
    }
    this.state = State.Settled
    this.startedResolve()
    this.shapeResolve(this.streamed)
    for (const t of this.timers) clearTimeout(t)
    this.timers = []
    clearTimeout(this.idleTimer)
    if (this.abortListener) this.options.signal?.removeEventListener('abort', this.abortListener)
    if (!success) this.stopPumps()
    return true
  }

  /** Stops feeding every stream of this side, and errors the writable. */
  private stopPumps(): void {
    // Built only when something needs it: an error's stack costs microseconds, on every call.
    if (this.pumps.size > 0 || this.writableController) {
      const stop = new CancelError(`${this.label} has finished`)
      const pumps = [...this.pumps.values()]
      this.pumps.clear()
      for (const pump of pumps) pump.stop(stop)
      this.errorWritable(stop)
    }
    this.checkForget()
  }

  /**
   * The worker's last frame for this call arrived (or never will): release
   * the id. While streams of the call are open either way, the session
   * still routes their frames here (see {@link checkForget}).
   */
  private finished(): void {
    if (this.final) return
    this.final = true
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    this.lingering = this.openStreams
    if (this.session && this.id) this.session.release(this.id, this.lingering ? this : undefined)
    this.finalResolve()
  }

  /** True while a stream of the call is open either way. */
  private get openStreams(): boolean {
    return this.pumps.size > 0 || this.receivers.size > 0
  }

  /** Once a call that ended has no stream open, the session forgets it. */
  private checkForget(): void {
    if (!this.lingering || this.openStreams) return
    this.lingering = false
    this.session?.forget(this.id)
  }

  /** Errors the writable side, so a pipe into it stops (and cancels its source) instead of waiting for room that will not come. */
  private errorWritable(err: unknown): void {
    this.writableController?.error(err)
  }

  /** The error a remote failure gives: of the call, or (`where`: 'a stream sent by') of one of its nested streams. */
  private remoteError(body: ErrorPayload, where = 'in'): Error {
    const e = body.error
    if (body.runtime && e instanceof FarpipeError) return e
    const isError = e instanceof Error
    const remoteName = isError ? e.name : typeof e
    const message = isError ? e.message : String(e)
    return new RemoteError(
      `${remoteName}: ${message} (${where} ${this.label} on ${this.session?.where ?? 'its worker'}, after ${body.index} item${body.index === 1 ? '' : 's'})`,
      {
        errorName: remoteName,
        remoteStack: isError ? String(e.stack ?? '') : '',
        index: body.index,
        host: this.session?.host ?? '',
        worker: this.session?.worker ?? -1,
        callSite: callSiteLines(this.callSite),
      },
      { cause: e },
    )
  }

  /** Something moved on the wire for this call (an item or a credit, either way). */
  private activity(): void {
    // Only idleTimeout reads it: a clock read per item sent or received is not free.
    if (this.options.idleTimeout !== undefined) this.lastActivity = performance.now()
  }

  /**
   * True while this side holds the call up: the consumer has not made room
   * for more output (so the worker has no credit), or a streamed argument has
   * credit that its local source has not used. That time is not remote
   * silence, and does not count towards `idleTimeout`.
   */
  private waitingHere(): boolean {
    if (!this.output.ledger.owes) return true
    for (const pump of this.pumps.values()) if (pump.waitingHere) return true
    return false
  }

  private watchIdle(ms: number): void {
    const check = () => {
      if (this.state === State.Settled) return
      if (this.state === State.Running && this.waitingHere()) this.activity()
      const idle = performance.now() - this.lastActivity
      if (idle >= ms) this.fail(new TimeoutError(`${this.label} saw nothing move in either direction for ${ms} ms while ready for more`))
      else this.idleTimer = setTimeout(check, Math.max(1, Math.min(ms - idle, ms / 4)))
    }
    this.idleTimer = setTimeout(check, Math.max(1, ms / 4))
  }
}
