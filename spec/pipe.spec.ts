import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { registerSink, type DirectSink } from '../lib/pipe.ts'
import { ItemQueue, ItemStream } from '../lib/queue.ts'
import { rejection, until } from './helpers.ts'

/** A queue and its stream, recording the credit it grants and its cancels. */
function source(items = 100) {
  const cancels: unknown[] = []
  const q = new ItemQueue<number>({ items, bytes: 1e6 }, { credit: () => {}, cancel: (r) => void cancels.push(r) })
  return { q, stream: new ItemStream(q), cancels }
}

/**
 * A writable registered as a direct sink with `credit` items of room, like
 * a call's: `grant()` adds room; what its own sink sees (writes through the
 * stream, close, abort) is recorded apart from what came directly.
 */
function destination(credit: number, refuse?: (x: unknown) => boolean) {
  const log = { direct: [] as unknown[], written: [] as unknown[], closed: false, aborted: undefined as unknown, batches: [] as number[] }
  let wake: (() => void) | undefined
  let controller!: WritableStreamDefaultController
  let idle = true
  const stream = new WritableStream<unknown>({
    start: (c) => void (controller = c),
    write: (x) => {
      idle = false
      log.written.push(x)
    },
    close: () => void (log.closed = true),
    abort: (r) => void (log.aborted = r),
  })
  let batch = 0
  const sink: DirectSink = {
    get idle() {
      return idle
    },
    open: () => credit > 0,
    room: () => new Promise<void>((r) => (wake = r)),
    write: (x) => {
      if (refuse?.(x)) {
        const err = new Error(`refused ${String(x)}`)
        controller.error(err)
        throw err
      }
      credit--
      log.direct.push(x)
      if (batch++ === 0) queueMicrotask(() => void (log.batches.push(batch), (batch = 0)))
    },
  }
  registerSink(stream, sink)
  const grant = (n: number) => {
    credit += n
    const w = wake
    wake = undefined
    w?.()
  }
  return { stream, log, grant }
}

const tick = () => new Promise<void>((r) => setImmediate(r))

const s = suite('ItemStream.pipeTo into a direct sink')

s('moves what is queued straight to the sink, a batch at a time within its room, then closes it', async () => {
  const { q, stream } = source()
  const d = destination(4)
  q.push([1, 2, 3, 4, 5, 6], 60)
  const done = stream.pipeTo(d.stream)
  assert.ok(stream.locked && d.stream.locked)
  await tick()
  assert.equal(d.log.direct, [1, 2, 3, 4])
  d.grant(10)
  await tick()
  assert.equal(d.log.direct, [1, 2, 3, 4, 5, 6])
  q.push([7, 8, 9], 30)
  q.end()
  await done
  assert.equal(d.log.direct, [1, 2, 3, 4, 5, 6, 7, 8, 9])
  assert.equal(d.log.batches, [4, 2, 3])
  assert.equal(d.log.written, [], 'nothing went through the stream itself')
  assert.ok(d.log.closed)
  assert.ok(!stream.locked && !d.stream.locked)
})

s('pipeThrough takes the same path and returns the readable side', async () => {
  const { q, stream } = source()
  const d = destination(100)
  const readable = new ReadableStream()
  assert.is(stream.pipeThrough({ writable: d.stream, readable }), readable)
  q.push([1, 2], 20)
  q.end()
  await tick()
  assert.equal(d.log.direct, [1, 2])
  assert.ok(d.log.closed)
})

s('a writable written to through the stream first takes the standard pipe', async () => {
  const { q, stream } = source()
  const d = destination(100)
  const w = d.stream.getWriter()
  await w.write(0)
  w.releaseLock()
  q.push([1, 2], 20)
  q.end()
  await stream.pipeTo(d.stream)
  assert.equal(d.log.written, [0, 1, 2])
  assert.equal(d.log.direct, [])
})

s('an item the sink refuses errors the pipe with the writable’s error and cancels the source', async () => {
  const { q, stream, cancels } = source()
  const d = destination(100, (x) => x === 3)
  q.push([1, 2, 3, 4], 40)
  const err = await rejection(stream.pipeTo(d.stream))
  assert.is(err.message, 'refused 3')
  assert.equal(d.log.direct, [1, 2])
  assert.equal(cancels, [err])
})

s('with preventCancel a refusing sink leaves the source readable', async () => {
  const { q, stream, cancels } = source()
  const d = destination(100, (x) => x === 3)
  q.push([1, 2, 3, 4], 40)
  await rejection(stream.pipeTo(d.stream, { preventCancel: true }))
  assert.equal(cancels, [])
  const r = stream.getReader()
  assert.equal(await r.read(), { done: false, value: 4 })
})

s('a source that fails after its items aborts the sink with its error, unless preventAbort', async () => {
  for (const preventAbort of [false, true]) {
    const { q, stream } = source()
    const d = destination(100)
    const boom = new Error('boom')
    q.push([1, 2], 20)
    q.fail(boom)
    assert.is(await rejection(stream.pipeTo(d.stream, { preventAbort })), boom)
    assert.equal(d.log.direct, [1, 2])
    assert.is(d.log.aborted, preventAbort ? undefined : boom)
  }
})

s('a signal aborted while the pipe waits for room stops it with its reason', async () => {
  const { q, stream, cancels } = source()
  const d = destination(1)
  q.push([1, 2, 3], 30)
  const ac = new AbortController()
  const done = stream.pipeTo(d.stream, { signal: ac.signal })
  await tick()
  ac.abort('why')
  assert.is(await rejection(done), 'why')
  assert.equal(d.log.direct, [1])
  assert.is(d.log.aborted, 'why')
  assert.equal(cancels, ['why'])
})

s('options the standard pipe refuses are refused as it refuses them', async () => {
  const { stream } = source()
  const d = destination(1)
  assert.instance(await rejection(stream.pipeTo(d.stream, { signal: 'no' as unknown as AbortSignal })), TypeError)
  assert.ok(!stream.locked && !d.stream.locked)
})

s('regression: a pipe after a read left pending when its lock was released moves every item', async () => {
  const { q, stream } = source()
  const reader = stream.getReader()
  const pending = reader.read()
  await new Promise((r) => setImmediate(r)) // the stream's pull starts, and waits for an item
  reader.releaseLock()
  await rejection(pending)
  q.push([0, 1, 2, 3, 4], 50)
  q.end()
  const d = destination(100)
  await stream.pipeTo(d.stream)
  // Before: [1, 2, 3, 4] went direct, and item 0, pulled for the released read, was lost in the stream.
  assert.equal([...d.log.written, ...d.log.direct], [0, 1, 2, 3, 4])
  assert.is(d.log.closed, true)
})

s('regression: pipeThrough after a read left pending moves every item', async () => {
  const { q, stream } = source()
  const reader = stream.getReader()
  const pending = reader.read()
  await new Promise((r) => setImmediate(r)) // the stream's pull starts, and waits for an item
  reader.releaseLock()
  await rejection(pending)
  const d = destination(100)
  const out = stream.pipeThrough({ writable: d.stream, readable: new ReadableStream() })
  assert.instance(out, ReadableStream)
  q.push([0, 1, 2], 30)
  q.end()
  await until(() => d.log.closed)
  assert.equal([...d.log.written, ...d.log.direct], [0, 1, 2])
})

s.run()
