// Regression specs for the defects found by the hardening review (issue 8),
// on the embedded local pool: each failed before its fix.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CancelError, input, MemoryTransport, pool, RemoteCall, TimeoutError, type LogEntry, type Pool } from 'farpipe'
import * as h from '../fixtures/hardening.ts'
import * as f from '../fixtures/trust.ts'
import { collect, markerPath, readMarker, rejection, sleep, tempDir, thrown, until, workerChildren } from '../helpers.ts'

const here = path.dirname(fileURLToPath(import.meta.url))


// -- 1. an input that ends before the call has started ------------------------

const early = suite('input ended before the call started')

early('an empty ReadableStream piped into a cold pool’s writable ends the input', async () => {
  const p = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    // The first call of this module: the bundle is still being built when the pipe closes the writable.
    const call = p.run(h.total, input)
    await ReadableStream.from<number>([]).pipeTo(call.writable)
    assert.is(await call.result, 0)
  } finally {
    await p.close()
  }
})

early('writable.getWriter().close() right after run(), with nothing written, ends the input', async () => {
  const p = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    const call = p.run(h.total, input)
    await call.writable.getWriter().close()
    assert.is(await call.result, 0)
  } finally {
    await p.close()
  }
})

early('writable.close() right after one write ends the input', async () => {
  const p = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    const call = p.run(h.total, input)
    const writer = call.writable.getWriter()
    await writer.write(2)
    await writer.close()
    assert.is(await call.result, 2)
  } finally {
    await p.close()
  }
})

early('writable.abort() right after run() reaches the remote as its input’s error', async () => {
  const p = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    const call = p.run(h.countOrError, input)
    await call.writable.getWriter().abort(new Error('the source broke'))
    assert.is(await call.result, 'input failed: the source broke')
  } finally {
    await p.close()
  }
})

early('a source that errors at once, piped into the writable, reaches the remote', async () => {
  const p = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    const call = p.run(h.countOrError, input)
    const source = new ReadableStream({ start: (c) => c.error(new Error('no data today')) })
    await rejection(source.pipeTo(call.writable))
    assert.is(await call.result, 'input failed: no data today')
  } finally {
    await p.close()
  }
})

// Found by the reliability bench: the code that closes a source was set up
// only once the call had reached a worker.
early('a streamed argument of a call cancelled or aborted before it started is cancelled too', async () => {
  const p = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    const reasons: unknown[] = []
    const stream = () => new ReadableStream<number>({ pull: (c) => c.enqueue(1), cancel: (r) => void reasons.push(r) })
    await p.run(h.total, stream()).cancel('changed my mind')
    await rejection(p.with({ signal: AbortSignal.abort(new Error('aborted early')) }).run(h.total, stream()).result)
    let returned = 0
    const iterator = { next: () => ({ done: false, value: 1 }), return: () => (returned++, { done: true, value: undefined }), [Symbol.iterator]() { return this } }
    await p.run(h.total, iterator as Iterator<number>).cancel()
    await until(() => reasons.length === 2 && returned === 1, 5000, 'the sources to be closed')
    assert.instance(reasons[0], CancelError)
    assert.instance(reasons[1], CancelError)
  } finally {
    await p.close()
  }
})

early.run()

// -- 4. cancellation of a remote stuck between yields ---------------------------

const stuck = suite('cancelling a remote stuck between yields')
let p: Pool
const logs: LogEntry[] = []
stuck.before(async () => {
  p = await pool({ workers: 1, cacheDir: tempDir(), defaults: { cancelGrace: 300 }, onLog: (e) => void logs.push(e) })
})
stuck.after(async () => {
  await p?.close()
})

stuck('break returns after the grace, and the stuck worker is replaced', async () => {
  const before = await p.run(h.pid)
  const marker = markerPath()
  for await (const x of p.run(h.stuckAfterOne, marker)) {
    assert.is(x, 1)
    await readMarker(`${marker}.stuck`)
    break
  }
  assert.ok(logs.some((e) => /did not confirm its cancellation within 300 ms; worker local\/0 is replaced/.test(e.line)))
  const after = await p.run(h.pid)
  assert.is.not(after, before)
  await until(() => !workerChildren().some((c) => c.pid === before), 10_000, `the stuck worker ${before} to be gone`)
})

stuck('cancel() settles after the grace with CancelError', async () => {
  const marker = markerPath()
  const call = p.run(h.stuckAfterOne, marker)
  const it = call[Symbol.asyncIterator]()
  assert.equal(await it.next(), { done: false, value: 1 })
  await readMarker(`${marker}.stuck`)
  await call.cancel()
  assert.instance(await rejection(call.result), CancelError)
  assert.is(await p.run(h.fast, 3).result, undefined)
})

stuck('a timeout settles the call with TimeoutError, and its cancel settles too', async () => {
  const marker = markerPath()
  const call = p.with({ timeout: 300 }).run(h.stuckAfterOne, marker)
  assert.instance(await rejection(collect(call)), TimeoutError)
  await call.cancel()
  assert.equal(await collect(p.run(h.fast, 2)), [0, 1])
})

stuck('a remote that computes forever is given up on and its worker killed', async () => {
  const before = await p.run(h.pid)
  for await (const _ of p.run(h.spinAfterOne)) break
  await until(() => !workerChildren().some((c) => c.pid === before), 10_000, `the spinning worker ${before} to be killed`)
  assert.equal(await collect(p.run(h.fast, 2)), [0, 1])
})

stuck('close() with a stuck call settles', async () => {
  const pidsBefore = new Set(workerChildren().map((c) => c.pid))
  const q = await pool({ workers: 1, cacheDir: tempDir(), defaults: { cancelGrace: 200 }, closeGrace: 100, onLog: () => {} })
  const call = q.run(h.stuckAfterOne, markerPath())
  await call[Symbol.asyncIterator]().next()
  const worker = await until(() => workerChildren().find((c) => !pidsBefore.has(c.pid))?.pid, 10_000, 'the worker')
  await q.close()
  assert.instance(await rejection(call.result), CancelError)
  await until(() => !workerChildren().some((c) => c.pid === worker), 10_000, 'the stuck worker to be gone')
})

stuck('a script that breaks out of a stuck call and forgets close() still exits', async () => {
  const script = path.join(here, '..', 'fixtures', 'forgets-close.ts')
  const child = spawn(process.execPath, ['--import', 'tsx', script, markerPath()], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const code = await new Promise((resolve) => child.on('close', resolve))
  assert.is(code, 0, out)
  assert.match(out, 'broke out')
})

stuck.run()

// -- 5. log lines -------------------------------------------------------------

const logLines = suite('log lines')

logLines('a line printed without a newline reaches onLog when its call ends, tagged with the call', async () => {
  const entries: LogEntry[] = []
  const q = await pool({ workers: 1, cacheDir: tempDir(), onLog: (e) => void entries.push(e) })
  try {
    const callId = await q.run(h.printsPartial, 'ab', 400)
    assert.equal(entries.map((e) => [e.line.length, e.callId, e.fd]), [[800, callId, 1]])
    assert.is(entries[0]!.line, 'ab'.repeat(400))
  } finally {
    await q.close()
  }
})

logLines('a line longer than 64 KiB is passed on in pieces, nothing lost', async () => {
  const entries: LogEntry[] = []
  const q = await pool({ workers: 1, cacheDir: tempDir(), onLog: (e) => void entries.push(e) })
  try {
    await q.run(h.printsLong, 200_000)
    await q.run(h.printsPartial, 'z'.repeat(10_000), 20)
    const long = entries.filter((e) => e.line.startsWith('y'))
    const partial = entries.filter((e) => e.line.startsWith('z'))
    assert.ok(entries.every((e) => e.line.length <= 64 * 1024))
    assert.is(long.map((e) => e.line).join(''), 'y'.repeat(200_000))
    assert.is(partial.map((e) => e.line).join(''), 'z'.repeat(200_000))
  } finally {
    await q.close()
  }
})

logLines.run()

// -- 12, 13, 14, 15, 16 ------------------------------------------------------------

const misc = suite('options, close, idle, generators, broadcast')

misc('timeouts above the longest timer are refused with the limit, not fired at once', async () => {
  const q = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    for (const name of ['timeout', 'idleTimeout', 'cancelGrace']) {
      const err = thrown(() => q.with({ [name]: 2 ** 31 }))
      assert.instance(err, RangeError)
      assert.match(err.message, `option ${name} must be at most 2147483647 ms`)
    }
    // The largest one is fine.
    assert.is(await q.with({ timeout: 2 ** 31 - 1 }).run(h.pid), await q.with({ idleTimeout: 2 ** 31 - 1 }).run(h.pid))
  } finally {
    await q.close()
  }
})

misc('close() while a worker restarts settles and leaves no process behind', async () => {
  const q = await pool({ workers: 1, cacheDir: tempDir() })
  const first = await q.run(h.pid)
  process.kill(first, 'SIGKILL')
  await until(() => !workerChildren().some((c) => c.pid === first && c.state !== 'Z'), 10_000, 'the worker to die')
  await sleep(50)
  // The next call starts a fresh worker; close() begins while it is starting.
  const call = q.run(h.pid)
  const closing = q.close()
  await closing
  await rejection(call.result)
  assert.equal(workerChildren().map((c) => [c.pid, c.state, readFileSync(`/proc/${c.pid}/cmdline`, 'utf8')]), [])
})

misc('idleTimeout does not count a slow local consumer as remote silence', async () => {
  const q = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    const got: number[] = []
    for await (const x of q.with({ highWaterMark: 20, idleTimeout: 150 }).run(h.fast, 100)) {
      got.push(x)
      await sleep(20)
    }
    assert.is(got.length, 100)
  } finally {
    await q.close()
  }
})

misc('idleTimeout does not count a slow local source as remote silence', async () => {
  const q = await pool({ workers: 1, cacheDir: tempDir() })
  try {
    async function* slowSource() {
      for (let i = 0; i < 5; i++) {
        await sleep(120)
        yield i
      }
    }
    assert.is(await q.with({ idleTimeout: 60 }).run(h.total, slowSource()), 10)
  } finally {
    await q.close()
  }
})

misc('a plain function that returns a generator streams, in run() and in map()', async () => {
  const q = await pool({ workers: 2, cacheDir: tempDir() })
  try {
    const call = q.run(h.returnsGenerator, 4)
    assert.equal(await collect(call), [0, 1, 2, 3])
    assert.is(await call.result, 'counted')
    assert.equal(await collect(q.map(h.returnsGenerator, [2, 3])), [0, 1, 0, 1, 2])
    assert.equal(await collect(q.map(h.returnsSyncGenerator, [2])), [0, 10])
    // More items than one window: map reads them as they come instead of waiting for the result.
    const many = await collect(q.with({ timeout: 20_000 }).map(h.returnsGenerator, [5000]))
    assert.is(many.length, 5000)
    // regression: awaiting such a call gives the call (as its type says), not the generator's return value.
    const awaited = await q.run(h.returnsGenerator, 3)
    assert.instance(awaited, RemoteCall)
    assert.not.ok('then' in awaited)
    assert.equal(await collect(awaited), [0, 1, 2])
    assert.is(await awaited.result, 'counted')
    const start = async () => q.run(h.returnsGenerator, 2)
    const started = await start()
    assert.instance(started, RemoteCall)
    assert.equal(await collect(started), [0, 1])
    // It is given as soon as the function returned its generator, before any item (which may wait for the input).
    const piping = await q.run(f.returnsGenOfInput, input)
    const writer = piping.writable.getWriter()
    void writer.write(1)
    void writer.write(2)
    void writer.close()
    assert.equal(await collect(piping), [10, 20])
    assert.is(await piping.result, 'read')
    // A plain function's call still gives its value.
    assert.is(await q.run(h.pid).then((x) => typeof x), 'number')
    // A generator that yields nothing gives nothing; a plain function's value is passed on.
    assert.equal(await collect(q.map(h.returnsGenerator, [0, 0])), [])
    assert.equal(await collect(q.map(h.pid, [undefined])).then((r) => r.length), 1)
  } finally {
    await q.close()
  }
})

misc('p.with(...).broadcast refuses a streamed argument as p.broadcast does', async () => {
  const q = await pool({ transports: [new MemoryTransport({ host: 'a' }), new MemoryTransport({ host: 'b' })], cacheDir: tempDir() })
  try {
    for (const runner of [q, q.with({ timeout: 1000 })]) {
      const err = thrown(() => runner.broadcast(h.total, [1, 2].values()))
      assert.instance(err, TypeError)
      assert.match(err.message, 'cannot send one streamed argument to several hosts')
    }
  } finally {
    await q.close()
  }
})

misc.run()
