/**
 * The receiving end of one stream: a queue bounded by credit, read as an
 * async iterator or as a ReadableStream.
 *
 * Both sides use it: the caller for a call's output, the worker for each
 * streamed argument. Items arrive in batches (one data frame each); taking
 * an item frees room, and the queue's {@link CreditLedger} decides when the
 * room is worth a credit frame to the sender.
 *
 * @module
 */
import { CreditLedger, type Credit, type Watermarks } from './flow.ts'
import { pipeOptions, pipeQueue, sinkOf } from './pipe.ts'

/** A stream that arrived inside item `index` of a batch: cancelled if that item is dropped unread. */
export interface NestedRef {
  index: number
  cancel(): void
}

/** What a queue tells the side that owns it. */
export interface QueueHooks {
  /** The consumer made room: grant the sender this much more. */
  credit(credit: Credit): void
  /** The consumer gave up on the stream; resolves when the sender has stopped. */
  cancel(reason: unknown): Promise<void> | void
  /** The consumer waits for the next item until `until` settles (a pool holds the process open meanwhile). */
  waiting?(until: Promise<unknown>): void
}

interface Batch {
  items: unknown[]
  at: number
  /** Bytes each item of the batch counts for (the frame's bytes shared out evenly). */
  per: number
  /** Streams nested in the batch's items, by item. */
  nested: NestedRef[] | undefined
}

interface Waiter {
  resolve(r: IteratorResult<unknown>): void
  reject(e: unknown): void
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined })

/** What {@link ItemQueue.poll} gives when no item is queued. */
export const EMPTY: unique symbol = Symbol('empty')

/** A credit-bounded queue of items with one consumer. */
export class ItemQueue<T> {
  readonly ledger: CreditLedger
  private batches: (Batch | undefined)[] = []
  private head = 0
  /** Reads waiting for an item, in the order they were made (several may be in flight on one iterator). */
  private waiters: Waiter[] = []
  /** Woken when an item arrives or the stream closes (see {@link whenReady}). */
  private readies: (() => void)[] = []
  private ended = false
  private failure: { error: unknown } | undefined
  private cancelled = false
  /** Called once, when the consumer sees the end or the error (used to release a reader lock). */
  onFinal: (() => void) | undefined

  constructor(marks: Watermarks, private readonly hooks: QueueHooks, initial?: Credit) {
    this.ledger = new CreditLedger(marks, initial)
  }

  /** Items waiting for the consumer. */
  get size(): number {
    return this.ledger.queuedItems
  }

  /** True once the stream ended, failed or was cancelled (queued items may still be readable). */
  get closed(): boolean {
    return this.ended || this.failure !== undefined || this.cancelled
  }

  /** The stream's error, once it failed (the consumer sees it after the items queued before it). */
  get failed(): { error: unknown } | undefined {
    return this.failure
  }

  /**
   * Adds a batch that arrived in one frame of `bytes` bytes. Ignored after
   * cancel. `nested` names the streams inside its items: those of items
   * dropped unread (the consumer cancelled, the stream failed) are cancelled,
   * so that their sources do not stay open for a reader that will never come.
   */
  push(items: unknown[], bytes: number, nested?: NestedRef[]): void {
    if (this.cancelled || this.failure || items.length === 0) {
      if (nested) for (const n of nested) n.cancel()
      return
    }
    this.ledger.received(items.length, bytes)
    this.batches.push({ items, at: 0, per: bytes / items.length, nested })
    while (this.waiters.length > 0 && this.ledger.queuedItems > 0) this.waiters.shift()!.resolve({ done: false, value: this.shift() })
    this.wakeReady()
  }

  /** The sender finished: the consumer reads what is queued, then the end. */
  end(): void {
    if (this.closed) return
    this.ended = true
    this.settleWaiter()
  }

  /**
   * The stream failed. With `drop`, queued items are discarded and the
   * consumer sees the error next; without, it reads them first.
   */
  fail(error: unknown, drop = false): void {
    if (this.closed) return
    this.failure = { error }
    if (drop) this.discard()
    this.settleWaiter()
  }

  /** The next item, the end, or the error. */
  next(): Promise<IteratorResult<T>> {
    if (this.ledger.queuedItems > 0) return Promise.resolve({ done: false, value: this.shift() as T })
    if (this.failure) {
      this.final()
      return Promise.reject(this.failure.error)
    }
    if (this.ended || this.cancelled) {
      this.final()
      return Promise.resolve(DONE)
    }
    this.grantToWaiter()
    const wait = new Promise<IteratorResult<T>>((resolve, reject) => {
      this.waiters.push({ resolve: resolve as Waiter['resolve'], reject })
    })
    this.hooks.waiting?.(wait)
    return wait
  }

  /**
   * The next item if one is queued, else {@link EMPTY} (then {@link closed}
   * and {@link failed} say whether more may come). For a consumer that takes
   * whole batches without a promise per item (see {@link ItemStream.pipeTo}).
   */
  poll(): T | typeof EMPTY {
    return this.ledger.queuedItems > 0 ? (this.shift() as T) : EMPTY
  }

  /** Resolves once an item is queued or the stream is closed; takes nothing (see {@link poll}). */
  whenReady(): Promise<void> {
    if (this.ledger.queuedItems > 0 || this.closed) return Promise.resolve()
    this.grantToWaiter()
    const wait = new Promise<void>((resolve) => this.readies.push(resolve))
    this.hooks.waiting?.(wait)
    return wait
  }

  /** The consumer gives up: queued items are dropped and the sender is told to stop. */
  cancel(reason?: unknown): Promise<void> {
    if (this.cancelled) return Promise.resolve()
    const wasClosed = this.closed
    this.cancelled = true
    this.discard()
    this.settleWaiter()
    return wasClosed ? Promise.resolve() : Promise.resolve(this.hooks.cancel(reason))
  }

  /**
   * The consumer waits and nothing is queued: a stream that started with a
   * small first window (or none: see NestedBudget) is granted the rest now,
   * since it has nothing of its own to trigger a grant with. Otherwise the
   * grant was made as items were taken, and this grants nothing.
   */
  private grantToWaiter(): void {
    const credit = this.ledger.grant()
    if (credit && !this.closed) this.hooks.credit(credit)
  }

  private shift(): unknown {
    const b = this.batches[this.head]!
    const v = b.items[b.at++]
    if (b.at === b.items.length) {
      this.batches[this.head++] = undefined
      if (this.head === this.batches.length) {
        this.batches.length = 0
        this.head = 0
      } else if (this.head > 1024) {
        this.batches = this.batches.slice(this.head)
        this.head = 0
      }
    }
    const credit = this.ledger.consumed(1, b.per)
    if (credit && !this.closed) this.hooks.credit(credit)
    return v
  }

  private discard(): void {
    for (let i = this.head; i < this.batches.length; i++) {
      const b = this.batches[i]
      if (b?.nested) for (const n of b.nested) if (n.index >= b.at) n.cancel()
    }
    this.batches = []
    this.head = 0
    this.ledger.consumed(this.ledger.queuedItems, this.ledger.queuedBytes)
  }

  private wakeReady(): void {
    if (this.readies.length === 0) return
    const woken = this.readies
    this.readies = []
    for (const r of woken) r()
  }

  /** The stream closed: reads waiting for an item get the end or the error (there are none while items are queued). */
  private settleWaiter(): void {
    this.wakeReady()
    if (this.waiters.length === 0 || this.ledger.queuedItems > 0) return
    const waiting = this.waiters
    this.waiters = []
    this.final()
    for (const w of waiting) {
      if (this.failure) w.reject(this.failure.error)
      else w.resolve(DONE)
    }
  }

  private final(): void {
    const f = this.onFinal
    this.onFinal = undefined
    f?.()
  }
}

/**
 * A ReadableStream over an {@link ItemQueue}. Readers and pipes pull from
 * the queue one item at a time (the stream's own high-water mark is 0, so
 * the queue is the only buffer); `for await` reads the queue directly,
 * without a web-stream hop per item, and still locks the stream while it
 * runs. A pipe into a call's writable moves batches straight from the queue
 * (see lib/pipe.ts).
 *
 * Those fast paths read the queue behind the stream, so they step aside
 * (the standard path runs) while the stream itself holds an item or is
 * pulling one: a read left pending when its reader's lock was released
 * makes the stream pull an item it keeps, and reading the queue past it
 * would lose it.
 */
export class ItemStream<T> extends ReadableStream<T> {
  readonly #queue: ItemQueue<T>
  readonly #own: { pulling: boolean; controller: ReadableStreamDefaultController<T> | undefined }

  constructor(queue: ItemQueue<T>) {
    const own: { pulling: boolean; controller: ReadableStreamDefaultController<T> | undefined } = { pulling: false, controller: undefined }
    super(
      {
        start: (controller) => {
          own.controller = controller
        },
        pull: async (controller) => {
          own.pulling = true
          try {
            const r = await queue.next()
            if (r.done) controller.close()
            else controller.enqueue(r.value)
          } finally {
            own.pulling = false
          }
        },
        cancel: (reason) => queue.cancel(reason),
      },
      { highWaterMark: 0 },
    )
    this.#queue = queue
    this.#own = own
  }

  /** True when the queue may be read directly: unlocked, and the stream neither holds an item nor is pulling one. */
  #direct(): boolean {
    return !this.locked && !this.#own.pulling && (this.#own.controller?.desiredSize ?? 0) >= 0
  }

  /**
   * As the standard `pipeTo`, but into the writable side of a remote call
   * items move straight from this stream's queue to that call, a batch at a
   * time within its credit, without a web-stream hop per item (see
   * lib/pipe.ts). Anything else takes the standard path.
   */
  override pipeTo(destination: WritableStream<T>, options?: PipeOptions<T>): Promise<void> {
    const sink = sinkOf(destination)
    const o = sink && this.#direct() && !destination.locked && sink.idle ? pipeOptions(options) : undefined
    if (!o) return super.pipeTo(destination, options)
    return pipeQueue(this, this.#queue, destination, sink!, o)
  }

  /** As the standard `pipeThrough`, with the direct path of {@link pipeTo} when `transform` is a remote call. */
  override pipeThrough<U>(transform: { readable: ReadableStream<U>; writable: WritableStream<T> }, options?: PipeOptions<T>): ReadableStream<U> {
    const destination = (transform as { writable?: WritableStream<T> } | undefined)?.writable
    const sink = sinkOf(destination)
    const o = sink && transform.readable instanceof ReadableStream && this.#direct() && !destination!.locked && sink.idle ? pipeOptions(options) : undefined
    if (!o) return super.pipeThrough(transform, options)
    pipeQueue(this, this.#queue, destination!, sink!, o).catch(() => {})
    return transform.readable
  }

  override values(options?: { preventCancel?: boolean }): ReadableStreamAsyncIterator<T> {
    if (!this.#direct()) return super.values(options)
    const reader = this.getReader()
    const queue = this.#queue
    let open = true
    const release = () => {
      if (open) {
        open = false
        reader.releaseLock()
      }
    }
    queue.onFinal = release
    const iterator: ReadableStreamAsyncIterator<T> = {
      next: () => (open ? queue.next() : Promise.resolve(DONE)),
      return: async (value?: unknown) => {
        if (open) {
          release()
          if (!options?.preventCancel) await queue.cancel(undefined)
        }
        return { done: true, value: value as T }
      },
      [Symbol.asyncIterator]() {
        return iterator
      },
      async [Symbol.asyncDispose]() {
        await iterator.return!()
      },
    } as ReadableStreamAsyncIterator<T>
    return iterator
  }

  override [Symbol.asyncIterator](): ReadableStreamAsyncIterator<T> {
    return this.values()
  }
}

type ReadableStreamAsyncIterator<T> = ReturnType<ReadableStream<T>['values']>
/** `pipeTo`'s options, as the global ReadableStream declares them (a DOM lib's or Node's: declared here, the two would not match). */
type PipeOptions<T> = Parameters<ReadableStream<T>['pipeTo']>[1]
