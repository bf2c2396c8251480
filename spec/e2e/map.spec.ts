// Pool.map on the local pool: which items run again when their worker dies
// (never one whose arguments hold a stream: a second run would see it
// consumed), failures that settle the item instead of escaping (a re-run
// during close(), an item that cannot be sent), and a cancel that does not
// wait for a source stuck in next(). The same behaviours over several SSH
// hosts are in many-hosts.spec.ts.
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { MapError, pool, TransportError, type Pool } from 'farpipe'
import * as f from '../fixtures/trust.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, markerPath, readMarker, rejection, sleep, tempDir, until } from '../helpers.ts'

/**
 * Where the fixtures that take the item alone write their marker: workers
 * read it from the environment they inherit, so it is set before any pool
 * starts, and each spec removes the file before it starts calls.
 */
const MARKER = markerPath()
process.env.FARPIPE_TRUST_MARKER = MARKER
function freshMarker(): string {
  rmSync(MARKER, { force: true })
  return MARKER
}

/** Kills the worker that wrote `marker` (its pid), once it has. */
async function killWhenMarked(marker: string): Promise<number> {
  const { pid } = await readMarker(marker)
  process.kill(pid, 'SIGKILL')
  return pid
}

const rerun = suite('map: items run again after a lost worker')
let p: Pool
rerun.before(async () => {
  p = await pool({ workers: 2, cacheDir: tempDir(), onLog: () => {} })
})
rerun.after(async () => {
  await p?.close()
})

rerun('regression: an item whose streamed argument was read fails with MapError when its worker dies, never a wrong sum', async () => {
  const marker = freshMarker()
  const nums = Array.from({ length: 1000 }, (_, i) => i + 1)
  const m = p.map(f.sumThenWait, [nums.values()])
  const killed = killWhenMarked(marker)
  const err = await rejection(collect(m))
  await killed
  assert.instance(err, MapError)
  assert.is(err.index, 0)
  assert.instance(err.cause, TransportError)
  assert.match(err.message, /not run again: its arguments hold a stream/)
  assert.equal(m.progress, { started: 1, done: 0, inFlight: 0, rerun: 0, failed: 1 })
})

rerun('regression: an item killed while reading its streamed argument fails with MapError (iterator and ReadableStream)', async () => {
  for (const source of [() => [1, 2, 3].values(), () => ReadableStream.from([1, 2, 3])]) {
    const marker = freshMarker()
    const m = p.map(f.readOneThenWait, [source()])
    const killed = killWhenMarked(marker)
    const err = await rejection(collect(m))
    await killed
    assert.instance(err, MapError)
    assert.not.match(err.message, /locked/)
    assert.is(m.progress.rerun, 0)
  }
})

rerun('an item without streams still runs again on another worker, once, and gives its result', async () => {
  const marker = freshMarker()
  const m = p.map(f.pidThenWait, [5, 6], { concurrency: 1 })
  const out = collect(m)
  const pid = await killWhenMarked(marker)
  assert.equal(await out, [5, 6])
  assert.equal(m.progress, { started: 2, done: 2, inFlight: 0, rerun: 1, failed: 0 })
  await until(() => p.stats().hosts[0]!.workers.some((w) => w.exits > 0), 10_000, 'the exit to be counted')
  assert.ok(!p.stats().hosts[0]!.workers.some((w) => w.pid === pid))
})

rerun('regression: a worker that dies while close() waits does not crash the process; the item fails with MapError', async () => {
  const q = await pool({ workers: 2, cacheDir: tempDir(), onLog: () => {}, closeGrace: 30_000 })
  const marker = freshMarker()
  // An item with no stream, so it would be run again: the re-run meets a closed pool.
  const m = q.map(f.pidThenWait, [1], { concurrency: 1 })
  const results = collect(m).then(
    () => undefined,
    (e: unknown) => e,
  )
  await until(() => existsSync(marker), 10_000, 'the item to start')
  const closing = q.close()
  await sleep(50)
  process.kill(JSON.parse(readFileSync(marker, 'utf8')).pid, 'SIGKILL')
  const err = (await results) as MapError
  await closing
  assert.instance(err, MapError)
  assert.match(err.message, /running it again failed: this pool is closed/)
  assert.instance(err.cause, TransportError)
})

rerun('regression: an item that cannot be sent fails the map with MapError naming its index', async () => {
  const items = [1, 2, () => 3, 4]
  const m = p.map(t.echo, items, { concurrency: 1 })
  const out: unknown[] = []
  const err = await rejection(
    (async () => {
      for await (const x of m) out.push(x)
    })(),
  )
  assert.instance(err, MapError)
  assert.is(err.index, 2)
  assert.match(err.message, /item 2 .* could not be started: .*function/)
  assert.is(err.cause?.name, 'SerializeError')
  assert.equal(out, [1, 2])
})

const cancel = suite('map: cancel')
let c: Pool
cancel.before(async () => {
  c = await pool({ workers: 2, cacheDir: tempDir(), onLog: () => {} })
})
cancel.after(async () => {
  await c?.close()
})

cancel('regression: a result that is ready is passed on while the source waits for its next item', async () => {
  let release!: () => void
  const gate = new Promise<void>((r) => (release = r))
  async function* source() {
    yield 1
    yield 2
    await gate
    yield 3
  }
  const m = c.map(t.square, source(), { concurrency: 2 })
  const reader = m.getReader()
  assert.equal((await reader.read()).value, 1)
  // Before, the map asked the source for item 3 (which waits for the gate) before passing on item 2's result.
  const second = await Promise.race([reader.read().then((r) => r.value), sleep(10_000).then(() => 'waited for the source')])
  assert.is(second, 4)
  release()
  assert.equal((await reader.read()).value, 9)
  assert.is((await reader.read()).done, true)
})

cancel('settles while the source is suspended in next(); the calls in flight are cancelled', async () => {
  let returned = false
  async function* source() {
    try {
      yield 1
      yield 2
      await new Promise(() => {})
    } finally {
      returned = true
    }
  }
  const m = c.map(t.square, source(), { concurrency: 2 })
  const reader = m.getReader()
  assert.equal((await reader.read()).value, 1)
  assert.equal((await reader.read()).value, 4)
  // The map now waits in the source's next(), which never settles.
  await sleep(50)
  const outcome = await Promise.race([reader.cancel('enough').then(() => 'cancelled'), sleep(20_000).then(() => 'hung')])
  assert.is(outcome, 'cancelled')
  // The generator cannot run its finally while it awaits forever; nothing else is left waiting.
  assert.is(returned, false)
  assert.is(c.stats().queued, 0)
})

cancel('returns a source that is not suspended (its finally runs before the cancel settles)', async () => {
  let returned = false
  async function* source() {
    try {
      for (let i = 0; ; i++) yield i
    } finally {
      returned = true
    }
  }
  const m = c.map(t.square, source(), { concurrency: 2 })
  const reader = m.getReader()
  await reader.read()
  await reader.cancel()
  assert.is(returned, true)
})

cancel('a cancel while a result is awaited counts no item as failed', async () => {
  const m = c.map(t.pause, [50, 5000, 5000], { concurrency: 3 })
  const reader = m.getReader()
  assert.equal((await reader.read()).value, 50)
  // The map waits for item 1's result when the reader gives up.
  const pending = reader.read()
  await sleep(50)
  await reader.cancel('enough')
  assert.equal(await pending, { done: true, value: undefined })
  // Before: the read cut short by the cancel counted as a failed item.
  assert.equal(m.progress, { started: 3, done: 1, inFlight: 0, rerun: 0, failed: 0 })
})

rerun.run()
cancel.run()
