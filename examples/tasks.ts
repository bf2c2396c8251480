// A module of remote functions. No top-level side effects: this module is
// bundled and evaluated on every worker.
import { createReadStream } from 'node:fs'
import { readdir } from 'node:fs/promises'
import * as path from 'node:path'
import { Readable } from 'node:stream'
import { remote, context } from 'farpipe'

/** The first `n` Fibonacci numbers, one at a time. */
export const fibonacci = remote(async function* (n: number) {
  let [a, b] = [0, 1]
  for (let i = 0; i < n; i++) {
    yield a
    ;[a, b] = [b, a + b]
  }
})

/** The running mean of a stream of numbers, returned once the stream ends. */
export const runningMean = remote(async (data: AsyncIterable<number>) => {
  const means: number[] = []
  let total = 0
  let i = 0
  for await (const x of data) means.push((total += x) / ++i)
  return means
})

/** The mean of the last `window` values, for every value that arrives. */
export const movingAverage = remote(async function* (data: AsyncIterable<number>, window = 3) {
  const buf: number[] = []
  for await (const x of data) {
    buf.push(x)
    if (buf.length > window) buf.shift()
    yield buf.reduce((s, v) => s + v, 0) / buf.length
  }
})

/** Counts until the caller cancels. */
export const slowCount = remote(async function* () {
  const { signal } = context()
  for (let i = 0; !signal.aborted; i++) yield i
})

/** The files of a directory, each with its body as a stream: read when and if the caller wants it. */
export const files = remote(async function* (dir: string) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isFile()) continue
    const body = Readable.toWeb(createReadStream(path.join(dir, entry.name))) as ReadableStream<Uint8Array>
    yield { name: entry.name, body }
  }
})
