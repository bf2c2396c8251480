// Remote functions the benchmarks call.
import { remote } from 'farpipe'

export const numbers = remote(function* (n: number) {
  for (let i = 0; i < n; i++) yield i
})
export const objects = remote(function* (n: number) {
  for (let i = 0; i < n; i++) yield { i, name: 'item' + i, ok: true }
})
export const numbersAsync = remote(async function* (n: number) {
  for (let i = 0; i < n; i++) yield i
})
export const count = remote(async (data: AsyncIterable<unknown>) => {
  let n = 0
  for await (const _ of data) n++
  return n
})
export const echo = remote(async function* (data: AsyncIterable<unknown>) {
  for await (const x of data) yield x
})
export const bytes = remote(function* (total: number, size: number) {
  const chunk = new Uint8Array(size)
  for (let sent = 0; sent < total; sent += size) yield chunk
})
export const noop = remote(() => 0)
