// Issue 13 on the embedded local pool: what the code users write gets.
// A cancel reaches a producer that never awaits anything before it runs to
// the end of its credit; functions that never name context() still get
// cancelled, and those that do still see their own context; pool() is
// ready at its first worker and every worker takes calls.
import '../helpers.ts'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CancelError, pool, type Pool } from 'farpipe'
import * as plain from '../fixtures/plain-tasks.ts'
import * as t from '../fixtures/tasks.ts'
import * as f from '../fixtures/trust.ts'
import { collect, markerPath, readMarker, rejection, tempDir } from '../helpers.ts'

const s = suite('user code: cancel and context')
let p: Pool
s.before(async () => {
  p = await pool({ workers: 1, cacheDir: tempDir() })
})
s.after(async () => {
  await p?.close()
})

/** A credit window far larger than anything produced while a cancel is on its way. */
const WINDOW = 1_000_000

for (const [kind, fn] of [['async', plain.endlessAsync], ['sync', plain.endlessSync]] as const) {
  s(`break reaches a never-awaiting endless ${kind} producer long before the end of its credit, and its finally runs`, async () => {
    const call = p.with({ highWaterMark: WINDOW, highWaterBytes: 1024 * 1024 * 1024 }).run(fn)
    for await (const _ of call) break
    assert.instance(await rejection(call.result), CancelError)
    const last = await p.run(plain.lastEndless)
    assert.ok(last.finallyRan, 'the finally ran')
    // Before the worker read control frames between batches, it produced the whole window first.
    assert.ok(last.producedAtFinally < WINDOW / 2, `produced ${last.producedAtFinally} items of a ${WINDOW}-item window before the cancel stopped it`)
  })
}

for (const [kind, fn] of [['sync', f.slowSyncItems], ['async', f.slowAsyncItems]] as const) {
  s(`regression: break reaches a never-awaiting ${kind} producer whose items take 20 ms each within a few items`, async () => {
    const marker = markerPath()
    const call = p.run(fn, 20, marker)
    for await (const _ of call) break
    assert.instance(await rejection(call.result), CancelError)
    const { made } = await readMarker(marker)
    // Before: the clock was read every 32 items and one turn of the loop read no I/O: 64 items (1.3 s) went by.
    assert.ok(made < 32, `made ${made} items of 20 ms before the cancel stopped it`)
  })
}

// Not fixed (see the review's report): the pump reads the clock every `stride` items, up to 32 while items come fast, and the
// flush policy every 8th addition; a producer that turns slow after a fast run (a cache, then the real work) is seen as slow
// only that many items later. Measured: after 1,000 fast items, 18 to 22 items of 20 ms (about 0.4 s) went by before the
// cancel stopped it, and its first slow item reached the caller some 100 ms after it was made. Reading the clock at every
// item costs some 60 ns an item twice over (more than a small item costs to make), so the fix is a design choice, not a line.
s.skip('a cancel reaches a producer that turns slow after a fast run within a few of its slow items', async () => {
  const marker = markerPath()
  const call = p.run(f.fastThenSlowItems, 1000, 20, marker)
  for await (const x of call) if (x > 1000) break
  assert.instance(await rejection(call.result), CancelError)
  const { made } = await readMarker(marker)
  assert.ok(made - 1000 <= 4, `made ${made - 1000} items of 20 ms after the fast ones before the cancel stopped it`)
})

s('a function whose module never names context() streams and is cancelled like any other', async () => {
  assert.equal(await collect(p.run(plain.countAsync, 5)), [0, 1, 2, 3, 4])
  const call = p.run(plain.endlessAsync)
  const it = call[Symbol.asyncIterator]()
  await it.next()
  await call.cancel('enough')
  assert.is((await rejection(call.result)).cause, 'enough')
  assert.ok((await p.run(plain.lastEndless)).finallyRan)
})

s('context() is the call’s own in nested async code, while other calls (with and without context) start and end around it', async () => {
  const slow = p.run(t.contextLater, 150)
  // A short call that enters the context and ends first, and context-free calls meanwhile.
  const quick = await p.run(t.whereAmI)
  assert.ok(quick.callId > 0)
  await collect(p.run(plain.countAsync, 100))
  const r = await slow
  assert.ok(r.direct > 0)
  assert.equal(r, { direct: r.direct, nested: r.direct, fromTimer: r.direct })
  assert.is.not(r.direct, quick.callId)
  // After every context call ended, the next one enters it again.
  const again = await p.run(t.contextLater, 1)
  assert.equal(again, { direct: again.direct, nested: again.direct, fromTimer: again.direct })
  assert.is.not(again.direct, r.direct)
})

s.run()

const w = suite('user code: pool() at its first worker')

w('pool() resolves with workers still starting, and calls made at once run on all of them', async () => {
  const q = await pool({ workers: 3, cacheDir: tempDir() })
  try {
    const pids = await Promise.all([0, 1, 2].map(() => q.run(plain.pidAfter, 300)))
    assert.is(new Set(pids).size, 3, `pids ${pids.join(', ')}`)
    assert.ok(q.stats().hosts[0]!.workers.every((x) => x.up))
  } finally {
    await q.close()
  }
})

w('pool() still fails when no worker starts', async () => {
  const err = await rejection(pool({ workers: 2, node: '/nonexistent/node', cacheDir: tempDir() }))
  assert.instance(err, Error)
})

w.run()
