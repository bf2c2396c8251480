// The end-to-end suites of the core, written once and run against every
// target: the embedded local pool (local.spec.ts) and a real sshd (ssh.spec.ts).
import { createHash, randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { promisify } from 'node:util'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import {
  CancelError,
  FarpipeError,
  input,
  RemoteError,
  SerializeError,
  TimeoutError,
  TransportError,
  type LogEntry,
  type Pool,
  type PoolOptions,
} from 'farpipe'
import * as t from '../fixtures/tasks.ts'
import { fibonacci, movingAverage, runningMean, slowCount } from '../../examples/tasks.ts'
import { collect, markerPath, readMarker, rejection, sleep, tempDir, thrown, until } from '../helpers.ts'

/** Where the suites run. */
export interface Target {
  /** Suite name prefix. */
  name: string
  /** What `context().host` must say there. */
  host: string
  /** Opens a pool on the target (workers, cacheDir, onLog... passed through). */
  open(options?: PoolOptions): Promise<Pool>
  /** True for the local pool: some specs start local pools of their own and run only once. */
  local?: boolean
}

/** Defines and runs every core suite against `target`. */
export function coreSuites(target: Target): void {
  streaming(target)
  errors(target)
  cancellation(target)
  backpressure(target)
  workers(target)
}

function streaming(target: Target): void {
  const s = suite(`${target.name}: streaming`)
  let p: Pool
  s.before(async () => {
    p = await target.open({ workers: 2, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })

  s('streams what an async generator yields, in order, and its return value', async () => {
    const call = p.run(t.countAsync, 5)
    assert.equal(await collect(call), [0, 1, 2, 3, 4])
    assert.is(await call.result, 'async done')
  })

  s('runs sync functions, async functions and sync generators', async () => {
    assert.is(await p.run(t.add, 2, 3), 5)
    assert.is(await p.run(t.addAsync, 2, 3), 5)
    const call = p.run(t.countSync, 3)
    assert.equal(await collect(call), [0, 1, 2])
    assert.is(await call.result, 'sync done')
  })

  s('a call of a non-generator is awaitable; a generator call is not thenable', async () => {
    assert.is(typeof (p.run(t.add, 1, 1) as { then?: unknown }).then, 'function')
    const gen = p.run(t.countAsync, 1)
    assert.is('then' in gen, false)
    await collect(gen)
  })

  s('the examples of DESIGN.md: output, input and bidirectional streaming', async () => {
    assert.equal(await collect(p.run(fibonacci, 10)), [0, 1, 1, 2, 3, 5, 8, 13, 21, 34])
    assert.equal(await p.run(runningMean, [1, 2, 3].values()), [1, 1.5, 2])
    const seen: number[] = []
    await ReadableStream.from([1, 2, 3, 4, 5, 6])
      .pipeThrough(p.run(movingAverage, input, 3))
      .pipeTo(new WritableStream({ write: (v) => void seen.push(v) }))
    assert.equal(seen, [1, 1.5, 2, 3, 4, 5])
    let n = 0
    for await (const x of p.run(slowCount)) if (++n > 5 || x < 0) break
    assert.is(n, 6)
  })

  s('streams iterators, async iterables and ReadableStreams given as arguments', async () => {
    async function* gen() {
      yield 1
      yield 2
    }
    assert.is(await p.run(t.sum, [1, 2, 3].values()), 6)
    assert.is(await p.run(t.sum, gen()), 3)
    assert.is(await p.run(t.sum, ReadableStream.from([4, 5])), 9)
    assert.is(await p.run(t.sum, (function* () { yield 10 })()), 10)
  })

  s('the function receives a streamed argument as a ReadableStream; arrays, Maps and Sets arrive whole', async () => {
    assert.equal(await p.run(t.describeArg, [1, 2].values()), { type: '[object ReadableStream]', isStream: true })
    assert.equal(await p.run(t.describeArg, [1, 2]), { type: '[object Array]', isStream: false })
    assert.equal(await p.run(t.describeArg, new Map([[1, 2]])), { type: '[object Map]', isStream: false })
    assert.equal(await p.run(t.describeArg, new Set([1])), { type: '[object Set]', isStream: false })
    assert.equal(await p.run(t.describeArg, new Float32Array(2)), { type: '[object Float32Array]', isStream: false })
  })

  s('takes several streamed arguments in one call', async () => {
    const out = await collect(p.run(t.zipSum, [1, 2, 3].values(), ReadableStream.from([10, 20, 30])))
    assert.equal(out, [11, 22, 33])
  })

  s('feeds the input argument from the writable side', async () => {
    const call = p.run(movingAverage, input, 2)
    const writer = call.writable.getWriter()
    const reading = collect(call.readable)
    for (const x of [2, 4, 6]) await writer.write(x)
    await writer.close()
    assert.equal(await reading, [2, 3, 5])
  })

  s('values survive the round trip: Map, Set, Date, bigint, undefined, bytes, nested', async () => {
    const v = { m: new Map([['k', new Set([1n])]]), d: new Date(0), u: undefined, b: Uint8Array.of(1, 2, 3), deep: [[{ x: -0 }]] }
    const back = await p.run(t.echo, v)
    assert.equal(back.m, v.m)
    assert.equal(back.d, v.d)
    assert.ok('u' in back)
    assert.equal([...back.b], [1, 2, 3])
    assert.ok(Object.is(back.deep[0]![0]!.x, -0))
    assert.equal(await collect(p.run(t.echoEach, [1, 'a', null, { o: 1 }])), [1, 'a', null, { o: 1 }])
  })

  s('context() tells the host, the worker and its count, and the call id', async () => {
    const ctx = await p.run(t.whereAmI)
    assert.is(ctx.host, target.host)
    assert.ok(ctx.worker >= 0 && ctx.worker < 2, `worker ${ctx.worker}`)
    assert.is(ctx.workers, 2)
    assert.ok(ctx.callId > 0)
    assert.is(ctx.aborted, false)
  })

  s('runs 200 concurrent calls', async () => {
    const calls = Array.from({ length: 200 }, (_, i) => (i % 2 ? p.run(t.square, i) : p.run(t.countAsync, 3)))
    const results = await Promise.all(calls.map((c, i) => (i % 2 ? (c as PromiseLike<number>) : collect(c as AsyncIterable<number>))))
    results.forEach((r, i) => assert.equal(r, i % 2 ? i * i : [0, 1, 2]))
  })

  s('8 MiB of bytes make a bidirectional round trip with the same sha256', async () => {
    const chunks: Uint8Array[] = []
    let total = 0
    while (total < 8 * 1024 * 1024) {
      const n = Math.min(1 + Math.floor(Math.random() * 200_000), 8 * 1024 * 1024 - total)
      chunks.push(randomBytes(n))
      total += n
    }
    const want = createHash('sha256')
    for (const c of chunks) want.update(c)
    const got = createHash('sha256')
    let bytes = 0
    for await (const c of p.run(t.echoBytes, chunks.values())) {
      got.update(c)
      bytes += c.byteLength
    }
    assert.is(bytes, total)
    assert.is(got.digest('hex'), want.digest('hex'))
    const remote = await p.run(t.sha256, ReadableStream.from(chunks))
    assert.equal(remote, { hex: createHash('sha256').update(Buffer.concat(chunks)).digest('hex'), bytes: total })
  })

  s('map() spreads items over the workers and keeps their order', async () => {
    assert.equal(await collect(p.map(t.square, [1, 2, 3, 4, 5, 6].values())), [1, 4, 9, 16, 25, 36])
    assert.equal(await collect(p.map(t.countSync, [1, 2, 3])), [0, 0, 1, 0, 1, 2])
  })

  s('broadcast() runs the call once on every host', async () => {
    const calls = p.broadcast(t.whereAmI)
    assert.is(calls.length, 1)
    assert.is((await calls[0]!).host, target.host)
  })

  s.run()
}

function errors(target: Target): void {
  const s = suite(`${target.name}: errors`)
  let p: Pool
  s.before(async () => {
    p = await target.open({ workers: 2, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })

  s('an error mid-stream errors the stream with RemoteError after the items already sent', async () => {
    const call = p.run(t.failAfter, 3)
    const items: number[] = []
    const err = await rejection((async () => { for await (const x of call) items.push(x) })())
    assert.equal(items, [0, 1, 2])
    assert.instance(err, RemoteError)
    assert.is(err.errorName, 'TaskError')
    assert.is(err.index, 3)
    assert.is(err.host, target.host)
    assert.match(err.message, 'failed after 3')
    assert.match(err.remoteStack, 'tasks.ts')
    assert.is(err.cause.message, 'failed after 3')
    assert.is(err.cause.code, 'E_TASK')
    assert.instance(err.cause.cause, RangeError)
    assert.is(err.cause.cause.message, 'the root cause')
    assert.is(await rejection(call.result), err)
  })

  s("a RemoteError's stack shows where run() was called, then the remote stack", async () => {
    const err = await rejection(collect(p.run(t.failAfter, 1)))
    assert.instance(err, RemoteError)
    const [local, remote] = String(err.stack).split(`--- on ${target.host}/`)
    assert.match(local!, 'spec/e2e/core.ts')
    // The library's own frames (built or, through source maps, its sources) are left out.
    assert.not.match(local!, path.resolve('dist') + path.sep)
    assert.not.match(local!, path.resolve('lib') + path.sep)
    assert.match(remote!, 'tasks.ts')
  })

  s('an error before the first yield errors the stream with no items', async () => {
    const call = p.run(t.failAfter, 0)
    const err = await rejection(collect(call))
    assert.instance(err, RemoteError)
    assert.is(err.index, 0)
  })

  s('a thrown non-Error still arrives as RemoteError', async () => {
    const err = await rejection(p.run(t.throwsString))
    assert.instance(err, RemoteError)
    assert.match(err.message, 'just a string')
    assert.is(err.cause, 'just a string')
  })

  s('an argument that cannot be sent throws SerializeError naming its path, and the pool stays usable', async () => {
    const err = thrown(() => p.run(t.echo, { bad: () => 1 }))
    assert.instance(err, SerializeError)
    assert.match(err.message, 'args[0].bad: function')
    const err2 = thrown(() => p.run(t.echo, [1, { when: new (class Clock {})() }]))
    assert.match(err2.message, 'args[0][1].when: instance of Clock')
    assert.is(await p.run(t.add, 1, 2), 3)
  })

  s('a yielded value that cannot be sent fails with SerializeError; the generator still cleans up', async () => {
    const marker = markerPath()
    const call = p.run(t.yieldsFunction, marker)
    const items: unknown[] = []
    const err = await rejection((async () => { for await (const x of call) items.push(x) })())
    assert.equal(items, [1, { ok: true }])
    assert.instance(err, SerializeError)
    assert.match(err.message, 'yield[2].bad: function')
    await until(() => existsSync(marker), 10_000, 'finally')
    assert.is(await p.run(t.add, 2, 2), 4)
  })

  s('a return value that cannot be sent fails with SerializeError', async () => {
    const err = await rejection(p.run(t.returnsFunction))
    assert.instance(err, SerializeError)
    assert.match(err.message, 'return: function')
  })

  s('an input item that cannot be sent fails the call with SerializeError and stops the source', async () => {
    let cleaned = false
    function* source() {
      try {
        yield 1
        yield (() => 2) as unknown as number
        yield 3
      } finally {
        cleaned = true
      }
    }
    const err = await rejection(p.run(t.sum, source()))
    assert.instance(err, SerializeError)
    assert.match(err.message, 'args[0][1]: function')
    await until(() => cleaned, 10_000, 'source finally')
    assert.is(await p.run(t.add, 1, 1), 2)
  })

  s('a local source that throws errors the remote input stream with its error', async () => {
    function* failing() {
      yield 1
      yield 2
      throw new Error('source broke')
    }
    assert.equal(await p.run(t.sumOrReport, failing()), { error: 'source broke', total: 3 })
    const err = await rejection(p.run(t.sum, failing()))
    assert.instance(err, RemoteError)
    assert.match(err.message, 'source broke')
  })

  s('values larger than the frame limit fail with SerializeError and the session survives', async () => {
    const q = await target.open({ workers: 1, cacheDir: tempDir(), limits: { maxFrameBytes: 64 * 1024 } })
    try {
      const args = thrown(() => q.run(t.echo, 'x'.repeat(100_000)))
      assert.instance(args, SerializeError)
      assert.match(args.message, 'exceed maxFrameBytes 65536')
      const ret = await rejection(q.run(t.big, 100_000))
      assert.instance(ret, SerializeError)
      assert.match(ret.message, 'return: value of')
      const items: unknown[] = []
      const item = await rejection((async () => { for await (const x of q.run(t.bigItems, 100_000)) items.push(x) })())
      assert.equal(items, ['small'])
      assert.instance(item, SerializeError)
      assert.match(item.message, 'yield[1]: item of')
      assert.is(await q.run(t.add, 1, 2), 3)
    } finally {
      await q.close()
    }
  })

  s('bad pool options are refused when the pool opens', async () => {
    assert.match((await rejection(target.open({ limits: { maxFrameBytes: 10 } }))).message, 'limits.maxFrameBytes must be a finite number >= 65536')
    assert.match((await rejection(target.open({ defaults: { idleTimeout: NaN } }))).message, 'option idleTimeout')
  })

  s('a remote function that is not exported is refused with how to fix it', async () => {
    const { getHidden } = await import('../fixtures/unexported.ts')
    const err = await rejection(p.run(getHidden()))
    assert.instance(err, FarpipeError)
    assert.is(err.code, 'ERR_FARPIPE')
    assert.match(err.message, 'is not exported from its module')
    assert.match(err.message, 'unexported.ts')
  })

  s('run() refuses a function not made with remote()', () => {
    const err = thrown(() => (p.run as (fn: unknown) => unknown)(() => 1))
    assert.instance(err, TypeError)
    assert.match(err.message, 'remote()')
  })

  s('a module that opens a pool at its top level fails on the worker with how to fix it', async () => {
    const { innocent } = await import('../fixtures/opens-pool.ts')
    const err = await rejection(p.run(innocent))
    assert.instance(err, RemoteError)
    assert.match(err.message, 'pool() was called while a worker (or the farpipe command) was loading')
    assert.match(err.message, 'module of their own')
    assert.is(await p.run(t.add, 1, 1), 2)
  })

  s('a module that pulls in a native addon is refused when bundling', async () => {
    const { usesSsh2 } = await import('../fixtures/native.ts')
    const err = await rejection(p.run(usesSsh2))
    assert.match(err.message, 'native addon')
    assert.match(err.message, '.node')
  })

  s('bad call options are refused with what was expected', () => {
    assert.match(thrown(() => p.with({ timeout: -1 })).message, 'option timeout must be a finite number >= 0, got -1')
    assert.match(thrown(() => p.with({ highWaterMark: 0 })).message, 'option highWaterMark must be a finite number >= 1, got 0')
    assert.match(thrown(() => p.with({ signal: 'no' as never })).message, 'option signal must be an AbortSignal')
  })

  s('the writable side of a call without `input` errors with why', async () => {
    const call = p.run(t.add, 1, 2)
    const err = await rejection(call.writable.getWriter().write(1 as never))
    assert.instance(err, TypeError)
    assert.match(err.message, 'without the `input` argument')
    assert.is(await call, 3)
  })

  s.run()
}

function cancellation(target: Target): void {
  const s = suite(`${target.name}: cancellation and timeouts`)
  let p: Pool
  s.before(async () => {
    p = await target.open({ workers: 2, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })

  s('breaking out of for await runs the remote finally and aborts its signal', async () => {
    const marker = markerPath()
    const call = p.run(t.forever, marker)
    let n = 0
    for await (const _ of call) if (++n === 3) break
    // The break waits for the worker to confirm: the finally has run by now.
    assert.ok(existsSync(marker), 'finally ran before the break returned')
    assert.equal(JSON.parse(readFileSync(marker, 'utf8')), { finally: true, aborted: true, reason: 'CancelError' })
    assert.instance(await rejection(call.result), CancelError)
  })

  s('cancel() stops the remote generator and resolves after its finally ran', async () => {
    const marker = markerPath()
    const call = p.run(t.forever, marker, 5)
    const it = call[Symbol.asyncIterator]()
    await it.next()
    await call.cancel('enough')
    assert.ok(existsSync(marker))
    const err = await rejection(call.result)
    assert.instance(err, CancelError)
    assert.is(err.cause, 'enough')
    assert.instance(await rejection(it.next()), CancelError)
  })

  s('aborting the signal cancels the call; result rejects with the abort reason', async () => {
    const marker = markerPath()
    const ac = new AbortController()
    const call = p.with({ signal: ac.signal }).run(t.forever, marker, 5)
    const it = call[Symbol.asyncIterator]()
    await it.next()
    const reason = new Error('stop it')
    ac.abort(reason)
    assert.is(await rejection(call.result), reason)
    assert.equal(await readMarker(marker), { finally: true, aborted: true, reason: 'CancelError' })
  })

  s('an already aborted signal fails the call before anything runs', async () => {
    const marker = markerPath()
    const call = p.with({ signal: AbortSignal.abort('too late') }).run(t.forever, marker)
    assert.is(await rejection(call.result), 'too late')
    await sleep(100)
    assert.not.ok(existsSync(marker))
  })

  s('cancelling a non-generator aborts its context signal', async () => {
    const marker = markerPath()
    const call = p.run(t.waitForAbort, marker)
    await readMarker(`${marker}.started`)
    await call.cancel()
    assert.equal(await readMarker(marker), { aborted: true })
    assert.instance(await rejection(call), CancelError)
  })

  s('cancelling stops the input pump and returns the local source', async () => {
    let cleaned = false
    function* numbers() {
      try {
        for (let i = 0; ; i++) yield i
      } finally {
        cleaned = true
      }
    }
    const call = p.run(t.readThenStall, numbers(), 2)
    const it = call[Symbol.asyncIterator]()
    await it.next()
    await it.next()
    await call.cancel()
    await until(() => cleaned, 10_000, 'local source finally')
  })

  s('timeout raises TimeoutError and cancels the remote', async () => {
    const marker = markerPath()
    const call = p.with({ timeout: 300 }).run(t.forever, marker, 20)
    const err = await rejection(collect(call))
    assert.instance(err, TimeoutError)
    assert.match(err.message, 'did not finish within 300 ms')
    assert.is(await rejection(call.result), err)
    assert.equal((await readMarker(marker)).finally, true)
  })

  s('idleTimeout raises TimeoutError when no item moves', async () => {
    const call = p.with({ idleTimeout: 200 }).run(t.slowItems, 3, 2000)
    const err = await rejection(collect(call))
    assert.instance(err, TimeoutError)
    assert.match(err.message, 'nothing move in either direction for 200 ms')
  })

  s('silence is never completion: a slow generator delivers every item', async () => {
    assert.equal(await collect(p.with({ idleTimeout: 2000 }).run(t.slowItems, 3, 300)), [0, 1, 2])
    assert.is(await p.run(t.pause, 400), 400)
  })

  s('close() lets a call in flight finish within its grace', async () => {
    const q = await target.open({ workers: 1, cacheDir: tempDir() })
    const call = q.run(t.pause, 300)
    await sleep(50)
    await q.close()
    assert.is(await call, 300)
  })

  s('closing the pool cancels calls still running after its grace, and their finally blocks run', async () => {
    const q = await target.open({ workers: 1, cacheDir: tempDir(), closeGrace: 100 })
    const marker = markerPath()
    const call = q.run(t.forever, marker, 5)
    await call[Symbol.asyncIterator]().next()
    await q.close()
    assert.equal((await readMarker(marker)).finally, true)
    assert.instance(await rejection(call.result), CancelError)
    assert.match(thrown(() => q.run(t.add, 1, 1)).message, 'closed')
  })

  s('await using closes the pool at the end of the block', async () => {
    let q: Pool
    {
      await using opened = await target.open({ workers: 1, cacheDir: tempDir() })
      q = opened
      assert.is(await q.run(t.add, 1, 1), 2)
    }
    assert.match(thrown(() => q.run(t.add, 1, 1)).message, 'closed')
  })

  s.run()
}

function backpressure(target: Target): void {
  const s = suite(`${target.name}: backpressure`)
  let p: Pool
  // One worker: the producer's counter lives in that worker's copy of the module.
  s.before(async () => {
    p = await target.open({ workers: 1, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })

  s('a consumer that takes 3 items and stalls holds the remote producer within the high-water mark', async () => {
    const hwm = 16
    const call = p.with({ highWaterMark: hwm }).run(t.countedProducer)
    const it = call[Symbol.asyncIterator]()
    for (let i = 0; i < 3; i++) await it.next()
    await sleep(300)
    const produced = await p.run(t.producedCount)
    assert.ok(produced >= 3 && produced <= hwm + 3, `producer made ${produced} items for a consumer that took 3 (hwm ${hwm})`)
    // The stall is not an end: reading resumes where it stopped.
    const r = await it.next()
    assert.equal(r, { done: false, value: 4 })
    await call.cancel()
  })

  s('a stalled consumer of large items holds the producer within the byte high-water mark', async () => {
    const size = 64 * 1024
    const call = p.with({ highWaterBytes: 256 * 1024 }).run(t.countedBytesProducer, size)
    const it = call[Symbol.asyncIterator]()
    for (let i = 0; i < 3; i++) await it.next()
    await sleep(300)
    const produced = await p.run(t.producedCount)
    // 256 KiB of queue holds 3 items of 64 KiB (plus headers) and one more may overshoot.
    assert.ok(produced <= 4 + 3 + 1, `producer made ${produced} chunks of 64 KiB for a 256 KiB window`)
    await call.cancel()
  })

  s('a stalled consumer does not hold up other calls on the same worker (no head-of-line blocking)', async () => {
    const stalled = p.with({ highWaterMark: 4 }).run(t.countedProducer)
    await stalled[Symbol.asyncIterator]().next()
    // The worker's channel is shared; the stalled call's items wait in its own queue, not in the channel.
    assert.equal(await collect(p.run(t.countAsync, 50)), Array.from({ length: 50 }, (_, i) => i))
    assert.is(await p.run(t.add, 20, 22), 42)
    await stalled.cancel()
  })

  s('a stalled remote holds a local iterator source within the high-water mark', async () => {
    const hwm = 16
    let pulled = 0
    function* source() {
      for (;;) yield ++pulled
    }
    const call = p.with({ highWaterMark: hwm }).run(t.readThenStall, source(), 3)
    const it = call[Symbol.asyncIterator]()
    for (let i = 0; i < 3; i++) await it.next()
    await sleep(300)
    assert.ok(pulled >= 3 && pulled <= hwm + 3 + 1, `source was pulled ${pulled} times (hwm ${hwm})`)
    await call.cancel()
  })

  s('a stalled remote holds a ReadableStream source within the high-water mark', async () => {
    const hwm = 8
    let pulled = 0
    const source = new ReadableStream<number>({ pull: (c) => c.enqueue(++pulled) })
    const call = p.with({ highWaterMark: hwm }).run(t.readThenStall, source, 3)
    const it = call[Symbol.asyncIterator]()
    for (let i = 0; i < 3; i++) await it.next()
    await sleep(300)
    assert.ok(pulled <= hwm + 3 + 2, `source was pulled ${pulled} times (hwm ${hwm})`)
    await call.cancel()
  })

  s('a stalled remote holds a piped source within the high-water mark', async () => {
    const hwm = 8
    let pulled = 0
    const source = new ReadableStream<number>({ pull: (c) => c.enqueue(++pulled) })
    const readable = source.pipeThrough(p.with({ highWaterMark: hwm }).run(t.readThenStallInput, input, 3))
    const reader = readable.getReader()
    for (let i = 0; i < 3; i++) await reader.read()
    await sleep(300)
    // The remote's queue, the writable's queue of 1, the pipe's pending read and the source's own queue.
    assert.ok(pulled <= hwm + 3 + 3, `source was pulled ${pulled} times (hwm ${hwm})`)
    await reader.cancel()
  })

  s.run()
}

function workers(target: Target): void {
  const s = suite(`${target.name}: workers`)

  s('a worker killed with SIGKILL fails every in-flight call with TransportError, and the next call gets a fresh worker', async () => {
    const p = await target.open({ workers: 1, cacheDir: tempDir() })
    try {
      const { pid } = await p.run(t.whereAmI)
      const streaming = p.run(t.forever, markerPath(), 5)
      const it = streaming[Symbol.asyncIterator]()
      await it.next()
      const waiting = p.run(t.waitForAbort, markerPath())
      const pausing = p.run(t.pause, 60_000)
      await sleep(50)
      process.kill(pid, 'SIGKILL')
      for (const c of [streaming.result, waiting.result, pausing.result]) {
        const err = await rejection(c)
        assert.instance(err, TransportError)
      }
      // Items already delivered stay delivered; then the stream errors, never ends normally.
      let err: unknown
      try {
        for (;;) if ((await it.next()).done) break
      } catch (e) {
        err = e
      }
      assert.instance(err, TransportError)
      const after = await p.run(t.whereAmI)
      assert.is.not(after.pid, pid)
    } finally {
      await p.close()
    }
  })

  s('a worker that exits on its own fails its calls with TransportError saying how', async () => {
    const p = await target.open({ workers: 1, cacheDir: tempDir() })
    try {
      const err = await rejection(p.run(t.crash))
      assert.instance(err, TransportError)
      assert.match(err.message, 'code 3')
      assert.is(await p.run(t.add, 2, 2), 4)
    } finally {
      await p.close()
    }
  })

  s('what remote code prints comes back as log lines prefixed with where it ran, and never corrupts frames', async () => {
    const logs: LogEntry[] = []
    const p = await target.open({ workers: 1, cacheDir: tempDir(), onLog: (e) => void logs.push(e) })
    try {
      assert.equal(await collect(p.run(t.chatty)), [1, 2])
      await until(() => logs.length >= 5, 10_000, 'log lines')
      const lines = logs.map((e) => [e.fd, e.line])
      assert.ok(lines.some(([fd, l]) => fd === 1 && l === 'hello from console.log'), JSON.stringify(lines))
      assert.ok(lines.some(([fd, l]) => fd === 2 && l === 'hello from console.error'))
      assert.ok(lines.some(([fd, l]) => fd === 1 && l === 'partial line'))
      assert.ok(lines.some(([fd, l]) => fd === 2 && l === 'direct stderr'))
      assert.ok(lines.some(([, l]) => String(l).includes('binary-looking')))
      assert.ok(logs.every((e) => e.where === `${target.host}/0`))
    } finally {
      await p.close()
    }
  })

  s('bundles are cached by hash in a 0700 directory; a second pool ships nothing; a tampered file is never imported', async () => {
    const cacheDir = path.join(tempDir(), 'nested', 'cache')
    const p1 = await target.open({ workers: 1, cacheDir })
    assert.is(await p1.run(t.add, 1, 2), 3)
    await p1.close()
    assert.is(statSync(cacheDir).mode & 0o777, 0o700)
    const bundles = readdirSync(cacheDir).filter((f) => /^[0-9a-f]{64}\.mjs$/.test(f))
    assert.is(bundles.length, 1)
    const file = path.join(cacheDir, bundles[0]!)
    assert.is(createHash('sha256').update(readFileSync(file)).digest('hex') + '.mjs', bundles[0])

    // A second pool finds the bundle: the file is not written again.
    const inode = statSync(file).ino
    const p2 = await target.open({ workers: 1, cacheDir })
    assert.is(await p2.run(t.add, 2, 3), 5)
    await p2.close()
    assert.is(statSync(file).ino, inode)

    // A file that does not match its name is replaced, not imported.
    const tampered = path.join(tempDir(), 'tampered')
    writeFileSync(file, `import { writeFileSync } from 'node:fs'; writeFileSync(${JSON.stringify(tampered)}, 'imported'); export const add = () => -1`)
    const p3 = await target.open({ workers: 1, cacheDir })
    assert.is(await p3.run(t.add, 3, 4), 7)
    await p3.close()
    assert.not.ok(existsSync(tampered))
    assert.is(createHash('sha256').update(readFileSync(file)).digest('hex') + '.mjs', bundles[0])
  })

  s('a cache directory with loose permissions is tightened to 0700', async () => {
    const cacheDir = path.join(tempDir(), 'loose')
    mkdirSync(cacheDir, { mode: 0o755 })
    const p = await target.open({ workers: 1, cacheDir })
    assert.is(await p.run(t.add, 1, 1), 2)
    await p.close()
    assert.is(statSync(cacheDir).mode & 0o777, 0o700)
  })

  if (target.local) s('a script that never closes its pool still exits when its work is done', async () => {
    const script = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'fixtures', 'no-close.ts')
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], { timeout: 60_000 })
    assert.is(stdout.trim(), '3')
  })

  if (target.local) s('a main module that runs its own remote function at top level is refused with how to fix it', async () => {
    const script = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'fixtures', 'toplevel-main.ts')
    const err = await rejection(promisify(execFile)(process.execPath, ['--import', 'tsx', script], { timeout: 60_000 }))
    assert.match(String(err.stderr), 'running a pool at its top level')
    assert.match(String(err.stderr), 'module of their own')
  })

  s.run()
}
