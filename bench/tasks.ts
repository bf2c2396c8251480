// Remote functions the benchmarks call. No top-level side effects: this
// module is bundled and evaluated on every worker.
import { appendFileSync, writeFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { context, remote } from 'farpipe'

export const numbers = remote(function* (n: number) {
  for (let i = 0; i < n; i++) yield i
})
export const objects = remote(function* (n: number) {
  for (let i = 0; i < n; i++) yield { i, name: 'item' + i, ok: true }
})
/** Counts what it is sent (client streaming). */
export const count = remote(async (data: AsyncIterable<unknown>) => {
  let n = 0
  for await (const _ of data) n++
  return n
})
/** Sends back each item it is sent (bidirectional). */
export const echo = remote(async function* <T>(data: AsyncIterable<T>) {
  for await (const x of data) yield x
})
/** `total` bytes in chunks of `size` (download). */
export const bytes = remote(function* (total: number, size: number) {
  const chunk = new Uint8Array(size)
  for (let sent = 0; sent < total; sent += size) yield chunk
})
/** Counts the bytes it is sent (upload). */
export const sink = remote(async (data: AsyncIterable<Uint8Array>) => {
  let n = 0
  for await (const c of data) n += c.byteLength
  return n
})
export const noop = remote(() => 0)
export const one = remote(function* () {
  yield 1
})
export const pid = remote(() => process.pid)

let produced = 0
/** Yields small objects until cancelled, counting them (read with `producedCount()` on the same worker). */
export const counted = remote(async function* () {
  produced = 0
  for (;;) {
    produced++
    yield { i: produced, name: 'item' + produced, ok: true }
  }
})
export const producedCount = remote(() => produced)

// -- reliability ------------------------------------------------------------
// The functions below mark their start (`s<id>`) and their `finally`
// (`f<id>`) as lines appended to a tally file: O_APPEND writes of a few
// bytes land whole even from several workers, so the caller can count the
// remote `finally` blocks that ran, and name the calls whose did not. (The
// bench's SSH host is this machine, so the caller reads the same file.)

/** The tiny call. */
export const add = remote((a: number, b: number) => a + b)

/** Yields 0..n-1, pausing 1 ms (abortably) after every `every` items; returns n. */
export const ticks = remote(async function* (tally: string, id: number, n: number, every: number) {
  const { signal } = context()
  appendFileSync(tally, `s${id}\n`)
  try {
    for (let i = 0; i < n; i++) {
      yield i
      if ((i + 1) % every === 0) await sleep(1, undefined, { signal })
    }
    return n
  } finally {
    appendFileSync(tally, `f${id}\n`)
  }
})

/** Yields each item it is sent, doubled; returns how many it read. */
export const doubled = remote(async function* (tally: string, id: number, data: AsyncIterable<number>) {
  appendFileSync(tally, `s${id}\n`)
  try {
    let n = 0
    for await (const x of data) {
      n++
      yield x * 2
    }
    return n
  } finally {
    appendFileSync(tally, `f${id}\n`)
  }
})

/** Collects garbage on its worker (started with --expose-gc), stays busy `ms` (so that calls made together spread over the workers), and says which worker it was and its heap. */
export const collect = remote(async (ms: number) => {
  ;(globalThis as { gc?: () => void }).gc?.()
  await sleep(ms)
  return { pid: process.pid, heap: process.memoryUsage().heapUsed }
})

// -- faults ------------------------------------------------------------------

/** Yields 0..n-1, one every `ms` milliseconds: a stream that is mid-output whenever a fault strikes. */
export const slowItems = remote(async function* (n: number, ms: number) {
  for (let i = 0; i < n; i++) {
    yield i
    await sleep(ms)
  }
})

/**
 * Yields once, creates `marker` (so the caller knows it is stuck), then
 * awaits something that never settles: a cancel cannot reach its `finally`,
 * which would append to the marker.
 */
export const stuckAfterOne = remote(async function* (marker: string) {
  try {
    yield 1
    writeFileSync(marker, 'stuck\n')
    await new Promise(() => {})
  } finally {
    appendFileSync(marker, 'finally\n')
  }
})

// -- many hosts ---------------------------------------------------------------

/** The tiny map function: next to nothing to do, so what is measured is the cost of a call. */
export const double = remote((x: number) => x * 2)

/** `x * 2` after waiting `ms` (a timer: work that takes time but no CPU, so that workers, not cores, are what scales). */
export const doubleAfter = remote(async (job: { x: number; ms: number }) => {
  if (job.ms > 0) await sleep(job.ms)
  return job.x * 2
})

/**
 * `x * 2` after waiting `ms`, with the host it ran on and `job.attempt`,
 * which the caller makes a getter that counts the calls made for the item
 * (it is read each time the item is serialized, once a call), so that a
 * re-run's result says it is one.
 */
export const doubleWhere = remote(async (job: { x: number; ms: number; attempt: number }) => {
  await sleep(job.ms)
  return { y: job.x * 2, host: context().host, attempt: job.attempt }
})
