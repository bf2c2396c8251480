/**
 * The `input` placeholder and what counts as a streamed argument.
 *
 * @module
 */

declare const inputBrand: unique symbol

/** The type of {@link input}. */
export interface Input {
  /** A compile-time brand only. */
  readonly [inputBrand]: true
}

/**
 * Stands for a call's writable side among its arguments: the remote function
 * receives, in that position, a stream of what is written to
 * `call.writable`. With it a call becomes a pipe stage:
 *
 * ```ts
 * source.pipeThrough(p.run(movingAverage, input, 3)).pipeTo(sink)
 * ```
 */
export const input: Input = Object.freeze(Object.create(null, {
  [Symbol.toStringTag]: { value: 'farpipe.input' },
  [Symbol.for('farpipe.input')]: { value: true },
})) as Input

/** True for the {@link input} placeholder (of any copy of farpipe). */
export function isInput(v: unknown): v is Input {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[Symbol.for('farpipe.input')] === true
}

/** Anything that can be passed for a parameter typed `AsyncIterable<T>`: it is streamed. */
export type StreamSource<T> = ReadableStream<T> | AsyncIterable<T> | Iterator<T> | Input

/**
 * True for values sent as streams rather than whole: ReadableStreams, async
 * iterables, and iterators (objects with `next()` that are iterable, such as
 * generator objects and `array.values()`). Arrays, Maps, Sets and strings are
 * iterable but have no `next()`, so they are sent whole.
 */
export function isStreamSource(v: unknown): boolean {
  if (typeof v !== 'object' || v === null) return false
  if (v instanceof ReadableStream || isInput(v)) return true
  const o = v as Record<symbol | string, unknown>
  if (typeof o[Symbol.asyncIterator] === 'function') return true
  return typeof o.next === 'function' && typeof o[Symbol.iterator] === 'function'
}
