// A hostile worker: a process the specs start in place of the real worker,
// which breaks the protocol in one way per case. Each is cut off with an
// error that names the worker and what it did; the caller's memory stays
// bounded; the caller never hangs; a pool of good workers goes on.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { pool, ProtocolError, TransportError, type LogEntry, type Pool } from 'farpipe'
import { collect, rejection, tempDir } from '../helpers.ts'
import * as t from '../fixtures/tasks.ts'
import { findSshd, startSshd } from './sshd.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const hostileWorker = path.join(here, '..', 'fixtures', 'hostile-worker.ts')
const MiB = 1024 * 1024
// The sshd starts before any suite is registered (uvu runs what is registered once the module has loaded).
const sshd = findSshd() ? await startSshd({ alias: 'farpipe-hostile' }) : undefined

/** A pool of one hostile worker in `mode`. */
function hostile(mode: string, options: { startTimeout?: number; onLog?: (e: LogEntry) => void } = {}): Promise<Pool> {
  process.env.FARPIPE_HOSTILE = mode
  return pool({ workers: 1, cacheDir: tempDir(), nodeArgs: ['--import', 'tsx', hostileWorker], ...options })
}

/** Runs `fn` while sampling this process's RSS; resolves with its result and the peak growth in MiB. */
async function peakGrowth<T>(fn: () => Promise<T>): Promise<{ value: T; growthMiB: number }> {
  globalThis.gc?.()
  const base = process.memoryUsage().rss
  let peak = base
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5)
  try {
    const value = await fn()
    peak = Math.max(peak, process.memoryUsage().rss)
    return { value, growthMiB: (peak - base) / MiB }
  } finally {
    clearInterval(timer)
  }
}

/** The error a call on a hostile worker fails with: a TransportError naming the worker, caused by the ProtocolError. */
async function cutOff(mode: string, match: string | RegExp): Promise<TransportError> {
  const p = await hostile(`after-hello:${mode}`.replace('after-hello:', ''))
  try {
    const err = await rejection(p.run(t.add, 1, 2))
    assert.instance(err, TransportError)
    assert.match(err.message, 'worker local/0')
    assert.instance(err.cause, ProtocolError)
    assert.match(err.cause.message, match)
    return err
  } finally {
    await p.close()
  }
}

const start = suite('hostile worker: starting')

start('one stray byte before the hello is refused at once, quoting it', async () => {
  const err = await rejection(hostile('stray-byte'))
  assert.instance(err, TransportError)
  assert.match(err.message, 'did not start with a hello frame')
  assert.match(err.message, 'it sent')
  assert.match(err.message, '"\\n')
})

start("a login script's greeting on stdout is refused, quoting it", async () => {
  const err = await rejection(hostile('greeting'))
  assert.instance(err, TransportError)
  assert.match(err.message, 'Welcome to the host!')
})

start('a worker that never says hello fails pool() after startTimeout, saying it sent nothing', async () => {
  const err = await rejection(hostile('silent', { startTimeout: 500 }))
  assert.instance(err, TransportError)
  assert.match(err.message, 'did not say hello within 500 ms; it sent nothing')
})

start('a worker that stops mid-hello fails after startTimeout, quoting what it sent', async () => {
  // Long enough for the fixture to start under tsx on a busy machine and send its 3 bytes (with 500 ms, it sometimes had not).
  const err = await rejection(hostile('partial-hello', { startTimeout: 5000 }))
  assert.instance(err, TransportError)
  assert.match(err.message, 'did not say hello within 5000 ms; it sent 3 bytes first: "\\u0005\\u0000\\u0000"')
})

start('startTimeout above the longest timer is refused with the limit', async () => {
  const err = await rejection(pool({ startTimeout: 2 ** 31 }))
  assert.instance(err, RangeError)
  assert.match(err.message, 'startTimeout must be at most 2147483647 ms')
})

start.run()

const frames = suite('hostile worker: frames')

// 200 MiB sent against an 8 MiB window (the output), or against the 64 KiB first window of a body nobody reads: all of it would stay queued.
for (const [mode, what] of [['data-without-credit', 'data'], ['nested-flood', 'a nested stream']] as const) {
  frames(`${what} sent beyond the byte credit is cut off, and the caller holds no more than the window`, async () => {
    const p = await hostile(mode)
    try {
      const { value: err, growthMiB } = await peakGrowth(() => rejection(p.run(t.countAsync, 1).result))
      assert.instance(err, TransportError)
      assert.instance(err.cause, ProtocolError)
      assert.match(err.cause.message, 'with no byte credit left')
      assert.ok(growthMiB < 100, `the caller grew by ${growthMiB.toFixed(0)} MiB`)
    } finally {
      await p.close()
    }
  })
}

frames('regression: bodies named by the thousand share the call\'s window: the 4,096 first windows do not add up to 256 MiB', async () => {
  const p = await hostile('nested-many')
  try {
    const { value: err, growthMiB } = await peakGrowth(() => rejection(p.run(t.countAsync, 1).result))
    assert.instance(err, TransportError)
    assert.instance(err.cause, ProtocolError)
    assert.match(err.cause.message, /sent 1 items with credit for 0|with no byte credit left/)
    // Before: every body took its 60 KiB (279 MiB in all) and the call went on.
    assert.ok(growthMiB < 100, `the caller grew by ${growthMiB.toFixed(0)} MiB`)
  } finally {
    await p.close()
  }
})

frames('regression: credit beyond the window the caller announced is cut off, and the caller does not read its source ahead', async () => {
  const p = await hostile('credit-flood')
  try {
    let pulled = 0
    function* chunks() {
      for (let i = 0; i < 300; i++) {
        pulled++
        yield new Uint8Array(MiB)
      }
    }
    const { value: err, growthMiB } = await peakGrowth(() => rejection(p.run(t.sha256, chunks()).result))
    assert.instance(err, TransportError)
    assert.instance(err.cause, ProtocolError)
    assert.match(err.cause.message, 'beyond the window it announced')
    // Before: the caller pulled all 300 MiB of its source into memory, towards a worker that never read it.
    assert.ok(pulled <= 10, `the source was pulled ${pulled} times`)
    assert.ok(growthMiB < 100, `the caller grew by ${growthMiB.toFixed(0)} MiB`)
  } finally {
    await p.close()
  }
})

frames('items sent beyond the item credit are cut off', async () => {
  const p = await hostile('items-without-credit')
  try {
    const err = await rejection(collect(p.run(t.countAsync, 1)))
    assert.instance(err, TransportError)
    assert.match(err.cause.message, 'sender sent 100000 items with credit for 4096')
  } finally {
    await p.close()
  }
})

frames('data on a nested stream that no value named is cut off', async () => {
  await cutOff('nested-unnamed', 'stream 32773 of call 1, which it never named')
})

frames('two items naming the same nested stream are cut off', async () => {
  await cutOff('nested-named-twice', 'named stream 32768 in a value of call 1, which is not a new stream')
})

frames("an item naming a stream in the caller's range is cut off", async () => {
  await cutOff('nested-caller-id', 'named stream 3 in a value of call 1')
})

// Regression: the call was released and marked settled before the payload
// was decoded, so a payload of null left its result and stream unsettled.
frames('an error frame whose payload is null fails the call instead of leaving it hanging', async () => {
  await cutOff('bad-error-null', 'whose payload is not an error report (null)')
})

frames('an error frame whose payload is undefined fails the call', async () => {
  await cutOff('bad-error-undefined', 'whose payload is not an error report (undefined)')
})

frames('an end frame that cannot be decoded fails the call', async () => {
  await cutOff('bad-end', 'unknown flags')
})

frames('a frame of an unknown kind fails the call', async () => {
  await cutOff('unknown-kind', 'unexpected unknown(238) frame')
})

frames('a frame announcing 3 GiB is refused before it is buffered', async () => {
  const { value } = await peakGrowth(() => cutOff('oversize', 'exceeds maxFrameBytes 67108864'))
  assert.ok(value)
})

frames('a frame for a call that was never started is a protocol error', async () => {
  await cutOff('other-call-id', /frame for call \d+, which was never started/)
})

frames('data on a stream the call does not have is a protocol error', async () => {
  await cutOff('wrong-stream', 'sent data on stream 5')
})

frames('a flood of bundle requests is cut off', async () => {
  await cutOff('need-flood', /asked for bundles \d+ times for 1 calls/)
})

frames('a worker that stops mid-frame fails the call with the truncation', async () => {
  const p = await hostile('truncated')
  try {
    const err = await rejection(p.run(t.add, 1, 2))
    assert.instance(err, TransportError)
    assert.match(err.message, 'worker local/0')
  } finally {
    await p.close()
  }
})

frames('64 MiB of one log line without a newline reaches onLog in bounded pieces, tagged with its call', async () => {
  let pieces = 0
  let chars = 0
  let longest = 0
  const callIds = new Set<number>()
  const p = await hostile('log-flood', {
    onLog: (e) => {
      pieces++
      chars += e.line.length
      longest = Math.max(longest, e.line.length)
      callIds.add(e.callId)
    },
  })
  try {
    const { value, growthMiB } = await peakGrowth(async (): Promise<unknown> => p.run(t.add, 1, 2).result)
    assert.is(value, 'flooded')
    assert.is(chars, 1024 * (64 * 1024 - 1))
    assert.ok(longest <= 64 * 1024, `a piece of ${longest} characters`)
    assert.ok(pieces >= 1024)
    assert.equal([...callIds], [1])
    assert.ok(growthMiB < 200, `the caller grew by ${growthMiB.toFixed(0)} MiB`)
  } finally {
    await p.close()
  }
})

frames('a pool of good workers is not disturbed by a hostile one in another pool', async () => {
  const good = await pool({ workers: 1, cacheDir: tempDir() })
  const bad = await hostile('data-without-credit')
  try {
    const both = await Promise.allSettled([bad.run(t.countAsync, 1).result, collect(good.run(t.countAsync, 1000))])
    assert.is(both[0].status, 'rejected')
    assert.is(both[1].status, 'fulfilled')
    assert.is((both[1] as PromiseFulfilledResult<number[]>).value.length, 1000)
  } finally {
    await Promise.all([good.close(), bad.close()])
  }
})

frames.run()

if (sshd) {
  process.env.HOME = sshd.home
  delete process.env.SSH_AUTH_SOCK
  process.on('exit', () => void sshd.stop())
  const overSsh = suite('hostile worker over SSH')
  // The loopback host is this machine: the fake worker runs from this checkout, with tsx by its absolute URL.
  const hostileOverSsh = (mode: string, options: { startTimeout?: number; onLog?: (e: LogEntry) => void } = {}) =>
    pool({
      hosts: [{ host: sshd.alias, env: { FARPIPE_HOSTILE: mode } }],
      workers: 1,
      cacheDir: tempDir(),
      nodeArgs: ['--import', import.meta.resolve('tsx'), hostileWorker],
      ...options,
    })

  overSsh("a login script's greeting is refused, quoting it and naming the host", async () => {
    const err = await rejection(hostileOverSsh('greeting'))
    assert.instance(err, TransportError)
    assert.match(err.message, `worker ${sshd.alias}/0`)
    assert.match(err.message, 'Welcome to the host!')
  })

  overSsh('a worker that never says hello fails after startTimeout', async () => {
    const err = await rejection(hostileOverSsh('silent', { startTimeout: 1000 }))
    assert.instance(err, TransportError)
    assert.match(err.message, 'did not say hello within 1000 ms; it sent nothing')
  })

  overSsh('data beyond the byte credit is cut off, and the caller holds no more than the window', async () => {
    const p = await hostileOverSsh('data-without-credit')
    try {
      const { value: err, growthMiB } = await peakGrowth(() => rejection(p.run(t.countAsync, 1).result))
      assert.instance(err, TransportError)
      assert.instance(err.cause, ProtocolError)
      assert.match(err.cause.message, 'with no byte credit left')
      assert.ok(growthMiB < 100, `the caller grew by ${growthMiB.toFixed(0)} MiB`)
      // The host stays usable: the next pool there works.
    } finally {
      await p.close()
    }
    const good = await pool({ hosts: [sshd.alias], workers: 1, cacheDir: tempDir() })
    try {
      assert.is(await good.run(t.add, 20, 22), 42)
    } finally {
      await good.close()
    }
  })

  overSsh('an error frame whose payload is null fails the call', async () => {
    const p = await hostileOverSsh('bad-error-null')
    try {
      const err = await rejection(p.run(t.add, 1, 2))
      assert.instance(err, TransportError)
      assert.match(err.cause.message, 'whose payload is not an error report (null)')
    } finally {
      await p.close()
    }
  })

  overSsh('a 64 MiB log line without a newline reaches onLog in bounded pieces', async () => {
    let chars = 0
    let longest = 0
    const p = await hostileOverSsh('log-flood', {
      onLog: (e) => {
        if (e.fd !== 1) return
        chars += e.line.length
        longest = Math.max(longest, e.line.length)
      },
    })
    try {
      assert.is(await p.run(t.add, 1, 2), 'flooded')
      assert.is(chars, 1024 * (64 * 1024 - 1))
      assert.ok(longest <= 64 * 1024)
    } finally {
      await p.close()
    }
  })

  overSsh.run()
}
