// A pool over several hosts: three real OpenSSH sshds on 127.0.0.1, .2 and
// .3 with their own aliases and host keys. Calls land on every host,
// broadcast reaches each, map keeps order and survives a host's death, a
// pool whose hosts are all down fails fast naming them, a host that comes
// back rejoins, and close() leaves nothing running.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { FarpipeError, MapError, MemoryTransport, pool, TransportError, type HostEventDetail, type Pool, type PoolStats, type WorkerExitDetail } from 'farpipe'
import * as h from '../fixtures/hardening.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, rejection, sleep, tempDir, until } from '../helpers.ts'
import { noSshd, useClientHome, startSshd, type Sshd } from './sshd.ts'

if (!noSshd('many hosts')) {
  const a = await startSshd({ alias: 'farpipe-a', address: '127.0.0.1' })
  const b = await startSshd({ alias: 'farpipe-b', address: '127.0.0.2', home: a.home })
  const c = await startSshd({ alias: 'farpipe-c', address: '127.0.0.3', home: a.home })
  useClientHome(a.home)
  manyHosts([a, b, c])
  map([a, b, c])
}

/** A pool over the three hosts, one or two workers each. */
function open(hosts: Sshd[], workers = 1, more: Parameters<typeof pool>[0] = {}): Promise<Pool> {
  return pool({ hosts: hosts.map((s) => ({ host: s.alias, keepaliveInterval: 500, keepaliveCountMax: 2, connectTimeout: 3000 })), workers, cacheDir: tempDir(), onLog: () => {}, ...more })
}

function manyHosts(all: Sshd[]): void {
  const s = suite('many hosts')

  s('calls land on every host, and broadcast gives one result per host in their order', async () => {
    const p = await open(all)
    try {
      const where = await Promise.all(Array.from({ length: 30 }, () => p.run(h.hostOf)))
      assert.equal(new Set(where), new Set(all.map((x) => x.alias)))
      assert.equal(await Promise.all(p.broadcast(h.hostOf)), all.map((x) => x.alias))
      assert.equal(await Promise.all(p.with({ timeout: 10_000 }).broadcast(t.add, 1, 1)), [2, 2, 2])
    } finally {
      await p.close()
    }
  })

  s('stats() counts per host and worker: calls, items and bytes each way, errors', async () => {
    const p = await open(all)
    try {
      await collect(p.run(t.countAsync, 100))
      await p.run(t.sum, [1, 2, 3].values())
      await rejection(p.run(t.failAfter, 1).result)
      // pool() resolves at its first worker: the others may still be starting.
      await until(() => p.stats().hosts.every((x) => x.workers.every((w) => w.up)), 10_000, 'every worker to be up')
      const stats: PoolStats = p.stats()
      assert.equal(stats.hosts.map((x) => [x.name, x.up, x.workers.length]), all.map((x) => [x.alias, true, 1]))
      const workers = stats.hosts.flatMap((x) => x.workers)
      const total = (k: 'calls' | 'errors' | 'itemsIn' | 'itemsOut' | 'bytesIn' | 'bytesOut') => workers.reduce((n, w) => n + w[k], 0)
      assert.ok(total('calls') >= 3)
      assert.is(total('errors'), 1)
      assert.ok(total('itemsIn') >= 101, `${total('itemsIn')} items in`)
      assert.is(total('itemsOut'), 3)
      assert.ok(total('bytesIn') > 0 && total('bytesOut') > 0)
      assert.ok(workers.every((w) => w.up && typeof w.pid === 'number' && w.inFlight === 0))
      assert.is(stats.queued, 0)
    } finally {
      await p.close()
    }
  })

  s('with concurrency 1 per worker, calls queue in order and all complete', async () => {
    const p = await open(all, 1, { concurrency: 1 })
    try {
      const calls = Array.from({ length: 12 }, (_, i) => p.run(h.slowDouble, { x: i, ms: 30 }))
      await until(() => p.stats().queued > 0, 10_000, 'calls to queue')
      const inFlight = p.stats().hosts.flatMap((x) => x.workers).map((w) => w.inFlight)
      assert.ok(inFlight.every((n) => n <= 1), `in flight per worker: ${inFlight}`)
      const results = await Promise.all(calls)
      assert.equal(results.map((r) => r.y), Array.from({ length: 12 }, (_, i) => i * 2))
      assert.equal(new Set(results.map((r) => r.host)).size, 3)
    } finally {
      await p.close()
    }
  })

  s('a host whose sshd dies: hostdown and workerexit, calls go to the others, it rejoins when it comes back (hostup)', async () => {
    const [, b] = all
    // Resume off: the sshd's death takes its workers with it (stop() kills them), and this is about a host that is gone.
    const p = await open(all, 1, { resumeWindow: 0 })
    const events: string[] = []
    p.addEventListener('hostdown', (e) => events.push(`down ${(e as CustomEvent<HostEventDetail>).detail.host}`))
    p.addEventListener('hostup', (e) => events.push(`up ${(e as CustomEvent<HostEventDetail>).detail.host}`))
    p.addEventListener('workerexit', (e) => events.push(`exit ${(e as CustomEvent<WorkerExitDetail>).detail.host}`))
    try {
      await Promise.all(p.broadcast(t.add, 1, 1))
      await b!.stop()
      await until(() => events.includes(`down ${b!.alias}`), 10_000, 'hostdown')
      assert.ok(events.includes(`exit ${b!.alias}`), events.join(', '))
      const where = await Promise.all(Array.from({ length: 12 }, () => p.run(h.hostOf)))
      assert.not.ok(where.includes(b!.alias))
      assert.is(p.stats().hosts[1]!.up, false)
      assert.match(p.stats().hosts[1]!.error ?? '', '127.0.0.2')
      await b!.restart()
      await until(() => events.includes(`up ${b!.alias}`), 20_000, 'hostup')
      let landed = false
      for (let i = 0; i < 50 && !landed; i++) landed = (await Promise.all(Array.from({ length: 6 }, () => p.run(h.hostOf)))).includes(b!.alias)
      assert.ok(landed, 'calls land on the host that came back')
    } finally {
      await p.close()
    }
  })

  s('a pool whose every host is down fails new calls at once, naming each host and why', async () => {
    const x = await startSshd({ alias: 'farpipe-x', address: '127.0.0.4', home: all[0]!.home })
    const y = await startSshd({ alias: 'farpipe-y', address: '127.0.0.5', home: all[0]!.home })
    const p = await open([x, y])
    try {
      await Promise.all(p.broadcast(t.add, 1, 1))
      await Promise.all([x.stop(), y.stop()])
      await until(() => p.stats().hosts.every((x) => !x.up), 10_000, 'both hosts to be down')
      // The first call after the drop waits for the reconnection attempts under way; then calls fail at once (the backoff).
      await rejection(p.run(t.add, 1, 2))
      const err = await rejection(p.run(t.add, 1, 2))
      assert.instance(err, TransportError)
      assert.match(err.message, 'farpipe-x')
      assert.match(err.message, 'farpipe-y')
      assert.match(err.message, 'refused')
    } finally {
      await p.close()
      await Promise.all([x.stop(), y.stop()])
    }
  })

  s('close() leaves no process, channel or handle behind', async () => {
    const handles = () => process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'Timeout').length
    const before = handles()
    const sessionsBefore = all.map((x) => x.sessionPids().length)
    const p = await open(all, 2, { closeGrace: 100 })
    await Promise.all(p.broadcast(t.add, 1, 1))
    // A call still running when close() begins: cancelled, its finally run.
    const running = p.run(t.slowItems, 1000, 20)
    await running[Symbol.asyncIterator]().next()
    await p.close()
    await rejection(running.result)
    await until(() => all.every((x, i) => x.sessionPids().length <= sessionsBefore[i]!), 10_000, 'the sshd sessions to end')
    await until(() => handles() <= before, 10_000, `handles to go back to ${before} (${JSON.stringify(process.getActiveResourcesInfo())})`)
  })

  s.run()
}

function map(all: Sshd[]): void {
  const s = suite('map')
  // The map semantics run on an in-memory pool of three hosts (fast); the host death over real sshds is the last case.
  const memoryPool = (workers = 2) =>
    pool({ transports: ['m1', 'm2', 'm3'].map((host) => new MemoryTransport({ host, workers })), cacheDir: tempDir(), onLog: () => {} })

  s('keeps input order over 10,000 items with fast and slow hosts mixed (three sshds)', async () => {
    const p = await open(all)
    try {
      const items = Array.from({ length: 10_000 }, (_, x) => ({ x, slowHost: all[1]!.alias, ms: x % 50 === 0 ? 5 : 0 }))
      const out = await collect(p.map(h.doubleOn, items, { concurrency: 16 }))
      assert.equal(out, items.map((i) => i.x * 2))
    } finally {
      await p.close()
    }
  })

  s('ordered: false passes results on as they come, each once', async () => {
    const p = await memoryPool()
    try {
      const items = [80, 1, 40, 1, 1].map((ms, x) => ({ x, ms }))
      const out = (await collect(p.map(h.slowDouble, items, { ordered: false }))).map((r) => r.y)
      assert.equal([...out].sort((m, n) => m - n), [0, 2, 4, 6, 8])
      assert.is.not(out[0], 0, 'the slow first item did not come first')
      // A generator's items come as they are yielded, every one once.
      const gen = await collect(p.map(h.twoOf, [1, 2, 3], { ordered: false }))
      assert.equal([...gen].sort(), [1, 1.5, 2, 2.5, 3, 3.5])
    } finally {
      await p.close()
    }
  })

  // Found by the many-hosts bench: a second read of a task whose value was
  // waiting to be passed on ran past its end, and the map dropped other
  // results; racing every pending read also piled handlers onto a slow one.
  s('ordered: false with one slow item among many: every result once, the slow one last', async () => {
    const p = await memoryPool()
    const gate = Symbol.for('farpipe.spec.gate')
    try {
      // Item 0 is slow until the other 299 have arrived (a gate, not a timer: on a busy machine 299 items may take longer than any timer).
      const items = Array.from({ length: 300 }, (_, x) => ({ x, gate: x === 0 }))
      const stream = p.map(h.gatedDouble, items, { ordered: false, concurrency: 8 })
      const reader = stream.getReader()
      const out: number[] = []
      for (let k = 0; k < 299; k++) out.push((await reader.read()).value!.y)
      ;(globalThis as Record<symbol, unknown>)[gate] = true
      for (let r = await reader.read(); !r.done; r = await reader.read()) out.push(r.value.y)
      assert.is(out.length, 300)
      assert.equal([...out].sort((m, n) => m - n), items.map((i) => i.x * 2))
      assert.is(out[299], 0)
      assert.equal(stream.progress, { started: 300, done: 300, inFlight: 0, rerun: 0, failed: 0 })
    } finally {
      delete (globalThis as Record<symbol, unknown>)[gate]
      await p.close()
    }
  })

  s('calls queued behind busy workers move to the other host when theirs dies', async () => {
    const transports = ['m1', 'm2'].map((host) => new MemoryTransport({ host, workers: 1 }))
    const p = await pool({ transports, concurrency: 1, cacheDir: tempDir(), onLog: () => {} })
    try {
      const calls = Array.from({ length: 8 }, (_, x) => p.run(h.slowDouble, { x, ms: 40 }))
      await until(() => p.stats().queued >= 4, 10_000, 'calls to queue')
      transports[1]!.cut('m2 is gone')
      const outcomes = await Promise.allSettled(calls.map((c) => c.result))
      // The call running on m2 fails with it; every queued call runs, on m1.
      const failed = outcomes.filter((o) => o.status === 'rejected')
      assert.is(failed.length, 1, failed.map((f) => String((f as PromiseRejectedResult).reason?.message)).join(' | '))
      assert.instance((failed[0] as PromiseRejectedResult).reason, TransportError)
      const done = outcomes.filter((o): o is PromiseFulfilledResult<{ y: number; host: string }> => o.status === 'fulfilled').map((o) => o.value)
      assert.is(done.length, 7)
      assert.is(p.stats().queued, 0)
    } finally {
      await p.close()
    }
  })

  s('a stalled consumer stalls the source: at most concurrency items in flight; cancel returns the source and starts nothing more', async () => {
    const p = await memoryPool()
    let pulled = 0
    let returned = false
    const source = {
      [Symbol.iterator]() {
        return this
      },
      next: () => ({ done: false, value: pulled++ }),
      return: () => ((returned = true), { done: true, value: undefined }),
    }
    try {
      const stream = p.map(t.square, source as Iterable<number>, { concurrency: 4 })
      const reader = stream.getReader()
      for (let i = 0; i < 10; i++) assert.is((await reader.read()).value, i * i)
      await sleep(200)
      const progress = stream.progress
      assert.ok(progress.inFlight <= 4, `${progress.inFlight} in flight`)
      assert.ok(pulled <= 10 + 4 + 1, `${pulled} items pulled`)
      const calls = p.stats().hosts.reduce((n, x) => n + x.workers.reduce((m, w) => m + w.calls, 0), 0)
      await reader.cancel('enough')
      assert.ok(returned, 'the source was returned')
      await sleep(100)
      assert.is(p.stats().hosts.reduce((n, x) => n + x.workers.reduce((m, w) => m + w.calls, 0), 0), calls, 'no call was started after the cancel')
      assert.equal(stream.progress.done, 10)
    } finally {
      await p.close()
    }
  })

  s('a failed item errors the stream with MapError: its index, the call error as cause; the source is returned', async () => {
    const p = await memoryPool()
    let returned = false
    async function* source() {
      try {
        for (let i = 0; ; i++) yield i
      } finally {
        returned = true
      }
    }
    try {
      const out: number[] = []
      const err = await rejection(
        (async () => {
          for await (const x of p.map(h.failOn, source(), { concurrency: 3 })) out.push(x)
        })(),
      )
      assert.instance(err, MapError)
      assert.instance(err, FarpipeError)
      assert.is(err.index, 7)
      assert.match(err.message, 'item 7 of the map of failOn failed')
      assert.match(err.cause.message, 'seven is not allowed')
      assert.equal(out, [0, 1, 2, 3, 4, 5, 6])
      assert.ok(returned)
    } finally {
      await p.close()
    }
  })

  s('an item lost with its worker runs again, every result arrives once; a second loss fails the item', async () => {
    const transports = ['m1', 'm2'].map((host) => new MemoryTransport({ host, workers: 1, delay: 1 }))
    const p = await pool({ transports, cacheDir: tempDir(), onLog: () => {} })
    try {
      const stream = p.map(h.slowDouble, Array.from({ length: 200 }, (_, x) => ({ x, ms: 2 })), { concurrency: 8 })
      const out: number[] = []
      const reader = stream.getReader()
      let cut = false
      for (;;) {
        const r = await reader.read()
        if (r.done) break
        out.push(r.value.y)
        // Cut m2 once it has calls in flight (which ones it has at a given moment depends on timing).
        if (!cut && out.length >= 50 && (p.stats().hosts[1]?.workers[0]?.inFlight ?? 0) > 0) {
          cut = true
          transports[1]!.cut('m2 pulled from the rack')
        }
      }
      assert.ok(cut, 'm2 had calls in flight at some point')
      assert.equal(out, Array.from({ length: 200 }, (_, x) => x * 2))
      assert.ok(stream.progress.rerun > 0, 'some items ran again')
      assert.is(stream.progress.done, 200)
    } finally {
      await p.close()
    }
  })

  s('a host whose sshd is killed mid-map: every result exactly once, in order', async () => {
    const x = await startSshd({ alias: 'farpipe-p', address: '127.0.0.6', home: process.env.HOME })
    const y = await startSshd({ alias: 'farpipe-q', address: '127.0.0.7', home: process.env.HOME })
    const z = await startSshd({ alias: 'farpipe-r', address: '127.0.0.8', home: process.env.HOME })
    const p = await open([x, y, z])
    try {
      const stream = p.map(h.slowDouble, Array.from({ length: 3000 }, (_, i) => ({ x: i, ms: 1 })), { concurrency: 12 })
      const out: number[] = []
      const hosts = new Map<string, number>()
      let during: PoolStats | undefined
      for await (const r of stream) {
        out.push(r.y)
        hosts.set(r.host, (hosts.get(r.host) ?? 0) + 1)
        if (out.length === 1000) void y.stop()
        if (out.length === 1500) during = p.stats()
      }
      assert.equal(out, Array.from({ length: 3000 }, (_, i) => i * 2))
      assert.ok(stream.progress.rerun > 0, 'items of the dead host ran again')
      assert.is(during?.hosts[1]?.up, false)
      console.log(`  stats after the kill: ${JSON.stringify(during)}\n  progress: ${JSON.stringify(stream.progress)}; results by host: ${JSON.stringify([...hosts])}`)
    } finally {
      await p.close()
      await Promise.all([x.stop(), y.stop(), z.stop()])
    }
  })

  s.run()
}
