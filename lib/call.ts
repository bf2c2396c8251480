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
import { readItems, readValue, valueBytes } from './codec.ts'
import { CancelError, FarpipeError, ProtocolError, RemoteError, SerializeError, TimeoutError, type TransportError } from './errors.ts'
import { CreditWindow, type Watermarks } from './flow.ts'
import { isInput, isStreamSource, type Input, type StreamSource } from './input.ts'
import { describe, type ResolvedCallOptions } from './options.ts'
import { ItemQueue, ItemStream } from './queue.ts'
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

  /** @internal */
  constructor(core: CallCore) {
    this.#core = core
    cores.set(this, core)
    if (!core.generator) {
      Object.defineProperty(this, 'then', {
        value: (onFulfilled?: (v: R) => unknown, onRejected?: (e: unknown) => unknown) => this.result.then(onFulfilled, onRejected),
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
  /** The session (worker) to run on, once one is free. */
  session(): Promise<Session>
  /** Bundle hash, export name and module name of the function, once bundled. */
  locate(): Promise<{ bundle: string; fn: string; module: string }>
  /** The call ended before it used the session it was handed (it registers there otherwise). */
  unused?(session: Session): void
}

/** One streamed argument: its source and the credit the worker granted for it. */
class InputPump {
  readonly window: CreditWindow
  private wake: (() => void) | undefined
  /** Set when the call no longer wants items from this source. */
  stopped: unknown = undefined
  /** Items sent so far. */
  sent = 0
  /** True while this side, not the worker, holds the stream up: the worker has granted room and the source has not filled it. */
  get waitingHere(): boolean {
    return this.stopped === undefined && this.window.open
  }
  private closeSource: ((reason: unknown) => unknown) | undefined
  /** True once {@link run} began pulling the source. */
  private ran = false

  constructor(readonly core: CallCore, readonly id: number, readonly source: unknown, marks: Watermarks) {
    this.window = new CreditWindow(marks)
  }

  get isInputPlaceholder(): boolean {
    return isInput(this.source)
  }

  credit(c: { items: number; bytes: number }): void {
    this.window.add(c)
    this.wakeUp()
  }

  /** Waits until the worker has room (or the pump stops). */
  async room(): Promise<void> {
    while (!this.window.open && this.stopped === undefined) await new Promise<void>((r) => (this.wake = r))
    if (this.stopped !== undefined) throw this.stopped
  }

  /** Sends one item within credit. Throws SerializeError (nothing sent) for a value that cannot be sent. */
  send(value: unknown): void {
    const bytes = this.core.sendItem(this.id, value, () => (this.isInputPlaceholder ? `input[${this.sent}]` : `${this.core.argPath(this.id)}[${this.sent}]`))
    this.window.spend(bytes)
    this.sent++
  }

  /** Stops pulling and lets the source clean up (generator `return()`, reader `cancel()`). */
  stop(reason: unknown): void {
    if (this.stopped !== undefined) return
    this.stopped = reason ?? new CancelError('the call has finished')
    this.wakeUp()
    const close = this.closeSource ?? (this.ran ? undefined : () => closeUnread(this.source, reason))
    this.closeSource = undefined
    if (close) Promise.resolve().then(() => close(reason)).catch(() => {})
  }

  private wakeUp(): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /** Pulls the source while there is credit, until it ends, fails or the pump stops. */
  async run(): Promise<void> {
    const src = this.source as Record<PropertyKey, unknown>
    if (this.isInputPlaceholder || this.stopped !== undefined) return // fed by the writable, or already given up
    this.ran = true
    try {
      if (src instanceof ReadableStream) {
        const reader = (src as ReadableStream<unknown>).getReader()
        this.closeSource = (reason) => reader.cancel(reason)
        await this.loop(() => reader.read(), true, () => reader.releaseLock())
      } else if (typeof src[Symbol.asyncIterator] === 'function') {
        const it = (src[Symbol.asyncIterator] as () => AsyncIterator<unknown>)()
        this.closeSource = () => it.return?.()
        await this.loop(() => it.next(), true)
      } else {
        const it = src as unknown as Iterator<unknown>
        this.closeSource = () => it.return?.()
        await this.loop(() => it.next(), false)
      }
    } catch (err) {
      if (this.stopped === undefined) this.core.fail(err, true)
    }
  }

  private async loop(next: () => IteratorResult<unknown> | Promise<IteratorResult<unknown>>, isAsync: boolean, done?: () => void): Promise<void> {
    for (;;) {
      if (this.stopped !== undefined) return
      if (!this.window.open) {
        await this.room().catch(() => {})
        continue
      }
      let r: IteratorResult<unknown>
      try {
        r = isAsync ? await next() : (next() as IteratorResult<unknown>)
      } catch (err) {
        // The source failed: the remote function sees its input error.
        if (this.stopped === undefined) {
          this.closeSource = undefined
          this.core.inputFailed(this.id, err)
        }
        return
      }
      if (this.stopped !== undefined) return
      if (r.done) {
        this.closeSource = undefined
        done?.()
        this.core.inputEnded(this.id)
        return
      }
      this.send(r.value)
    }
  }
}

/**
 * Lets a source that was never read clean up, as a source that was read is
 * when its call ends: a call cancelled, aborted or failed before it started
 * must not leave a ReadableStream (a file, a socket) open.
 */
function closeUnread(source: unknown, reason: unknown): unknown {
  if (isInput(source)) return undefined
  if (source instanceof ReadableStream) return source.locked ? undefined : source.cancel(reason)
  const it = source as { return?: (v?: unknown) => unknown }
  // Iterators (generator objects, array iterators) have return(); an iterable that is not its own iterator was never opened.
  return typeof it.return === 'function' ? it.return() : undefined
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
export class CallCore implements SessionCall {
  readonly generator: boolean
  readonly result: Promise<unknown>
  private resolveResult!: (v: unknown) => void
  private rejectResult!: (e: unknown) => void
  private readonly output: ItemQueue<unknown>
  private stream: ItemStream<unknown> | undefined
  private writableStream: WritableStream<unknown> | undefined
  private writableController: WritableStreamDefaultController | undefined
  private readonly pumps = new Map<number, InputPump>()
  private inputPump: InputPump | undefined
  private readonly args: Buffer
  private readonly argPaths = new Map<number, string>()
  private state = State.Starting
  private session: Session | undefined
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
    this.result = new Promise((resolve, reject) => {
      this.resolveResult = resolve
      this.rejectResult = reject
    })
    // Reading only the stream must not leave an unhandled rejection behind.
    this.result.catch(() => {})
    this.finalPromise = new Promise((r) => (this.finalResolve = r))
    this.started = new Promise((r) => (this.startedResolve = r))
    const marks = { items: options.highWaterMark, bytes: options.highWaterBytes }
    this.output = new ItemQueue(marks, {
      credit: (c) => this.session?.send(Kind.credit, this.id, 0, payloads.credit(c.items, c.bytes), true),
      cancel: (reason) => this.cancel(reason),
    })
    // Encoding the arguments first means a value that cannot be sent fails here, before anything is sent.
    let nextStream = 1
    const toId = (v: unknown): number | undefined => {
      if (!isStreamSource(v)) return undefined
      if (isInput(v) && this.inputPump) throw new TypeError('`input` may appear only once among the arguments of a call')
      const id = nextStream++
      if (id > 0xffff) throw new RangeError('a call may stream at most 65535 arguments')
      const pump = new InputPump(this, id, v, marks)
      this.pumps.set(id, pump)
      if (isInput(v)) this.inputPump = pump
      return id
    }
    this.args = valueBytes(args, 'args', { toId })
    // The call frame also carries a small JSON header; leave it room.
    if (this.args.byteLength + 4096 > maxFrameBytes) {
      throw new SerializeError(`args: ${this.args.byteLength} bytes exceed maxFrameBytes ${maxFrameBytes}; pass large data as a stream (an iterator or ReadableStream) instead`, 'args')
    }
    // Name each streamed argument by its position, for messages about its items.
    for (const [id, pump] of this.pumps) this.argPaths.set(id, `args[${args.indexOf(pump.source)}]`)
  }

  private get label(): string {
    return this.name()
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
      const session = await target.session()
      if (this.state !== State.Starting) return target.unused?.(session)
      this.session = session
      this.hostName = session.host
      this.id = session.register(this)
      const header: CallHeader = {
        bundle: where.bundle,
        fn: where.fn,
        module: where.module,
        out: this.output.ledger.initial,
        streams: [...this.pumps.keys()].map((id) => ({ id, items: this.options.highWaterMark, bytes: this.options.highWaterBytes })),
      }
      const head = Buffer.from(JSON.stringify(header), 'utf8')
      const payload = Buffer.allocUnsafe(4 + head.byteLength + this.args.byteLength)
      payload.writeUInt32LE(head.byteLength, 0)
      head.copy(payload, 4)
      this.args.copy(payload, 4 + head.byteLength)
      session.send(Kind.call, this.id, 0, payload)
      this.state = State.Running
      this.startedResolve()
      for (const pump of this.pumps.values()) void pump.run()
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
    this.writableStream = new WritableStream(
      {
        start: (c) => {
          this.writableController = c
        },
        write: async (chunk) => {
          await this.started
          await pump.room()
          try {
            pump.send(chunk)
          } catch (err) {
            // A chunk that cannot be sent fails the call (nothing of it was sent), not just this pipe.
            this.fail(err, true)
            throw err
          }
        },
        // An input closed or aborted before the call frame went out must still
        // reach the worker once it has: otherwise the remote waits for an end
        // that was dropped, and the call never settles.
        close: async () => {
          await this.started
          if (pump.stopped === undefined) this.inputEnded(pump.id)
        },
        abort: async (reason) => {
          await this.started
          if (pump.stopped === undefined) this.inputFailed(pump.id, reason)
        },
      },
      { highWaterMark: 1 },
    )
    return this.writableStream
  }

  argPath(id: number): string {
    return this.argPaths.get(id) ?? `args[?]`
  }

  /** Writes one item of streamed argument `stream` (the pump checked the credit). */
  sendItem(stream: number, value: unknown, path: () => string): number {
    if (this.state !== State.Running || !this.session) throw new CancelError(`${this.label} is not running`)
    this.activity()
    const bytes = this.session.sendItem(this.id, stream, value, path)
    this.session.counters.itemsOut++
    this.session.counters.bytesOut += bytes
    return bytes
  }

  inputEnded(stream: number): void {
    this.pumps.get(stream)?.stop(new CancelError('the input has ended'))
    if (this.state === State.Running) this.session?.send(Kind.end, this.id, stream)
  }

  inputFailed(stream: number, error: unknown): void {
    this.pumps.get(stream)?.stop(error)
    if (this.state !== State.Running) return
    let payload: Buffer
    try {
      payload = valueBytes(error, `${this.argPath(stream)} error`)
    } catch {
      payload = valueBytes(new Error(String(error)), 'error')
    }
    this.session?.send(Kind.error, this.id, stream, payload)
  }

  // -- frames from the worker ---------------------------------------------------

  frame(f: Frame): void {
    switch (f.kind) {
      case Kind.data: {
        // The worker sends items only on the output stream; the input streams' items go the other way.
        if (f.stream !== 0) throw new ProtocolError(`worker ${this.where} sent data on stream ${f.stream} of call ${this.id}, which only has an output stream 0`)
        if (this.state !== State.Running) return
        const items = readItems(f.payload, f.owned)
        this.activity()
        this.output.push(items, f.payload.byteLength)
        const counters = this.session?.counters
        if (counters) {
          counters.itemsIn += items.length
          counters.bytesIn += f.payload.byteLength
        }
        if (items.length > 0) this.streamed = true
        return
      }
      case Kind.credit:
        this.pump(f).credit(payloads.readCredit(f.payload))
        if (this.state === State.Running) this.activity()
        return
      case Kind.cancel: {
        // The remote function stopped reading this argument.
        const pump = this.pump(f)
        const err = new CancelError(`${this.label} stopped reading ${pump.isInputPlaceholder ? 'its input' : this.argPath(f.stream)}`)
        pump.stop(err)
        if (pump === this.inputPump) this.errorWritable(err)
        return
      }
      case Kind.end: {
        this.outputFrame(f)
        // Decoded before anything changes: a payload that cannot be read is a protocol error, and the call fails with the session.
        const { value, streamed } = payloads.readEnd(f.payload, readValue)
        if (streamed) this.streamed = true
        else if (this.session) {
          // A function's return value is what it sends this side: counted as an item.
          this.session.counters.itemsIn++
          this.session.counters.bytesIn += f.payload.byteLength
        }
        this.finished()
        if (this.settle()) {
          this.output.end()
          this.resolveResult(value)
        }
        return
      }
      case Kind.error: {
        this.outputFrame(f)
        const body = readValue(f.payload) as ErrorPayload
        if (typeof body !== 'object' || body === null || !('error' in body) || typeof body.index !== 'number') {
          throw new ProtocolError(`worker ${this.where} sent an error frame for call ${this.id} whose payload is not an error report (${describe(body)})`)
        }
        const err = this.remoteError(body)
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

  /** The pump of the input stream a frame is about; a stream the call does not have is a protocol error. */
  private pump(f: Frame): InputPump {
    const pump = this.pumps.get(f.stream)
    if (!pump) throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.id}, which has no such input stream`)
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
    this.fail(error)
    this.finished()
  }

  // -- ending -----------------------------------------------------------------

  /** Cancels the call; resolves when the worker confirms (its `finally` blocks have run). */
  cancel(reason?: unknown): Promise<void> {
    const err = reason instanceof CancelError ? reason : new CancelError(`${this.label} was cancelled`, reason === undefined ? undefined : { cause: reason })
    this.fail(err, true)
    return this.finalPromise
  }

  /**
   * Fails the call from this side (timeout, abort, a value that cannot be
   * sent, a lost worker): the result rejects, the stream errors, and the
   * worker is told to stop. With `drop`, items not yet read are discarded.
   */
  fail(error: unknown, drop = false): void {
    const wasRunning = this.state === State.Running
    if (!this.settle()) return
    if (wasRunning && this.session && !(error instanceof CancelError)) this.session.counters.errors++
    this.output.fail(error, drop)
    this.rejectResult(error)
    if (wasRunning && this.session && !this.final) {
      let reason: Buffer | undefined
      try {
        reason = valueBytes(error, 'reason')
      } catch {
        reason = undefined
      }
      this.session.send(Kind.cancel, this.id, 0, reason)
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

  /** Marks the outcome decided; false if it already was. Stops timers, pumps and the writable. */
  private settle(): boolean {
    if (this.state === State.Settled) return false
    this.state = State.Settled
    this.startedResolve()
    for (const t of this.timers) clearTimeout(t)
    this.timers = []
    clearTimeout(this.idleTimer)
    if (this.abortListener) this.options.signal?.removeEventListener('abort', this.abortListener)
    // Built only when something needs it: an error's stack costs microseconds, on every call.
    if (this.pumps.size > 0 || this.writableController) {
      const stop = new CancelError(`${this.label} has finished`)
      for (const pump of this.pumps.values()) pump.stop(stop)
      this.errorWritable(stop)
    }
    return true
  }

  /** The worker's last frame for this call arrived (or never will): release the id. */
  private finished(): void {
    if (this.final) return
    this.final = true
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    if (this.session && this.id) this.session.release(this.id)
    this.finalResolve()
  }

  /** Errors the writable side, so a pipe into it stops (and cancels its source) instead of waiting for room that will not come. */
  private errorWritable(err: unknown): void {
    this.writableController?.error(err)
  }

  private remoteError(body: ErrorPayload): Error {
    const e = body.error
    if (body.runtime && e instanceof FarpipeError) return e
    const isError = e instanceof Error
    const remoteName = isError ? e.name : typeof e
    const message = isError ? e.message : String(e)
    return new RemoteError(
      `${remoteName}: ${message} (in ${this.label} on ${this.session?.where ?? 'its worker'}, after ${body.index} item${body.index === 1 ? '' : 's'})`,
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
    this.lastActivity = performance.now()
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
