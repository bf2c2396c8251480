// Remote functions of bench/user-code.ts, written as users write them (the
// README's `async function*`), with their `function*` twins. A module of its
// own, like a user's, that does not ask for `context()` or print: its calls
// run outside AsyncLocalStorage (see lib/bundle.ts `needsContext`). No
// top-level side effects: this module is bundled and evaluated on every worker.
import { remote } from 'farpipe'

export const numbers = remote(function* (n: number) {
  for (let i = 0; i < n; i++) yield i
})
export const objects = remote(function* (n: number) {
  for (let i = 0; i < n; i++) yield { i, name: 'item' + i, ok: true }
})
export const asyncNumbers = remote(async function* (n: number) {
  for (let i = 0; i < n; i++) yield i
})
export const asyncObjects = remote(async function* (n: number) {
  for (let i = 0; i < n; i++) yield { i, name: 'item' + i, ok: true }
})
/** Yields small objects as fast as it can until cancelled. */
export const endless = remote(async function* () {
  for (let i = 0; ; i++) yield { i, name: 'item' + i, ok: true }
})
/** One stage of a pipeline: yields what it reads. */
export const stage = remote(async function* (data: AsyncIterable<{ i: number; name: string; ok: boolean }>) {
  for await (const x of data) yield x
})
export const one = remote(function* () {
  yield 1
})
export const noop = remote(() => 0)
export const pid = remote(() => process.pid)
