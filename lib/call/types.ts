/**
 * The types of a call, derived from the remote function's own type: what
 * `Pool.run(fn, ...args)` accepts and returns, so that a wrong argument is a
 * compile error and what a call yields is typed from what the function
 * yields.
 *
 * @module
 */
import type { Input, StreamSource } from '../input.ts'
import type { RemoteCall } from './remote-call.ts'

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
