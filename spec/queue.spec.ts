import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { collect } from './helpers.ts'
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

q.run()
s.run()
