// Type-level spec, checked by `npm run typecheck` (never run): types flow from
// the remote function to the call site. Each @ts-expect-error must be an error.
import { input, pool, remote, type RemoteCall, type ThenableCall } from 'farpipe'
import { files, fibonacci, movingAverage, runningMean } from '../examples/tasks.ts'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function expectType<T extends true>(_: T): void {}

export async function checks(): Promise<void> {
  const p = await pool()

  // p.run(fibonacci, 10) is a RemoteCall<never, number, void>.
  const fib = p.run(fibonacci, 10)
  expectType<Equal<typeof fib, RemoteCall<never, number, void>>>(true)
  // @ts-expect-error a string where n: number is expected
  p.run(fibonacci, '10')
  // @ts-expect-error a missing argument
  p.run(fibonacci)
  // @ts-expect-error too many arguments
  p.run(fibonacci, 1, 2)

  // Streams nested in values keep the types written in the remote function.
  const listed = p.run(files, '/tmp')
  expectType<Equal<typeof listed, RemoteCall<never, { name: string; body: ReadableStream<Uint8Array> }, void>>>(true)
  for await (const { name, body } of listed) {
    expectType<Equal<typeof name, string>>(true)
    expectType<Equal<typeof body, ReadableStream<Uint8Array>>>(true)
  }

  // AsyncIterable<number> parameters take streams, async iterables, iterators and `input`.
  const mean: ThenableCall<never, number[]> = p.run(runningMean, [1, 2, 3].values())
  const means: number[] = await mean
  void means
  p.run(runningMean, ReadableStream.from([1, 2]))
  p.run(runningMean, (async function* () { yield 1 })())
  p.run(runningMean, (function* () { yield 1 })())
  // @ts-expect-error items of the wrong type
  p.run(runningMean, ['a', 'b'].values())

  // With `input`, the writable side takes the parameter's element type.
  const stage = p.run(movingAverage, input, 3)
  expectType<Equal<typeof stage, RemoteCall<number, number, void>>>(true)
  const piped: ReadableStream<number> = ReadableStream.from([1, 2]).pipeThrough(stage)
  void piped
  // @ts-expect-error a stream of strings into a number stage
  ReadableStream.from(['a']).pipeThrough(p.run(movingAverage, input, 3))

  // Sync functions and generators type their results too.
  const add = remote((a: number, b: number) => a + b)
  const sum: number = await p.run(add, 1, 2)
  void sum
  const gen = remote(function* (n: number) {
    yield String(n)
    return true
  })
  const g = p.run(gen, 1)
  expectType<Equal<typeof g, RemoteCall<never, string, boolean>>>(true)
  for await (const s of g) s.toUpperCase()
  // @ts-expect-error a generator call is not awaitable for its result
  const notThenable: string = await p.run(gen, 1)
  void notThenable

  // One rule for types and runtime: a function that returns a generator streams, declared with function* or not.
  async function* inner(n: number) {
    yield n
    return 'done'
  }
  const returnsGen = remote((n: number) => inner(n))
  const rg = p.run(returnsGen, 1)
  expectType<Equal<typeof rg, RemoteCall<never, number, string>>>(true)
  const mapped: ReadableStream<number> = p.map(returnsGen, [1, 2])
  void mapped
  // map's items may be what run() takes for the parameter: an iterator or a ReadableStream for an AsyncIterable one.
  const sums = p.map(remote(async (data: AsyncIterable<number>) => data), [[1, 2].values(), ReadableStream.from([3])])
  void sums

  // The pool's events are typed.
  p.addEventListener('hostdown', (e) => void e.detail.error?.message.toUpperCase())
  p.addEventListener('workerexit', (e) => void e.detail.worker.toFixed())
  // map() returns a stream with its progress.
  const progressed = p.map(remote((x: number) => x * 2), [1, 2])
  const started: number = progressed.progress.started
  void started

  // @ts-expect-error run() takes only functions made with remote()
  p.run((x: number) => x, 1)

  // map() yields each result in order; for a generator, each item.
  const squares: ReadableStream<number> = p.map(remote((x: number) => x * x), [1, 2].values())
  void squares

  await p.close()
}
