import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { collect, rejection } from './helpers.ts'
import type { Credit } from '../lib/flow.ts'
import { ItemQueue, ItemStream } from '../lib/queue.ts'

function queue(items = 4, bytes = 1000) {
  const credits: Credit[] = []
  const cancels: unknown[] = []
  const q = new ItemQueue<number>({ items, bytes }, { credit: (c) => void credits.push(c), cancel: (r) => void cancels.push(r) })
  return { q, credits, cancels }
}

const q = suite('ItemQueue')

q('hands items out in order across batches', async () => {
  const { q } = queue(10)
  q.push([1, 2], 20)
  q.push([3], 10)
  q.end()
  assert.equal(await collect({ [Symbol.asyncIterator]: () => q }), [1, 2, 3])
})

q('a waiting reader gets the next item as soon as it arrives', async () => {
  const { q } = queue()
  const p = q.next()
  q.push([7], 10)
  assert.equal(await p, { done: false, value: 7 })
})

q('delivers queued items before an error, then the error', async () => {
  const { q } = queue()
  q.push([1, 2], 20)
  q.fail(new Error('boom'))
  assert.equal(await q.next(), { done: false, value: 1 })
  assert.equal(await q.next(), { done: false, value: 2 })
  try {
    await q.next()
    assert.unreachable('should reject')
  } catch (err) {
    assert.is((err as Error).message, 'boom')
  }
})

q('fail with drop discards what is queued', async () => {
  const { q } = queue()
  q.push([1, 2], 20)
  q.fail(new Error('gone'), true)
  try {
    await q.next()
    assert.unreachable('should reject')
  } catch (err) {
    assert.is((err as Error).message, 'gone')
  }
})

q('grants credit as the consumer makes room', async () => {
  const { q, credits } = queue(4)
  q.push([1, 2, 3, 4], 40)
  await q.next()
  assert.equal(credits, [])
  await q.next()
  assert.equal(credits, [{ items: 2, bytes: 20 }])
})

q('cancel drops items, tells the sender once, and ends the reader', async () => {
  const { q, cancels } = queue()
  q.push([1], 10)
  await q.cancel('enough')
  await q.cancel('again')
  assert.equal(cancels, ['enough'])
  assert.equal(await q.next(), { done: true, value: undefined })
  q.push([2], 10) // in flight when the cancel was sent: ignored
  assert.equal(await q.next(), { done: true, value: undefined })
})

q('does not tell the sender about a cancel after the stream ended', async () => {
  const { q, cancels } = queue()
  q.end()
  await q.cancel('late')
  assert.equal(cancels, [])
})

const s = suite('ItemStream')

s('is a ReadableStream that readers and pipes can read', async () => {
  const { q } = queue()
  const stream = new ItemStream(q)
  assert.instance(stream, ReadableStream)
  q.push([1, 2], 20)
  q.end()
  const seen: number[] = []
  await stream.pipeTo(new WritableStream({ write: (x) => void seen.push(x) }))
  assert.equal(seen, [1, 2])
})

s('for await reads the queue directly and locks the stream meanwhile', async () => {
  const { q } = queue()
  const stream = new ItemStream(q)
  q.push([1, 2, 3], 30)
  const it = stream[Symbol.asyncIterator]()
  assert.ok(stream.locked)
  assert.equal(await it.next(), { done: false, value: 1 })
  q.end()
  assert.equal(await it.next(), { done: false, value: 2 })
  assert.equal(await it.next(), { done: false, value: 3 })
  assert.equal((await it.next()).done, true)
  assert.not.ok(stream.locked)
})

s('breaking out of for await cancels the stream', async () => {
  const { q, cancels } = queue()
  const stream = new ItemStream(q)
  q.push([1, 2, 3], 30)
  for await (const x of stream) if (x === 2) break
  assert.equal(cancels.length, 1)
})

s('values({ preventCancel: true }) leaves the stream open after a break', async () => {
  const { q, cancels } = queue()
  const stream = new ItemStream(q)
  q.push([1, 2, 3], 30)
  for await (const x of stream.values({ preventCancel: true })) if (x === 1) break
  assert.equal(cancels, [])
  q.end()
  assert.equal(await collect(stream), [2, 3])
})

s('a second reader is refused while for await holds the lock', () => {
  const { q } = queue()
  const stream = new ItemStream(q)
  stream[Symbol.asyncIterator]()
  assert.throws(() => stream.getReader())
})

q('cancel cancels the streams nested in items not yet read, and only those', async () => {
  const { q } = queue(10)
  const cancelled: string[] = []
  const ref = (index: number, name: string) => ({ index, cancel: () => void cancelled.push(name) })
  q.push([1, 2, 3], 30, [ref(0, 'a'), ref(2, 'c')])
  q.push([4], 10, [ref(0, 'd')])
  assert.equal(await q.next(), { done: false, value: 1 })
  await q.cancel('enough')
  assert.equal(cancelled, ['c', 'd'])
})

q('a batch that arrives after a cancel or a failure has its nested streams cancelled at once', async () => {
  const { q } = queue(10)
  const cancelled: number[] = []
  await q.cancel()
  q.push([1], 10, [{ index: 0, cancel: () => void cancelled.push(1) }])
  const f = queue(10).q
  f.fail(new Error('gone'), true)
  f.push([2], 10, [{ index: 0, cancel: () => void cancelled.push(2) }])
  assert.equal(cancelled, [1, 2])
  assert.is(f.size, 0)
})

q('a queue built with a smaller first credit grants the rest once its reader takes an item', async () => {
  const credits: Credit[] = []
  const nq = new ItemQueue<number>({ items: 100, bytes: 100_000 }, { credit: (c) => void credits.push(c), cancel: () => {} }, { items: 10, bytes: 1000 })
  assert.equal(nq.ledger.initial, { items: 10, bytes: 1000 })
  nq.push([1], 500)
  assert.equal(credits, [])
  await nq.next()
  assert.equal(credits, [{ items: 100 - 9, bytes: 100_000 - 500 }])
})

q('a reader waiting for an item is reported, so that a pool can hold the process open', async () => {
  const waits: Promise<unknown>[] = []
  const wq = new ItemQueue<number>({ items: 4, bytes: 100 }, { credit: () => {}, cancel: () => {}, waiting: (p) => void waits.push(p) })
  const next = wq.next()
  assert.is(waits.length, 1)
  wq.push([5], 1)
  assert.equal(await next, { done: false, value: 5 })
  assert.equal(await waits[0], { done: false, value: 5 })
})

q('regression: two next() calls in flight both settle, in order (a FIFO of waiters, not one slot)', async () => {
  const { q } = queue(10)
  const a = q.next()
  const b = q.next()
  const c = q.next()
  q.push([1, 2], 20)
  q.end()
  assert.equal(await Promise.all([a, b, c]), [
    { done: false, value: 1 },
    { done: false, value: 2 },
    { done: true, value: undefined },
  ])
})

q('two next() calls waiting when the stream fails both reject with its error', async () => {
  const { q } = queue(10)
  const a = rejection(q.next())
  const b = rejection(q.next())
  q.fail(new Error('boom'))
  assert.equal([(await a).message, (await b).message], ['boom', 'boom'])
})

q('two whenReady() waiters both wake', async () => {
  const { q } = queue(10)
  let woke = 0
  const a = q.whenReady().then(() => woke++)
  const b = q.whenReady().then(() => woke++)
  q.push([1], 10)
  await Promise.all([a, b])
  assert.is(woke, 2)
})

q('a stream that starts with no credit is granted its window when its reader waits', async () => {
  const credits: Credit[] = []
  const zq = new ItemQueue<number>({ items: 100, bytes: 10_000 }, { credit: (c) => void credits.push(c), cancel: () => {} }, { items: 0, bytes: 0 })
  assert.not.ok(zq.ledger.owes)
  const next = zq.next()
  assert.equal(credits, [{ items: 100, bytes: 10_000 }])
  zq.push([1], 10)
  assert.equal(await next, { done: false, value: 1 })
  // A stream that started with its whole window grants nothing when its reader waits.
  const { q: full, credits: none } = queue(4)
  void full.next()
  assert.equal(none, [])
})

const st = suite('ItemStream')

st('regression: for await after a read left pending when its lock was released gets every item', async () => {
  const { q } = queue(10)
  const stream = new ItemStream(q)
  const reader = stream.getReader()
  const pending = reader.read()
  await new Promise((r) => setImmediate(r)) // the stream's pull starts, and waits for an item
  reader.releaseLock()
  await rejection(pending)
  q.push([0, 1, 2, 3, 4], 50)
  q.end()
  // The stream's own pull took item 0 for the read that was let go: it waits in the stream, not in the queue.
  assert.equal(await collect(stream), [0, 1, 2, 3, 4])
  assert.is(stream.locked, false)
})

st('regression: for await while a pull of the stream still waits for an item gets every item', async () => {
  const { q } = queue(10)
  const stream = new ItemStream(q)
  const reader = stream.getReader()
  const pending = reader.read()
  await new Promise((r) => setImmediate(r)) // the stream's pull starts, and waits for an item
  reader.releaseLock()
  await rejection(pending)
  // The pull still waits in the queue: the next item is its.
  const all = collect(stream)
  q.push([0, 1, 2], 30)
  q.end()
  assert.equal(await all, [0, 1, 2])
})

st('regression: two next() calls in flight on its iterator both settle', async () => {
  const { q } = queue(10)
  const it = new ItemStream(q)[Symbol.asyncIterator]()
  const a = it.next()
  const b = it.next()
  q.push([1, 2], 20)
  assert.equal(await Promise.all([a, b]), [
    { done: false, value: 1 },
    { done: false, value: 2 },
  ])
})

st('a stream read to its end by for await is closed for a later reader; one that failed errors it', async () => {
  const ok = queue(10)
  const s1 = new ItemStream(ok.q)
  ok.q.push([1], 10)
  ok.q.end()
  assert.equal(await collect(s1), [1])
  assert.equal(await s1.getReader().read(), { done: true, value: undefined })
  const bad = queue(10)
  const s2 = new ItemStream(bad.q)
  bad.q.push([1], 10)
  bad.q.fail(new Error('boom'))
  assert.is((await rejection(collect(s2))).message, 'boom')
  assert.is((await rejection(s2.getReader().read())).message, 'boom')
})

q.run()
s.run()
st.run()
