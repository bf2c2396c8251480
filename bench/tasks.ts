// Remote functions the benchmarks call. No top-level side effects: this
// module is bundled and evaluated on every worker.
import { remote } from 'farpipe'

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
