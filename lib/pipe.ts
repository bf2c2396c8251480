/**
 * Pipes from one call into the next without a web-stream hop per item.
 *
 * `a.readable.pipeThrough(b)` with the standard `pipeTo` costs a read
 * request, a write request and several promises per item, and it sends one
 * item at a time, so the items of several pipes running at once interleave
 * on the link and go out as frames of an item or two. When the source is an
 * {@link ItemStream} (a call's output, a nested stream) and the destination
 * is a call's `writable`, the pipe here moves what is queued straight to
 * that call, a batch at a time within its credit: one wait per batch, not
 * per item, and consecutive items of one stream in one frame.
 *
 * It keeps what `pipeTo` promises: both streams are locked while it runs; a
 * source error aborts the destination, a destination error cancels the
 * source, the end of the source closes the destination (each unless the
 * matching `prevent*` option is set); `signal` stops it; the promise settles
 * as the standard one does. Items still go through the destination call's
 * pump, which numbers the streams nested in them.
 *
 * @module
 */

/**
 * What a pipe reads behind a stream whose items may bypass it: the stream's
 * queue (an ItemQueue of lib/queue.ts, which declares this pipe's entry
 * points; declared here so that this room does not reach back up for it).
 */
export interface DirectSource<T> {
  /** Items queued now. */
  readonly size: number
  /** True once the stream ended, failed or was cancelled (queued items may still be read). */
  readonly closed: boolean
  /** The stream's error, once it failed. */
  readonly failed: { error: unknown } | undefined
  /** The next queued item (the caller checked `size`). */
  poll(): T | symbol
  /** Resolves once an item is queued or the stream is closed. */
  whenReady(): Promise<void>
}

/** What a pipe needs of a writable that items may bypass (a call's `writable`; see CallCore). */
export interface DirectSink {
  /**
   * True while items may bypass the stream: nothing was ever written through
   * it (so nothing is queued or in flight there), and it was not closed or
   * aborted. Otherwise the standard pipe runs, with its exact ordering.
   */
  readonly idle: boolean
  /** True when an item may be written now (the call runs and has credit for one). */
  open(): boolean
  /** Resolves when an item may be written; rejects with the writable's error when none ever may. */
  room(): Promise<void>
  /** Writes one item; throws the writable's error (after erroring it) when it cannot be sent. */
  write(item: unknown): void
}

const sinks = new WeakMap<WritableStream<any>, DirectSink>()

/** Registers `stream` as a writable that pipes from an ItemStream may bypass through `sink`. */
export function registerSink(stream: WritableStream<any>, sink: DirectSink): void {
  sinks.set(stream, sink)
}

/** The sink of a writable registered with {@link registerSink}. */
export function sinkOf(stream: unknown): DirectSink | undefined {
  return typeof stream === 'object' && stream !== null ? sinks.get(stream as WritableStream) : undefined
}

/** `pipeTo`'s options, read once in the standard order. */
export interface PipeFlags {
  preventClose: boolean
  preventAbort: boolean
  preventCancel: boolean
  signal: AbortSignal | undefined
}

/** The options read as `pipeTo` reads them, or undefined when they are not valid (the standard pipe then throws its own error). */
export function pipeOptions(options: Parameters<ReadableStream['pipeTo']>[1]): PipeFlags | undefined {
  if (options === undefined) return { preventClose: false, preventAbort: false, preventCancel: false, signal: undefined }
  if (typeof options !== 'object' || options === null) return undefined
  const preventAbort = !!options.preventAbort
  const preventCancel = !!options.preventCancel
  const preventClose = !!options.preventClose
  const signal = options.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) return undefined
  return { preventClose, preventAbort, preventCancel, signal }
}

/** Why a pipe stopped before its source ended. */
interface Interrupt {
  from: 'destination' | 'signal'
  error: unknown
}

/**
 * Pipes `queue` (the queue of `source`) into `destination` through its
 * `sink`. The caller checked that neither stream is locked and that the
 * sink is idle.
 */
export async function pipeQueue<T>(source: ReadableStream<T>, queue: DirectSource<T>, destination: WritableStream<T>, sink: DirectSink, o: PipeFlags): Promise<void> {
  const reader = source.getReader()
  const writer = destination.getWriter()
  let shuttingDown = false
  let interrupt: Interrupt | undefined
  let wake: (() => void) | undefined
  const poke = () => {
    const w = wake
    wake = undefined
    w?.()
  }
  const stop = (i: Interrupt) => {
    if (shuttingDown) return
    interrupt ??= i
    poke()
  }
  // The destination errors (its call failed, or stopped reading its input) while the pipe waits for the source.
  writer.closed.then(undefined, (error: unknown) => stop({ from: 'destination', error }))
  const { signal } = o
  const onAbort = () => stop({ from: 'signal', error: signal!.reason })
  if (signal?.aborted) onAbort()
  else signal?.addEventListener('abort', onAbort)
  /** Waits until `p` settles or something stops the pipe; `p` rejects only for the destination. */
  const until = (p: Promise<void>) =>
    new Promise<void>((resolve) => {
      wake = resolve
      p.then(poke, (error: unknown) => stop({ from: 'destination', error }))
    })

  for (;;) {
    if (interrupt) break
    if (!sink.open()) {
      await until(sink.room())
      continue
    }
    if (queue.size === 0) {
      if (queue.closed) break
      await until(queue.whenReady())
      continue
    }
    // A batch: what is queued, within the destination's credit, without a promise per item.
    try {
      do sink.write(queue.poll())
      while (queue.size > 0 && sink.open())
    } catch (error) {
      stop({ from: 'destination', error })
    }
  }

  shuttingDown = true
  let error: { error: unknown } | undefined
  let action: Promise<unknown> | undefined
  if (interrupt?.from === 'signal') {
    error = { error: interrupt.error }
    action = Promise.all([o.preventAbort ? undefined : writer.abort(interrupt.error), o.preventCancel ? undefined : reader.cancel(interrupt.error)])
  } else if (interrupt) {
    error = { error: interrupt.error }
    if (!o.preventCancel) action = reader.cancel(interrupt.error)
  } else if (queue.failed) {
    error = { error: queue.failed.error }
    if (!o.preventAbort) action = writer.abort(queue.failed.error)
  } else if (!o.preventClose) {
    action = writer.close()
  }
  if (action) {
    try {
      await action
    } catch (e) {
      error = { error: e }
    }
  }
  signal?.removeEventListener('abort', onAbort)
  writer.releaseLock()
  reader.releaseLock()
  if (error) throw error.error
}
