/**
 * Pumps: the sending end of a stream. A pump pulls a local source (a
 * ReadableStream, an async iterable, an iterator) while the receiving side
 * has granted room for it, and writes each item through its owner.
 *
 * Both sides use them: the caller for streamed arguments (and streams
 * nested in them, or in the items of an input), the worker for streams
 * nested in what a function yields or returns.
 *
 * @module
 */
import { CancelError, ProtocolError } from './errors.ts'
import { CreditWindow, type Credit, type Watermarks } from './flow.ts'
import { isInput } from './input.ts'

/** What a pump needs from the side that owns it. */
export interface PumpOwner {
  /** Writes one item of stream `id`; returns the bytes it counts for. Throws (nothing sent) when it cannot be sent. */
  sendItem(id: number, value: unknown, path: () => string): number
  /** The source ended: tell the receiver. */
  pumpEnded(pump: StreamPump): void
  /** The source failed with `error`: tell the receiver. */
  pumpFailed(pump: StreamPump, error: unknown): void
  /** An item could not be sent (a SerializeError), or waiting failed. */
  pumpBroke(pump: StreamPump, error: unknown): void
}

/** One stream on its sending side: its source and the credit the receiver granted for it. */
export class StreamPump {
  readonly window: CreditWindow
  /** Waiting for room (the pump's own loop, and a writable's write or a direct pipe for `input`): each wakes. */
  private wakes: (() => void)[] = []
  /** Set when nobody wants items from this source any more. */
  stopped: unknown = undefined
  /** Items sent so far. */
  sent = 0
  /** True once the source ended or failed and the receiver was told. */
  finished = false
  private closeSource: ((reason: unknown) => unknown) | undefined
  /** True once {@link run} began pulling the source. */
  private ran = false
  /** Resolves once the source was let go (read to its end, or its cleanup ran after a stop). */
  readonly done: Promise<void>
  private doneResolve!: () => void

  constructor(
    private readonly owner: PumpOwner,
    readonly id: number,
    readonly source: unknown,
    /** The credit it starts with, and the receiver's window (its high-water marks), which credit never exceeds. */
    window: { initial: Credit; max: Watermarks },
    /** Where the stream sits, for messages (`args[1]`, `yield[3].body`). */
    public path: () => string,
  ) {
    this.window = new CreditWindow(window.initial, window.max)
    this.done = new Promise((r) => (this.doneResolve = r))
  }

  /** True for the `input` placeholder: fed by the call's writable side, not pulled. */
  get isInputPlaceholder(): boolean {
    return isInput(this.source)
  }

  /** True while this side, not the receiver, holds the stream up: the receiver has granted room and the source has not filled it. */
  get waitingHere(): boolean {
    return this.stopped === undefined && this.window.open
  }

  /** A grant from the receiver; one beyond its window throws a ProtocolError naming this stream. */
  credit(c: Credit): void {
    try {
      this.window.add(c)
    } catch (err) {
      throw new ProtocolError(`stream ${this.id} (${this.path()}): ${(err as Error).message}`)
    }
    this.wakeUp()
  }

  /** Waits until the receiver has room (or the pump stops). */
  async room(): Promise<void> {
    while (!this.window.open && this.stopped === undefined) await new Promise<void>((r) => this.wakes.push(r))
    if (this.stopped !== undefined) throw this.stopped
  }

  /** Where the item being sent sits (`input[41]`): one function for every item, read only while it is sent (before `sent` moves on). */
  private readonly itemPath = (): string => `${this.path()}[${this.sent}]`

  /** Sends one item within credit. Throws (nothing sent) for a value that cannot be sent. */
  send(value: unknown): void {
    const bytes = this.owner.sendItem(this.id, value, this.itemPath)
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
    if (close) Promise.resolve().then(() => close(reason)).catch(() => {}).finally(this.doneResolve)
    else if (!this.ran || this.finished) this.doneResolve()
  }

  private wakeUp(): void {
    if (this.wakes.length === 0) return
    const woken = this.wakes
    this.wakes = []
    for (const w of woken) w()
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
      if (this.stopped === undefined) this.owner.pumpBroke(this, err)
    } finally {
      if (this.finished) this.doneResolve()
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
        // The source failed: the receiver sees the error.
        if (this.stopped === undefined) {
          this.closeSource = undefined
          this.finished = true
          this.owner.pumpFailed(this, err)
        }
        return
      }
      if (this.stopped !== undefined) return
      if (r.done) {
        this.closeSource = undefined
        this.finished = true
        done?.()
        this.owner.pumpEnded(this)
        return
      }
      this.send(r.value)
    }
  }
}

/**
 * Pumps numbered while a value was being encoded (the streams nested in
 * it): they start once the value is written, since their frames must follow
 * it, and their sources are let go if it cannot be.
 */
export class PendingPumps {
  private list: StreamPump[] = []

  get size(): number {
    return this.list.length
  }

  add(pump: StreamPump): void {
    this.list.push(pump)
  }

  /** The value went out at `path`: each pump learns where it sits, joins `running` and starts. */
  start(path: () => string, value: unknown, running: Map<number, StreamPump>): void {
    if (this.list.length === 0) return
    const started = this.list
    this.list = []
    const at = path() // now: the index it names moves on
    for (const pump of started) {
      let named: string | undefined
      pump.path = () => (named ??= pathTo(at, value, pump.source))
      running.set(pump.id, pump)
      void pump.run()
    }
  }

  /** The value could not be sent: the sources found in it are let go (`each` is told of every one). */
  abandon(reason: unknown, each?: (pump: StreamPump) => void): void {
    const dropped = this.list
    this.list = []
    for (const pump of dropped) {
      each?.(pump)
      Promise.resolve().then(() => closeUnread(pump.source, reason)).catch(() => {})
    }
  }
}

/**
 * Lets a source that was never read clean up, as a source that was read is
 * when its call ends: a call cancelled, aborted or failed before it started
 * must not leave a ReadableStream (a file, a socket) open.
 */
export function closeUnread(source: unknown, reason: unknown): unknown {
  if (isInput(source)) return undefined
  if (source instanceof ReadableStream) return source.locked ? undefined : source.cancel(reason)
  const it = source as { return?: (v?: unknown) => unknown }
  // Iterators (generator objects, array iterators) have return(); an iterable that is not its own iterator was never opened.
  return typeof it.return === 'function' ? it.return() : undefined
}

/**
 * Refuses a source sent as a stream before (by this call), or one being
 * read elsewhere: its items would go to one reader or the other. Marks it
 * sent otherwise.
 */
export function checkUnsent(source: unknown, sent: WeakSet<object>): void {
  if (typeof source !== 'object' || source === null) return
  if (sent.has(source)) throw new TypeError('this stream was sent already (a stream can be sent once: its items go to one reader)')
  if (source instanceof ReadableStream && source.locked) {
    throw new TypeError('a ReadableStream that is locked (being read elsewhere) cannot be sent')
  }
  sent.add(source)
}

/**
 * The path from `root` to `target` inside `value` (`args[0].files[2].body`),
 * for messages about a stream nested in a value; `root` alone when it cannot
 * be found. Searched only when a message needs it.
 */
export function pathTo(root: string, value: unknown, target: unknown): string {
  const seen = new Set<unknown>()
  const search = (v: unknown, at: string, depth: number): string | undefined => {
    if (v === target) return at
    if (typeof v !== 'object' || v === null || seen.has(v) || depth > 50 || v instanceof ReadableStream) return undefined
    seen.add(v)
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const found = search(v[i], `${at}[${i}]`, depth + 1)
        if (found) return found
      }
      return undefined
    }
    if (v instanceof Map) {
      let i = 0
      for (const [, x] of v) {
        const found = search(x, `${at}.get(#${i++})`, depth + 1)
        if (found) return found
      }
      return undefined
    }
    if (v instanceof Set) {
      let i = 0
      for (const x of v) {
        const found = search(x, `${at}[#${i++}]`, depth + 1)
        if (found) return found
      }
      return undefined
    }
    for (const k of Object.keys(v)) {
      const found = search((v as Record<string, unknown>)[k], /^[A-Za-z_$][\w$]*$/.test(k) ? `${at}.${k}` : `${at}[${JSON.stringify(k)}]`, depth + 1)
      if (found) return found
    }
    return undefined
  }
  return search(value, root, 0) ?? root
}
