/**
 * A remote call as the caller sees it: a TransformStream-shaped pair
 * (`writable` feeds the `input` argument, `readable` carries what the
 * function yields), a `result` promise, and `cancel()`. The public face of a
 * {@link CallCore}, which does the work.
 *
 * @module
 */
import type { ItemStream } from '../queue.ts'
import type { CallCore } from './core.ts'

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

const cores = new WeakMap<RemoteCall<unknown, unknown, unknown>, CallCore>()

/** The machinery of a call (for the pool; not exported from the package). */
export function coreOf(call: RemoteCall<any, any, any>): CallCore {
  return cores.get(call)!
}
