// Streams nested in values (DESIGN.md §1, "Streams anywhere in values"),
// written once and run on the embedded local pool (nested-local.spec.ts)
// and over a real sshd (nested-ssh.spec.ts).
import { createHash } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CancelError, RemoteError, SerializeError, TransportError, type Pool, type PoolOptions } from 'farpipe'
import * as n from '../fixtures/nested.ts'
import * as f from '../fixtures/trust.ts'
import { collect, markerPath, rejection, sleep, tempDir, until } from '../helpers.ts'

/** Where the suites run. */
export interface Target {
  name: string
  open(options?: PoolOptions): Promise<Pool>
}

const MiB = 1024 * 1024

/** The SHA-256 of everything a byte stream gives. */
async function sha(stream: ReadableStream<Uint8Array>): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of stream) {
    assert.instance(chunk, Uint8Array)
    h.update(chunk)
  }
  return h.digest('hex')
}

/** Bytes a source pushes, in chunks of 64 KiB (the same as a body of `seed`). */
function localBody(seed: number, size: number): ReadableStream<Uint8Array> {
  let i = 0
  let at = 0
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= size) return c.close()
      const k = Math.min(65536, size - at)
      c.enqueue(n.bodyChunk(seed, i++, k))
      at += k
    },
  })
}

export function nestedSuites(target: Target): void {
  const s = suite(`${target.name}: streams nested in values`)
  let p: Pool
  s.before(async () => {
    p = await target.open({ workers: 1, cacheDir: tempDir() })
  })
  s.after(async () => {
    await p?.close()
  })
  s.before.each(async () => {
    await p.run(n.resetCounts)
  })

  s('regression: idleTimeout does not fire while a body streams and nothing else moves', async () => {
    const call = p.with({ idleTimeout: 300 }).run(f.slowBody, 8, 1024, 100)
    const chunks: Uint8Array[] = []
    for await (const item of call) for await (const chunk of item.body) chunks.push(chunk)
    // Before: the call failed with TimeoutError after 300 ms, while chunks came every 100 ms.
    assert.is(await call.result, 'sent')
    assert.equal(chunks.map((c) => c[0]), [0, 1, 2, 3, 4, 5, 6, 7])
  })

  s('yielded items carry byte bodies of several MiB, read in another order than yielded, each intact', async () => {
    const items: { name: string; seed: number; body: ReadableStream<Uint8Array> }[] = []
    for await (const item of p.run(n.files, 4, 3 * MiB)) items.push(item)
    assert.equal(items.map((f) => f.name), ['file-0', 'file-1', 'file-2', 'file-3'])
    for (const f of [items[2]!, items[0]!, items[3]!, items[1]!]) {
      assert.instance(f.body, ReadableStream)
      assert.is(await sha(f.body), n.bodyHash(f.seed, 3 * MiB), f.name)
    }
    const counts = await p.run(n.sourceCounts)
    assert.is(counts.closed, 4)
    assert.is(counts.cancelled, 0)
  })

  s('bodies read at the same time, interleaved, arrive intact', async () => {
    const items: { seed: number; body: ReadableStream<Uint8Array> }[] = []
    for await (const item of p.run(n.files, 3, 2 * MiB)) items.push(item)
    const hashes = await Promise.all(items.map((f) => sha(f.body)))
    assert.equal(hashes, items.map((f) => n.bodyHash(f.seed, 2 * MiB)))
  })

  s('a result that is a stream, and a result object holding one', async () => {
    const stream = await p.run(n.streamResult, 7, 2 * MiB)
    assert.instance(stream, ReadableStream)
    assert.is(await sha(stream), n.bodyHash(7, 2 * MiB))
    const obj = await p.run(n.objectResult, 8, MiB + 3)
    assert.is(obj.name, 'result')
    assert.is(await sha(obj.body), n.bodyHash(8, MiB + 3))
  })

  s('a nested argument stream and a nested result stream flow at once (the result settles first)', async () => {
    const size = 4 * MiB
    const { echoed } = await p.run(n.echoNested, { data: localBody(3, size) })
    // The result arrived while the argument was still being sent: its stream is fed by it.
    assert.is(await sha(echoed), n.bodyHash(3, size))
  })

  s('streams nested in the items of a streamed argument reach the remote, which reads each', async () => {
    const items = [0, 1, 2].map((i) => ({ name: `in-${i}`, body: localBody(10 + i, MiB + i) }))
    const out: { name: string; sha: string }[] = []
    for await (const x of p.run(n.hashBodies, items.values())) out.push(x)
    assert.equal(out, items.map((x, i) => ({ name: x.name, sha: n.bodyHash(10 + i, MiB + i) })))
  })

  s('streams inside the items of a nested stream (a tree of directories, files and bodies)', async () => {
    const dirs = await p.run(n.tree, 2, 3, 100_000)
    const seen: string[] = []
    for (const d of dirs.reverse()) {
      for await (const f of d.files) {
        assert.is(await sha(f.body), n.bodyHash(f.seed, 100_000))
        seen.push(`${d.dir}/${f.name}`)
      }
    }
    assert.equal(seen, ['dir-1/file-0', 'dir-1/file-1', 'dir-1/file-2', 'dir-0/file-0', 'dir-0/file-1', 'dir-0/file-2'])
  })

  s('cancelling a nested stream reaches its source on the other side', async () => {
    const items: { body: ReadableStream<Uint8Array> }[] = []
    for await (const item of p.run(n.files, 2, 10 * MiB)) items.push(item)
    const reader = items[0]!.body.getReader()
    assert.ok(!(await reader.read()).done)
    await reader.cancel(new Error('enough'))
    await until(async () => (await p.run(n.sourceCounts)).cancelled === 1, 10_000, 'the source to see its cancel')
    // The other body is untouched by it and still reads to its end.
    assert.is(await sha(items[1]!.body), n.bodyHash(1, 10 * MiB))
    const counts = await p.run(n.sourceCounts)
    assert.is(counts.cancelled, 1)
    assert.equal(counts.cancelReasons, ['enough'], "the source's cancel() gets the reader's reason")
    assert.is(counts.closed, 1)
  })

  s('an error inside one nested stream errors that stream only, with RemoteError', async () => {
    const call = p.run(n.oneBadBody, 3, MiB, 1, 2)
    const items: { seed: number; body: ReadableStream<Uint8Array> }[] = []
    for await (const item of call) items.push(item)
    assert.is(await call.result, undefined)
    const err = await rejection(sha(items[1]!.body))
    assert.instance(err, RemoteError)
    assert.match(err.message, /body 1 broke at chunk 2/)
    assert.is(err.index, 2)
    assert.is(await sha(items[0]!.body), n.bodyHash(0, MiB))
    assert.is(await sha(items[2]!.body), n.bodyHash(2, MiB))
  })

  s('a stalled nested reader bounds its producer to its window', async () => {
    const q = await target.open({ workers: 1, cacheDir: tempDir() })
    try {
      // 1 MiB windows: the source may run 16 chunks of 64 KiB ahead, plus one in flight.
      const view = q.with({ highWaterBytes: MiB })
      let body: ReadableStream<Uint8Array> | undefined
      for await (const item of view.run(n.endless)) body = item.body
      const reader = body!.getReader()
      for (let i = 0; i < 3; i++) await reader.read()
      await sleep(300)
      const first = (await q.run(n.sourceCounts)).pulled
      await sleep(300)
      const later = (await q.run(n.sourceCounts)).pulled
      assert.is(later, first, 'the source is not pulled while the reader stalls')
      assert.ok(first <= 3 + 16 + 2, `pulled ${first} chunks of 64 KiB for a 1 MiB window`)
      await reader.cancel()
      await until(async () => (await q.run(n.sourceCounts)).cancelled === 1, 10_000, 'the cancel')
    } finally {
      await q.close()
    }
  })

  s('1,000 yielded items whose bodies are never read hold one small window each', async () => {
    const items: { body: ReadableStream<Uint8Array> }[] = []
    global.gc?.()
    const before = process.memoryUsage()
    for await (const item of p.run(n.files, 1000, MiB)) items.push(item)
    const counts = await p.run(n.sourceCounts)
    assert.is(counts.opened, 1000)
    // Each source gave at most what its body's first window holds (one 64 KiB chunk), not its 1 MiB.
    assert.ok(counts.pulled <= 1000, `the sources gave ${counts.pulled} chunks of 64 KiB`)
    global.gc?.()
    const grown = process.memoryUsage().arrayBuffers - before.arrayBuffers
    assert.ok(grown < 200 * MiB, `the caller holds ${(grown / MiB).toFixed(0)} MiB more for 1,000 unread 1 MiB bodies`)
    // Cancelling them lets every source go.
    await Promise.all(items.map((f) => f.body.cancel()))
    await until(async () => (await p.run(n.sourceCounts)).cancelled === 1000, 20_000, 'every source to see its cancel')
  })

  s('breaking out of the call keeps the bodies already delivered readable, and lets the others go', async () => {
    let kept: { seed: number; body: ReadableStream<Uint8Array> } | undefined
    for await (const item of p.run(n.files, 200, 100_000, 50_000)) {
      kept = item
      break
    }
    assert.is(await sha(kept!.body), n.bodyHash(kept!.seed, 100_000, 50_000))
    // Items the generator made before it saw the cancel, and their bodies, are let go: no source stays open.
    await until(async () => {
      const c = await p.run(n.sourceCounts)
      return c.opened === c.closed + c.cancelled
    }, 10_000, 'every source to be closed or cancelled')
  })

  s('the same stream yielded twice is refused with a SerializeError naming the item', async () => {
    const call = p.run(n.sameTwice)
    const got: unknown[] = []
    const err = await rejection((async () => {
      for await (const x of call) got.push(x)
    })())
    assert.instance(err, SerializeError)
    assert.match(err.message, /yield\[1\]/)
    assert.match(err.message, /sent already/)
    assert.is(got.length, 1)
  })

  s('a value in a nested stream that cannot be sent errors that stream only, with a SerializeError naming it', async () => {
    const items: { name: string; body: ReadableStream<unknown> }[] = []
    for await (const x of p.run(n.unsendableBody)) items.push(x)
    const reader = items[0]!.body.getReader()
    assert.equal((await reader.read()).value, new Uint8Array([1, 2, 3]))
    const err = await rejection(reader.read())
    assert.instance(err, SerializeError)
    assert.match(err.message, 'yield[0].body[1].save: function cannot be sent')
    assert.is(await sha(items[1]!.body as ReadableStream<Uint8Array>), n.bodyHash(1, 1000))
  })

  s("an error in the source of a stream nested in an input's item reaches the remote reading it", async () => {
    const broken = new ReadableStream<Uint8Array>({
      pull(c) {
        c.error(new Error('disk on fire'))
      },
    })
    const items = [{ name: 'ok', body: localBody(1, 1000) }, { name: 'broken', body: broken }]
    const err = await rejection((async () => {
      for await (const _ of p.run(n.hashBodies, items.values())) { /* read */ }
    })())
    assert.instance(err, RemoteError)
    assert.match(err.message, 'disk on fire')
  })

  s("a value in an input item's nested stream that cannot be sent fails there, naming its path", async () => {
    const bad = ReadableStream.from<unknown>([new Uint8Array(1), () => {}]) as ReadableStream<Uint8Array>
    const items = [{ name: 'bad', body: bad }]
    const err = await rejection((async () => {
      for await (const _ of p.run(n.hashBodies, items.values())) { /* read */ }
    })())
    assert.instance(err, RemoteError)
    assert.match(err.message, 'args[0][0].body[1]: function cannot be sent')
  })

  s('a body dropped without being read or cancelled is cancelled once it is garbage (the safety net)', async () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    await (async () => {
      for await (const _ of p.run(n.files, 1, MiB)) { /* the item, and its body, are dropped */ }
    })()
    await until(async () => {
      gc()
      await sleep(20)
      return (await p.run(n.sourceCounts)).cancelled === 1
    }, 10_000, 'the dropped body to be cancelled')
    assert.match((await p.run(n.sourceCounts)).cancelReasons[0]!, 'dropped without being read')
  })

  s('the worker killed while nested streams are open errors each with TransportError', async () => {
    const q = await target.open({ workers: 1, cacheDir: tempDir() })
    try {
      let item: { pid: number; body: ReadableStream<Uint8Array> } | undefined
      for await (const x of q.run(n.endless)) item = x
      const reader = item!.body.getReader()
      assert.ok(!(await reader.read()).done)
      process.kill(item!.pid, 'SIGKILL')
      const err = await rejection((async () => {
        for (;;) if ((await reader.read()).done) return
      })())
      assert.instance(err, TransportError)
    } finally {
      await q.close()
    }
  })

  s('close() of the pool errors the nested streams still open with TransportError', async () => {
    const q = await target.open({ workers: 1, cacheDir: tempDir() })
    let body: ReadableStream<Uint8Array> | undefined
    for await (const x of q.run(n.endless)) body = x.body
    const reader = body!.getReader()
    await reader.read()
    await q.close()
    const err = await rejection((async () => {
      for (;;) if ((await reader.read()).done) return
    })())
    assert.instance(err, TransportError)
  })

  s('cancelling a body nobody read yet is a CancelError-free no-op for the call', async () => {
    const call = p.run(n.files, 2, 1000)
    const items: { body: ReadableStream<Uint8Array> }[] = []
    for await (const x of call) items.push(x)
    await items[0]!.body.cancel(new CancelError('not wanted'))
    assert.is(await call.result, undefined)
    assert.is(await sha(items[1]!.body), n.bodyHash(1, 1000))
  })

  s('regression: a body cancelled while the worker names more keeps both sides\' budgets of first windows equal (no ProtocolError, no hang)', async () => {
    // Windows of 64 items: two bodies (32 items each to start) spend the budget of first windows.
    const view = p.with({ highWaterMark: 64 })
    const [blocked, go] = [markerPath(), markerPath()]
    const it = view.run(n.bodiesAcrossACancel, blocked, go, MiB)[Symbol.asyncIterator]()
    const first = (await it.next()).value
    // The worker is held (it reads nothing) while the caller cancels `a`, and gives its first window back at once.
    await until(() => existsSync(blocked), 10_000, 'the worker to be held')
    await first.a.cancel()
    writeFileSync(go, '')
    const bodies = [first.b]
    for (let r = await it.next(); !r.done; r = await it.next()) bodies.push(r.value)
    assert.equal(bodies.map((x) => x.seed), [1, 2, 3, 4])
    // Before: the worker named the third body with no first window (its budget was spent), the caller gave it one; once the cancel
    // reached the worker, the fourth got a first window the caller had not given it, and its first chunk failed the call with ProtocolError.
    for (const x of bodies.reverse()) assert.is(await sha(x.body), n.bodyHash(x.seed, MiB), `body ${x.seed}`)
  })

  s('regression: a body the remote cancels while the caller names more keeps both budgets of first windows equal (the other way round)', async () => {
    const view = p.with({ highWaterMark: 64 })
    const marker = markerPath()
    let cancelled!: () => void
    const cancelSeen = new Promise<void>((r) => (cancelled = r))
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new Uint8Array(1000))
      },
      cancel() {
        cancelled()
      },
    }, { highWaterMark: 0 })
    async function* items() {
      yield { a: endless, seed: 1, body: localBody(1, MiB) }
      // A turn of the event loop: the first item goes out before this side is held.
      await sleep(0)
      yield {
        seed: 2,
        // Read while the item is encoded: this side reads nothing (not the cancel of `a`) until the remote has cancelled it.
        get body() {
          const end = Date.now() + 20_000
          while (!existsSync(marker) && Date.now() < end) {}
          return localBody(2, MiB)
        },
      }
      await cancelSeen
      yield { seed: 3, body: localBody(3, MiB) }
      yield { seed: 4, body: localBody(4, MiB) }
    }
    const out = await collect(view.run(n.cancelsFirstInputBody, items(), marker))
    // Before: the fourth body got a first window here that the worker had not given it, and the worker cut the caller off with ProtocolError.
    assert.equal(out, [4, 3, 2, 1].map((seed) => ({ seed, sha: n.bodyHash(seed, MiB) })))
  })

  s('300 bodies, some inside bodies, read whole in random order, read in part or cancelled: each one read whole is intact, the call ends', async () => {
    const size = 200_000
    for (const [window, seed] of [[4096, 2], [4096, 3], [200, 1], [200, 2]] as const) {
      let x = seed
      const random = () => (x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32
      const later: (() => Promise<void>)[] = []
      let whole = 0
      const take = async (seed: number, body: ReadableStream<Uint8Array>) => {
        const r = random()
        const check = async () => {
          assert.is(await sha(body), n.bodyHash(seed, size), `body ${seed} (window ${window})`)
          whole++
        }
        if (r < 0.25) await check()
        else if (r < 0.45) {
          const reader = body.getReader()
          await reader.read()
          await reader.cancel('enough')
        } else if (r < 0.55) await body.cancel()
        else later.push(check)
      }
      const call = p.with({ highWaterMark: window }).run(n.mixedBodies, 300, size, 7, 5)
      for await (const item of call) {
        if (!item.files) {
          await take(item.seed, item.body!)
          continue
        }
        const r = random()
        if (r < 0.3) await item.files.cancel()
        else if (r < 0.6) {
          const reader = item.files.getReader()
          const file = await reader.read()
          if (!file.done) await take(file.value.seed, file.value.body)
          await reader.cancel()
        } else for await (const file of item.files) await take(file.seed, file.body)
      }
      later.sort(() => random() - 0.5)
      await Promise.all(later.map((check) => check()))
      // Before: with the caller's budget of first windows ahead of the worker's after a cancel, a legitimate body failed the call with ProtocolError.
      assert.is(await call.result, 'sent')
      assert.ok(whole > 100, `${whole} bodies read whole`)
    }
  })

  s.run()
}
