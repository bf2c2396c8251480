// Dispatch: how the pool hands calls to workers. Calls that settle while
// queued leave the queue (and let their arguments go); a worker slot whose
// start failed is not handed calls while another worker runs, and is started
// again after a backoff; a host whose connection drops keeps its queued calls
// while it reconnects.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CancelError, LocalTransport, MemoryTransport, pool, TimeoutError, TransportError, type Channel, type Transport, type TransportEvents } from 'farpipe'
import * as h from '../fixtures/hardening.ts'
import * as t from '../fixtures/tasks.ts'
import { rejection, sleep, tempDir, until } from '../helpers.ts'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const queue = suite('dispatch: the queue')

queue('regression: calls that time out, are cancelled or aborted while queued leave the queue and let their arguments go', async () => {
  const p = await pool({ workers: 1, concurrency: 1, cacheDir: tempDir(), onLog: () => {} })
  try {
    const blocker = p.run(t.pause, 60_000)
    await until(() => p.stats().hosts[0]!.workers[0]!.inFlight === 1, 10_000, 'the blocker to run')
    gc()
    const before = process.memoryUsage().arrayBuffers
    const big = new Uint8Array(1 << 20)
    const settled: Promise<unknown>[] = []
    const aborts: AbortController[] = []
    const cancels: (() => Promise<void>)[] = []
    for (let i = 0; i < 200; i++) {
      if (i % 3 === 0) settled.push(rejection(p.with({ timeout: 3000 }).run(t.echo, big)))
      else if (i % 3 === 1) {
        const ac = new AbortController()
        aborts.push(ac)
        settled.push(rejection(p.with({ signal: ac.signal }).run(t.echo, big)))
      } else {
        const call = p.run(t.echo, big)
        cancels.push(() => call.cancel())
        settled.push(rejection(call.result))
      }
    }
    await until(() => p.stats().queued === 200, 2500, 'every call to be queued')
    for (const ac of aborts) ac.abort(new Error('not wanted'))
    await Promise.all(cancels.map((c) => c()))
    const errors = await Promise.all(settled)
    assert.ok(errors.every((e) => e instanceof TimeoutError || e instanceof CancelError || (e as Error).message === 'not wanted'))
    // Before: every one stayed queued (with its 1 MiB) until a worker would be free.
    assert.is(p.stats().queued, 0)
    // Buffers are freed by a collection after the promises that carried them have settled: look a few times.
    let grown = Infinity
    for (let i = 0; i < 20 && grown >= 50 * 1048576; i++) {
      await sleep(20)
      gc()
      grown = process.memoryUsage().arrayBuffers - before
    }
    assert.ok(grown < 50 * 1048576, `arrayBuffers grew ${(grown / 1048576).toFixed(1)} MiB`)
    await blocker.cancel()
    // The worker is free for the next call, which is not behind a ghost.
    assert.is(await p.run(t.add, 1, 2), 3)
  } finally {
    await p.close()
  }
})

/** Local workers, but worker `index` fails to start its first `failures` times (then it starts). */
class FailingSlot implements Transport {
  readonly host = 'local'
  readonly up = true
  opens = 0
  private readonly local = new LocalTransport({ workers: 2 })
  constructor(
    private readonly index: number,
    private failures: number,
  ) {}
  connect(): Promise<number> {
    return this.local.connect()
  }
  /** Set to make every start fail from now on. */
  failAll = false
  async open(index: number, events: TransportEvents): Promise<Channel> {
    if (this.failAll) throw new TransportError(`worker local/${index} could not start (all fail now)`, { host: 'local', reason: 'closed' })
    if (index === this.index) {
      this.opens++
      if (this.failures-- > 0) throw new TransportError(`worker local/${index} could not start (failure ${this.opens})`, { host: 'local', reason: 'closed' })
    }
    return this.local.open(index, events)
  }
  close(): Promise<void> {
    return this.local.close()
  }
}

const slots = suite('dispatch: worker slots')

slots('regression: a slot whose start failed is not handed calls while a worker runs; it is started again with backoff', async () => {
  const transport = new FailingSlot(1, 2)
  const p = await pool({ transports: [transport], cacheDir: tempDir(), onLog: () => {} })
  try {
    await until(() => transport.opens >= 1 && p.stats().hosts[0]!.workers[1]!.error, 10_000, 'slot 1 to fail')
    // Before: calls were sent to the empty slot (an empty slot weighs less than a busy worker), failed with its error, and each started it again at once.
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => p.run(t.pause, 5).then(() => i)))
    assert.equal(results, Array.from({ length: 20 }, (_, i) => i))
    assert.ok(transport.opens <= 2, `slot 1 was opened ${transport.opens} times for 20 calls`)
    const stats = p.stats().hosts[0]!.workers
    assert.match(stats[1]!.error ?? '', /could not start/)
    // The backoff passes (1 s, then 2 s) and the slot comes up by itself.
    await until(() => p.stats().hosts[0]!.workers[1]!.up, 15_000, 'slot 1 to come up')
    assert.is(transport.opens, 3)
    assert.is(p.stats().hosts[0]!.workers[1]!.error, undefined)
  } finally {
    await p.close()
  }
})

/** Local workers, but worker 1 never starts: its first start fails at once, every later one after `slowMs` (a worker that never says hello). */
class SlowlyFailingSlot implements Transport {
  readonly host = 'local'
  readonly up = true
  opens = 0
  private readonly local = new LocalTransport({ workers: 2 })
  constructor(private readonly slowMs: number) {}
  connect(): Promise<number> {
    return this.local.connect()
  }
  async open(index: number, events: TransportEvents): Promise<Channel> {
    if (index !== 1) return this.local.open(index, events)
    this.opens++
    if (this.opens > 1) await sleep(this.slowMs)
    throw new TransportError(`worker local/1 could not start (start ${this.opens})`, { host: 'local', reason: 'closed' })
  }
  close(): Promise<void> {
    return this.local.close()
  }
}

slots('regression: a call goes to the running worker, not to the restart of a slot whose start failed', async () => {
  const transport = new SlowlyFailingSlot(20_000)
  const p = await pool({ transports: [transport], cacheDir: tempDir(), onLog: () => {} })
  try {
    await until(() => p.stats().hosts[0]!.workers[1]!.error, 10_000, 'slot 1 to fail')
    // Worker 0 has a call: an empty slot weighs less than it.
    const busy = p.run(t.pause, 60_000)
    await until(() => transport.opens >= 2, 10_000, 'slot 1 to be started again in the background')
    // Before: the call was handed to slot 1 and waited for its restart (20 s here) to fail before it went to worker 0.
    const outcome = await Promise.race([p.run(t.add, 1, 2), sleep(10_000).then(() => 'waited for the restart')])
    assert.is(outcome, 3)
    await busy.cancel()
  } finally {
    await p.close()
  }
})

slots('a call waits for the running worker while the other slot backs off', async () => {
  const transport = new FailingSlot(1, 1000)
  const p = await pool({ transports: [transport], cacheDir: tempDir(), onLog: () => {}, concurrency: 1 })
  try {
    await until(() => p.stats().hosts[0]!.workers[1]!.error, 10_000, 'slot 1 to fail')
    const first = p.run(t.pause, 300)
    const second = p.run(t.add, 2, 2)
    assert.is(await first, 300)
    assert.is(await second, 4)
  } finally {
    await p.close()
  }
})

slots('a call fails with the start error when no worker runs or can start, and does not wait', async () => {
  const transport = new FailingSlot(1, 1000)
  const p = await pool({ transports: [transport], cacheDir: tempDir(), onLog: () => {} })
  try {
    await until(() => p.stats().hosts[0]!.workers[1]!.error, 10_000, 'slot 1 to fail')
    const pid = await p.run(h.pid)
    transport.failAll = true
    process.kill(pid, 'SIGKILL')
    await until(() => !p.stats().hosts[0]!.workers[0]!.up, 10_000, 'worker 0 to be gone')
    const err = await rejection(p.run(t.add, 1, 1).result)
    assert.instance(err, TransportError)
    assert.match(err.message, /could not start/)
    assert.is(p.stats().queued, 0)
  } finally {
    await p.close()
  }
})

/** One memory worker behind a connection that can drop (`up` false until the next connect()). */
class Dropping implements Transport {
  readonly host = 'dropping'
  up = true
  connects = 0
  readonly memory = new MemoryTransport({ host: 'dropping', workers: 1 })
  async connect(): Promise<number> {
    this.connects++
    this.up = true
    return 1
  }
  open(index: number, events: TransportEvents): Promise<Channel> {
    return this.memory.open(index, events)
  }
  drop(): void {
    this.up = false
    this.memory.cut('the connection dropped')
  }
  close(): Promise<void> {
    return this.memory.close()
  }
}

const drop = suite('dispatch: a single host that drops')

drop('regression: queued calls wait for the reconnect that starts at once, and run; the call in flight fails', async () => {
  const transport = new Dropping()
  const p = await pool({ transports: [transport], concurrency: 1, cacheDir: tempDir(), onLog: () => {} })
  try {
    const inFlight = p.run(t.pause, 60_000)
    const queued = [p.run(t.add, 1, 1), p.run(t.add, 2, 2), p.run(t.add, 3, 3)]
    await until(() => p.stats().queued === 3, 10_000, 'three queued calls')
    transport.drop()
    assert.instance(await rejection(inFlight.result), TransportError)
    // Before: they were rejected with "no host up" while the reconnect was starting.
    assert.equal(await Promise.all(queued), [2, 4, 6])
    assert.is(transport.connects, 2)
  } finally {
    await p.close()
  }
})

drop('queued calls fail when the reconnect fails', async () => {
  const transport = new Dropping()
  const p = await pool({ transports: [transport], concurrency: 1, cacheDir: tempDir(), onLog: () => {} })
  try {
    const inFlight = p.run(t.pause, 60_000)
    const queued = p.run(t.add, 1, 1)
    await until(() => p.stats().queued === 1, 10_000, 'a queued call')
    transport.connect = async () => {
      transport.connects++
      throw new TransportError('host dropping: connection refused', { host: 'dropping', reason: 'refused' })
    }
    transport.drop()
    assert.instance(await rejection(inFlight.result), TransportError)
    const err = await rejection(queued.result)
    assert.instance(err, TransportError)
    assert.match(err.message, /connection refused/)
  } finally {
    await p.close()
  }
})

queue.run()
slots.run()
drop.run()
