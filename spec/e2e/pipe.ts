// Pipelines of remote calls (`a.readable.pipeThrough(b).pipeThrough(c)`):
// between two calls, items move without a web-stream hop (lib/pipe.ts), and
// the pipe must still behave as the standard pipeTo does. Written once and
// run on the embedded local pool (pipe-local.spec.ts) and over a real sshd
// (pipe-ssh.spec.ts).
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CancelError, input, RemoteError, type Pool, type PoolOptions } from 'farpipe'
import * as pt from '../fixtures/pipe-tasks.ts'
import { collect, markerPath, readMarker, rejection, sleep, tempDir } from '../helpers.ts'

/** Where the suites run. */
export interface Target {
  name: string
  open(options?: PoolOptions): Promise<Pool>
}

type Item = { i: number; via: string }

/** A local source of `n` items `{ i, via: '' }` that records whether it was cancelled. */
function localSource(n = Infinity) {
  const seen = { pulled: 0, cancelled: undefined as unknown }
  const stream = new ReadableStream<Item>(
    {
      pull(c) {
        if (seen.pulled >= n) return c.close()
        c.enqueue({ i: seen.pulled++, via: '' })
      },
      cancel(reason) {
        seen.cancelled = reason ?? 'cancelled'
      },
    },
    { highWaterMark: 0 },
  )
  return { stream, seen }
}

/** A plain WritableStream that records what happens to it; with `refuseAfter`, its writes fail after that many. */
function recorder(refuseAfter?: number) {
  const log = { items: [] as unknown[], closed: false, aborted: undefined as unknown }
  const stream = new WritableStream<unknown>({
    write(x) {
      if (refuseAfter !== undefined && log.items.length >= refuseAfter) throw new Error('the recorder refused')
      log.items.push(x)
    },
    close() {
      log.closed = true
    },
    abort(reason) {
      log.aborted = reason ?? 'aborted'
    },
  })
  return { stream, log }
}

/** How a pipe's promise settled. */
async function settled(p: Promise<unknown>): Promise<{ ok: true } | { ok: false; error: any }> {
  try {
    await p
    return { ok: true }
  } catch (error) {
    return { ok: false, error }
  }
}

export function pipeSuites(target: Target): void {
  chains(target)
  options(target)
}

function chains(target: Target): void {
  const s = suite(`${target.name}: pipelines of calls`)
  let p: Pool
  // One worker: the stages' counters live in that worker's copy of the module.
  s.before(async () => {
    p = await target.open({ workers: 1, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })

  s('three stages give every item, in order, through each stage in turn', async () => {
    const n = 5000
    const out = ReadableStream.from(Array.from({ length: n }, (_, i) => ({ i, via: '' })))
      .pipeThrough(p.run(pt.stage, input, 'a'))
      .pipeThrough(p.run(pt.stage, input, 'b'))
      .pipeThrough(p.run(pt.stage, input, 'c'))
    const items = await collect(out)
    assert.is(items.length, n)
    items.forEach((x, k) => assert.equal(x, { i: k, via: 'abc' }))
  })

  s('a call’s output piped into a call, as many stages as wanted, with small windows', async () => {
    let out: ReadableStream<Item> = p.run(pt.count, 300).readable
    for (const tag of 'abcdef') out = out.pipeThrough(p.with({ highWaterMark: 3 }).run(pt.stage, input, tag))
    const items = await collect(out)
    assert.equal(items, Array.from({ length: 300 }, (_, i) => ({ i, via: 'abcdef' })))
  })

  s('regression: a read left pending when its lock was released loses no item to a later pipe or for await', async () => {
    /** A call's readable whose stream pulled item 0 for a read that was then let go. */
    const released = async () => {
      const readable = p.run(pt.count, 5, { gap: 20 }).readable
      const reader = readable.getReader()
      const pending = reader.read()
      await sleep(5) // the stream's pull waits for item 0
      reader.releaseLock()
      await rejection(pending)
      return readable
    }
    const piped = (await collect((await released()).pipeThrough(p.run(pt.pass, input)))) as Item[]
    assert.equal(piped.map((x) => x.i), [0, 1, 2, 3, 4])
    const iterated = await collect(await released())
    assert.equal(iterated.map((x) => x.i), [0, 1, 2, 3, 4])
  })

  s('streams nested in items go through the stages and arrive whole', async () => {
    const bytes = (i: number) => new Uint8Array(1000).fill(i)
    const out = ReadableStream.from(Array.from({ length: 20 }, (_, i) => ({ i, body: ReadableStream.from([bytes(i), bytes(i + 1)]) })))
      .pipeThrough(p.run(pt.pass, input))
      .pipeThrough(p.run(pt.pass, input))
      .pipeThrough(p.run(pt.pass, input)) as ReadableStream<{ i: number; body: ReadableStream<Uint8Array> }>
    let k = 0
    for await (const item of out) {
      assert.is(item.i, k)
      const chunks = await collect(item.body)
      assert.is(chunks.length, 2)
      assert.equal([chunks[0]![0], chunks[1]![999], chunks[0]!.byteLength + chunks[1]!.byteLength], [k, k + 1, 2000])
      k++
    }
    assert.is(k, 20)
  })

  s('an error in the middle stage errors the final stream, and cancels the stages upstream (their finally runs)', async () => {
    const [m1, m2, m3] = [markerPath(), markerPath(), markerPath()]
    const src = localSource()
    const out = src.stream
      .pipeThrough(p.run(pt.stage, input, 'a', m1))
      .pipeThrough(p.run(pt.stage, input, 'b', m2, 100))
      .pipeThrough(p.run(pt.stage, input, 'c', m3))
    const got: Item[] = []
    const err = await rejection(
      (async () => {
        for await (const x of out) got.push(x)
      })(),
    )
    assert.instance(err, RemoteError)
    assert.match(err.message, 'stage b failed at item 100')
    // What the failing stage yielded before it failed arrived, in order.
    assert.equal(got, Array.from({ length: 100 }, (_, i) => ({ i, via: 'abc' })))
    assert.ok((await readMarker(m1)).finally)
    assert.is((await readMarker(m2)).yielded, 100)
    assert.is((await readMarker(m3)).yielded, 100)
    // The first stage was cancelled, and it cancelled the local source.
    await sleep(50)
    assert.ok(src.seen.cancelled !== undefined, 'the local source was cancelled')
  })

  s('cancelling the final reader cancels every stage (their finally runs) and the local source', async () => {
    const [m1, m2, m3] = [markerPath(), markerPath(), markerPath()]
    const src = localSource()
    const out = src.stream
      .pipeThrough(p.run(pt.stage, input, 'a', m1))
      .pipeThrough(p.run(pt.stage, input, 'b', m2))
      .pipeThrough(p.run(pt.stage, input, 'c', m3))
    const reader = out.getReader()
    for (let i = 0; i < 10; i++) assert.equal((await reader.read()).value, { i, via: 'abc' })
    await reader.cancel('enough')
    for (const m of [m1, m2, m3]) assert.ok((await readMarker(m)).finally)
    await sleep(50)
    assert.ok(src.seen.cancelled !== undefined, 'the local source was cancelled')
  })

  s('a stalled final consumer holds the first stage (and the local source) within the stages’ windows', async () => {
    const hwm = 16
    const src = localSource()
    const q = p.with({ highWaterMark: hwm })
    const out = src.stream.pipeThrough(q.run(pt.stage, input, 'a')).pipeThrough(q.run(pt.stage, input, 'b')).pipeThrough(q.run(pt.stage, input, 'c'))
    const reader = out.getReader()
    for (let i = 0; i < 3; i++) await reader.read()
    await sleep(300)
    const first = await p.run(pt.yieldedBy, 'a')
    const last = await p.run(pt.yieldedBy, 'c')
    // Per stage: its input window, the item in hand, its output window; the consumer took 3.
    const bound = 3 * (2 * hwm + 1) + 3
    assert.ok(first <= bound, `the first stage yielded ${first} items for a consumer that took 3 (windows of ${hwm}, bound ${bound})`)
    assert.ok(last <= hwm + 1 + 3, `the last stage yielded ${last} items`)
    // The writable's queue, the pipe's pending read, and the source's own.
    assert.ok(src.seen.pulled <= first + hwm + 3, `the local source was pulled ${src.seen.pulled} times; the first stage yielded ${first}`)
    // The stall is not an end: reading resumes where it stopped.
    assert.equal((await reader.read()).value, { i: 3, via: 'abc' })
    await reader.cancel()
  })

  s.run()
}

function options(target: Target): void {
  const s = suite(`${target.name}: piping a call into a call behaves as the standard pipeTo`)
  let p: Pool
  s.before(async () => {
    p = await target.open({ workers: 2, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })

  s('both streams are locked while the pipe runs, and released after; the end of the source closes the destination', async () => {
    const source = p.run(pt.count, 5).readable
    const dest = p.run(pt.drain, input)
    const piping = source.pipeTo(dest.writable)
    assert.ok(source.locked && dest.writable.locked, 'both locked while piping')
    await piping
    assert.ok(!source.locked && !dest.writable.locked, 'both released')
    assert.equal(await dest, { items: [0, 1, 2, 3, 4].map((i) => ({ i, via: '' })), ended: 'closed' })
    // As with a plain destination.
    const plain = recorder()
    await p.run(pt.count, 2).readable.pipeTo(plain.stream)
    assert.ok(plain.log.closed)
  })

  s('a locked source or destination is refused as the standard pipe refuses it', async () => {
    const source = p.run(pt.count, 5).readable
    const reader = source.getReader()
    const dest = p.run(pt.drain, input)
    const err = await rejection(source.pipeTo(dest.writable))
    assert.instance(err, TypeError)
    reader.releaseLock()
    const writer = dest.writable.getWriter()
    assert.instance(await rejection(source.pipeTo(dest.writable)), TypeError)
    assert.throws(() => source.pipeThrough(dest as unknown as ReadableWritablePair<unknown, unknown>), TypeError)
    writer.releaseLock()
    await source.pipeTo(dest.writable)
    assert.is((await dest).items.length, 5)
  })

  s('preventClose leaves the destination open for more', async () => {
    const dest = p.run(pt.drain, input)
    await p.run(pt.count, 3).readable.pipeTo(dest.writable, { preventClose: true })
    await p.run(pt.count, 2).readable.pipeTo(dest.writable, { preventClose: true })
    const writer = dest.writable.getWriter()
    await writer.write({ i: 9, via: 'by hand' })
    await writer.close()
    assert.equal(await dest, { items: [0, 1, 2, 0, 1].map((i) => ({ i, via: '' })).concat({ i: 9, via: 'by hand' }), ended: 'closed' })
    const plain = recorder()
    await p.run(pt.count, 3).readable.pipeTo(plain.stream, { preventClose: true })
    assert.is(plain.log.closed, false)
  })

  s('a source error aborts the destination with it, unless preventAbort', async () => {
    for (const preventAbort of [false, true]) {
      const dest = p.run(pt.drain, input)
      const r = await settled(p.run(pt.count, 3, { fail: true }).readable.pipeTo(dest.writable, { preventAbort }))
      const plain = recorder()
      const rp = await settled(p.run(pt.count, 3, { fail: true }).readable.pipeTo(plain.stream, { preventAbort }))
      for (const x of [r, rp]) {
        assert.is(x.ok, false)
        assert.instance(!x.ok && x.error, RemoteError)
        assert.match(!x.ok && x.error.message, 'count failed after 3')
      }
      assert.is(plain.log.aborted !== undefined, !preventAbort)
      if (preventAbort) {
        // Still open: it can be closed by hand, and has what came before the error.
        assert.ok(!dest.writable.locked)
        await dest.writable.close()
        assert.equal(await dest, { items: [0, 1, 2].map((i) => ({ i, via: '' })), ended: 'closed' })
      } else {
        const got = await dest
        assert.is(got.items.length, 3)
        assert.match(got.ended, /^errored: .*count failed after 3/)
      }
    }
  })

  s('a destination error cancels the source (its finally runs), unless preventCancel', async () => {
    for (const preventCancel of [false, true]) {
      const marker = markerPath()
      const source = p.run(pt.count, 100_000, { marker })
      const dest = p.run(pt.takeThenStop, input, 5)
      const r = await settled(source.readable.pipeTo(dest.writable, { preventCancel }))
      assert.is(r.ok, false)
      assert.instance(!r.ok && r.error, CancelError)
      assert.equal((await dest).length, 5)
      assert.ok(!source.readable.locked)
      const plain = recorder(5)
      const plainSource = p.run(pt.count, 100_000)
      const rp = await settled(plainSource.readable.pipeTo(plain.stream, { preventCancel }))
      assert.is(!rp.ok && rp.error.message, 'the recorder refused')
      if (preventCancel) {
        // Not cancelled: the source reads on (the pipe may have taken items the destination never got, as the standard one may).
        for (const s of [source.readable, plainSource.readable]) {
          const it = s.getReader()
          const next = await it.read()
          assert.is(next.done, false)
          // The destination took 5; the pipe took at least those (more when a batch had gone out before the error).
          assert.ok(next.value!.i >= 5, `the source read on from item ${next.value!.i}`)
          await it.cancel()
        }
      } else {
        assert.ok((await readMarker(marker)).finally)
        assert.instance(await rejection(source.result), CancelError)
        assert.instance(await rejection(plainSource.result), CancelError)
      }
    }
  })

  s('an aborted signal stops the pipe with its reason, aborting the destination and cancelling the source unless prevented', async () => {
    for (const prevent of [false, true]) {
      const flags = { preventAbort: prevent, preventCancel: prevent }
      const marker = markerPath()
      const source = p.run(pt.count, 1000, { gap: 5, marker })
      const dest = p.run(pt.drain, input)
      const ac = new AbortController()
      const piping = settled(source.readable.pipeTo(dest.writable, { ...flags, signal: ac.signal }))
      await sleep(100)
      const reason = new Error('stop now')
      ac.abort(reason)
      const r = await piping
      assert.is(!r.ok && r.error, reason)
      assert.ok(!source.readable.locked && !dest.writable.locked)
      if (prevent) {
        // Both still open: the source reads on, the destination takes more.
        const it = source.readable.getReader()
        assert.is((await it.read()).done, false)
        await it.cancel()
        await dest.writable.close()
        assert.is((await dest).ended, 'closed')
      } else {
        assert.match((await dest).ended, 'stop now')
        assert.instance(await rejection(source.result), CancelError)
        assert.ok((await readMarker(marker)).finally)
      }
      // A signal aborted before the pipe starts: nothing moves.
      const plain = recorder()
      const already = AbortSignal.abort(reason)
      const dest2 = p.run(pt.drain, input)
      const r2 = await settled(p.run(pt.count, 3).readable.pipeTo(dest2.writable, { ...flags, signal: already }))
      const rp2 = await settled(p.run(pt.count, 3).readable.pipeTo(plain.stream, { ...flags, signal: already }))
      assert.is(!r2.ok && r2.error, reason)
      assert.is(!rp2.ok && rp2.error, reason)
      assert.is(plain.log.items.length, 0)
      if (prevent) await dest2.writable.close()
      const got = await dest2
      assert.equal(got.items, [])
      assert.is(got.ended === 'closed', prevent)
      assert.is(plain.log.aborted === reason, !prevent)
    }
  })

  s('a destination that already failed cancels the source at once', async () => {
    const dest = p.run(pt.takeThenStop, input, 0)
    await dest
    await sleep(50)
    const marker = markerPath()
    const source = p.run(pt.count, 100_000, { marker })
    // Running (a call cancelled before it starts never runs at all).
    await sleep(200)
    const r = await settled(source.readable.pipeTo(dest.writable))
    assert.instance(!r.ok && r.error, CancelError)
    assert.match(!r.ok && r.error.message, 'stopped reading its input')
    assert.ok((await readMarker(marker)).finally)
    assert.instance(await rejection(source.result), CancelError)
  })

  s.run()
}

type ReadableWritablePair<R, W> = { readable: ReadableStream<R>; writable: WritableStream<W> }
