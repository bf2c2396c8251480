// Faults and hostile peers: each fault of DESIGN.md §3 provoked for real, N
// times, on the local pool and over SSH where it applies — a worker killed
// mid-output and mid-input, a worker stopped (SIGSTOP), a remote stuck
// between yields, an sshd session stopped, the TCP connection cut or
// stalled, and a worker that breaks the protocol (floods data without
// credit, floods one log line, says something before its hello, says
// nothing). For each: the time from the fault to the call's error and its
// class, the bound it is held to, and whether the pool then served the next
// call. The specs check the same behaviours without timing them; the bounds
// are measured here.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createConnection, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { CancelError, LocalTransport, pool, ProtocolError, TimeoutError, TransportError, type HostOptions, type LogEntry, type Pool, type PoolOptions } from 'farpipe'
import { localPool, sshd, sshPool } from './context.ts'
import { median, resetPeak, rssOf, type Section } from './lib.ts'
import * as b from './tasks.ts'

/** How many times each fault is provoked on each target. */
const RUNS = Number(process.env.FARPIPE_BENCH_FAULTS_RUNS ?? 5)
/** Which targets to run: `local`, `ssh` or both. */
const TARGETS = (process.env.FARPIPE_BENCH_FAULTS_TARGETS ?? 'local,ssh').split(',').map((s) => s.trim())
/** Only the faults whose name contains this (for development runs). */
const ONLY = process.env.FARPIPE_BENCH_FAULTS_ONLY

/** The timers the faults are held to. */
const IDLE_MS = 500
const GRACE_MS = 500
const KEEPALIVE = { keepaliveInterval: 200, keepaliveCountMax: 2 }
const KEEPALIVE_BOUND_MS = KEEPALIVE.keepaliveInterval * (KEEPALIVE.keepaliveCountMax + 1)
const START_TIMEOUT_MS = 1000
/** What "promptly" is taken to mean for a fault that needs no timer to be noticed (a process death, a reset connection): on loopback, a generous reading. */
const PROMPT_MS = 250
/** Timer-based bounds are held with this slack for the event loop and the machine's load (the brief's "+ 25 %"). */
const SLACK = 1.25
/** lib/session.ts: a retired worker is ended, then killed if it has not exited after this long. README gives no figure. */
const RETIRE_KILL_MS = 1000
/** The stream windows a hostile peer meets: the byte window and the largest frame that may be buffered before it is judged. */
const WINDOW_MIB = 8
const MAX_FRAME_MIB = 64
/** How long a run may take before it is reported as hung, and how long the next call has to be served. */
const TRIAL_DEADLINE_MS = 30_000
const RECOVERY_DEADLINE_MS = 5000

const here = path.dirname(fileURLToPath(import.meta.url))
const hostileWorker = path.join(here, '..', 'spec', 'fixtures', 'hostile-worker.ts')
// An absolute URL: SSH workers start in the remote HOME, where a bare `tsx` would not resolve.
const tsxLoader = import.meta.resolve('tsx')
const MiB = 1048576

type Target = 'local' | 'ssh'
type Settled<T> = ({ ok: true; value: T } | { ok: false; error: unknown }) & { at: number }

/** Settles with the outcome and the moment it arrived (a handler attached at once, so the moment is exact). */
const timed = <T>(x: PromiseLike<T>): Promise<Settled<T>> =>
  Promise.resolve(x).then(
    (value) => ({ ok: true as const, value, at: performance.now() }),
    (error: unknown) => ({ ok: false as const, error, at: performance.now() }),
  )

async function deadline<T>(work: Promise<T>, ms: number): Promise<{ done: true; value: T } | { done: false }> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<{ done: false }>((r) => (timer = setTimeout(() => r({ done: false }), ms)))
  try {
    return await Promise.race([work.then((value) => ({ done: true as const, value })), late])
  } finally {
    clearTimeout(timer)
  }
}

/** Polls (every 5 ms) until `check` holds; returns the moment it did, or NaN after `ms`. */
async function until(check: () => boolean, ms: number): Promise<number> {
  const end = performance.now() + ms
  for (;;) {
    if (check()) return performance.now()
    if (performance.now() > end) return NaN
    await sleep(5)
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}${e.cause instanceof Error ? ` (cause ${e.cause.name}: ${e.cause.message})` : ''}`
  return `${typeof e} ${String(e)}`
}

/** The error's class, with its cause's when it has one: `TransportError ← ProtocolError`. */
const className = (e: unknown): string =>
  e === undefined ? 'none' : e instanceof Error ? `${e.name}${e.cause instanceof Error ? ` ← ${e.cause.name}` : ''}` : typeof e

// -- processes --------------------------------------------------------------------

/** Whether `pid` runs (a zombie counts as gone). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {}
}

/** Live processes whose command line contains `text` (the SSH workers run on this machine too). */
function processesWith(text: string): number[] {
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(text) && running(Number(name))) out.push(Number(name))
    } catch {}
  }
  return out
}

/** Bytes a process has written so far (/proc/<pid>/io wchar), or undefined once it is gone. */
function written(pid: number): number | undefined {
  try {
    return Number(/^wchar:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1])
  } catch {
    return undefined
  }
}

/** Runs `work` while sampling this process's RSS every 5 ms (and its kernel peak, where it can be reset); returns the peak growth in MiB. */
async function peakGrowth<T>(work: () => Promise<T>, sample?: () => void): Promise<{ value: T; growthMiB: number }> {
  global.gc?.()
  await sleep(0)
  global.gc?.()
  const base = process.memoryUsage.rss()
  const kernelPeak = resetPeak(process.pid)
  let peak = base
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss())
    sample?.()
  }, 5)
  try {
    const value = await work()
    peak = Math.max(peak, process.memoryUsage.rss(), kernelPeak ? rssOf(process.pid).peak : 0)
    return { value, growthMiB: (peak - base) / MiB }
  } finally {
    clearInterval(timer)
  }
}

// -- a TCP proxy to the sshd ---------------------------------------------------------

/** A TCP proxy to the sshd that can cut the connections it carries, or stall them (stop forwarding, as a dead link does); new connections go through. */
async function proxy(port: number): Promise<{ port: number; cut(): void; stall(): void; dropStalled(): void; close(): Promise<void> }> {
  const pairs = new Set<{ a: Socket; b: Socket; stalled: boolean }>()
  const server = createServer((client) => {
    const pair = { a: client, b: createConnection(port, '127.0.0.1'), stalled: false }
    pairs.add(pair)
    pair.a.on('data', (d) => void (pair.stalled || pair.b.write(d)))
    pair.b.on('data', (d) => void (pair.stalled || pair.a.write(d)))
    const end = () => {
      pairs.delete(pair)
      pair.a.destroy()
      pair.b.destroy()
    }
    for (const s of [pair.a, pair.b]) s.on('close', end).on('error', end)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as { port: number }).port,
    cut: () => {
      for (const p of pairs) {
        p.a.resetAndDestroy()
        p.b.resetAndDestroy()
      }
    },
    stall: () => {
      for (const p of pairs) p.stalled = true
    },
    dropStalled: () => {
      for (const p of pairs) if (p.stalled) p.a.destroy(), p.b.destroy()
    },
    close: async () => {
      for (const p of pairs) p.a.destroy(), p.b.destroy()
      await new Promise((r) => server.close(r))
    },
  }
}

// -- what a run measures ---------------------------------------------------------

/** One run of one fault. */
interface Trial {
  /** What the call (or pool()) failed with; undefined when it settled without one. */
  error: unknown
  /** Milliseconds from the fault to the error (or to the result, when there is none). */
  ms: number
  /** Secondary figures, by the names of the case's `figures`. */
  figures: Record<string, number>
  /** Whether the next call was served, and how long after the error it took. */
  served: boolean
  recoveryMs: number
  problems: string[]
}

/** A secondary figure of a case, with the bound it is held to, if any. */
interface Figure {
  name: string
  unit: 'ms' | 'MiB' | 'KiB'
  bound?: { text: string; max: number }
}

interface Case<F> {
  fault: string
  targets: Target[]
  /** The error the call must fail with, every time. */
  expected: { text: string; test(e: unknown): boolean }
  /** The bound on the time to error; undefined when the time is only reported. */
  bound: { text: string; max: number } | undefined
  figures?: Figure[]
  open(target: Target): Promise<F>
  trial(f: F, at: (stage: string) => void): Promise<Trial>
  close(f: F): Promise<void>
}

const defineCase = <F>(c: Case<F>): Case<unknown> => c as Case<unknown>

const trial = (error: unknown, ms: number): Trial => ({ error, ms, figures: {}, served: false, recoveryMs: NaN, problems: [] })

/** Makes the next call on `p` (made `from` the error) and records whether it was served and when; `check` says whether its value is right. */
async function next(t: Trial, p: Pool, from: number, check: (v: unknown) => boolean = (v) => v === 5, call: () => PromiseLike<unknown> = () => p.run(b.add, 2, 3)): Promise<void> {
  const r = await deadline(timed(call()), RECOVERY_DEADLINE_MS)
  if (!r.done) return void t.problems.push(`the next call was not served within ${RECOVERY_DEADLINE_MS / 1000} s`)
  if (!r.value.ok) return void t.problems.push(`the next call failed: ${describe(r.value.error)}`)
  if (!check(r.value.value)) return void t.problems.push(`the next call gave ${JSON.stringify(r.value.value)}`)
  t.served = true
  t.recoveryMs = r.value.at - from
}

/** Reads the rest of a call's stream: a stream that ends normally after its call failed is a problem. */
async function rest(t: Trial, it: AsyncIterator<unknown>): Promise<void> {
  try {
    for (let r = await it.next(); !r.done; r = await it.next());
    t.problems.push('the stream ended normally although the call failed')
  } catch {}
}

// -- pools --------------------------------------------------------------------------

/** A pool of one worker on the target, its log kept (not printed). */
interface Fixture {
  p: Pool
  logs: string[]
  dir: string
}

async function openPool(target: Target, options: PoolOptions = {}, host: Partial<HostOptions> = {}): Promise<Fixture> {
  const logs: string[] = []
  const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-faults-'))
  const where = target === 'ssh' ? { hosts: [{ host: (await sshd()).alias, ...host }] } : {}
  const p = await pool({ workers: 1, cacheDir: path.join(dir, 'cache'), onLog: (e: LogEntry) => void logs.push(e.line), ...where, ...options })
  await p.run(b.add, 1, 1)
  return { p, logs, dir }
}

async function closePool(f: Fixture): Promise<void> {
  const r = await deadline(f.p.close(), 15_000)
  rmSync(f.dir, { recursive: true, force: true })
  if (!r.done) throw new Error('close() of the pool did not finish within 15 s')
}

const both: Target[] = ['local', 'ssh']
const promptly = { text: `promptly (≤ ${PROMPT_MS} ms)`, max: PROMPT_MS }
const isTransport = { text: 'TransportError', test: (e: unknown) => e instanceof TransportError }
/** How long a retired worker has to answer a ping before it is destroyed (lib/session.ts). */
const RETIRED_PING_MS = 2000
/** A call sent to a stopped worker before it was retired fails once its ping goes unanswered: the grace, then the ping's wait. */
const duringGraceBound = { text: `≤ (cancelGrace + ping ${RETIRED_PING_MS} ms) × ${SLACK}`, max: (GRACE_MS + RETIRED_PING_MS) * SLACK }
const goneBound = { text: `≤ (cancelGrace + ${RETIRE_KILL_MS} ms) × ${SLACK}`, max: (GRACE_MS + RETIRE_KILL_MS) * SLACK }

// -- 1, 2: a worker killed ------------------------------------------------------------

const killedMidOutput = defineCase<Fixture>({
  fault: '1. worker SIGKILL mid-output',
  targets: both,
  expected: isTransport,
  bound: promptly,
  open: (target) => openPool(target),
  close: closePool,
  async trial({ p }, at) {
    const pid = await p.run(b.pid)
    const call = p.run(b.slowItems, 1e9, 5)
    const it = call[Symbol.asyncIterator]()
    at('awaiting the first item')
    await it.next()
    const result = timed(call.result)
    const t0 = performance.now()
    process.kill(pid, 'SIGKILL')
    at('awaiting the error')
    const r = await result
    const t = trial(r.ok ? undefined : r.error, r.at - t0)
    at('reading the rest of the stream')
    await rest(t, it)
    at('awaiting the next call')
    await next(t, p, r.at)
    return t
  },
})

const killedMidInput = defineCase<Fixture>({
  fault: '2. worker SIGKILL mid-input (ReadableStream source)',
  targets: both,
  expected: isTransport,
  bound: promptly,
  figures: [{ name: 'source cancelled', unit: 'ms', bound: promptly }],
  open: (target) => openPool(target),
  close: closePool,
  async trial({ p }, at) {
    const pid = await p.run(b.pid)
    let pulled = 0
    let cancelledAt = NaN
    const source = new ReadableStream<number>({
      pull: async (c) => {
        await sleep(1)
        c.enqueue(pulled++)
      },
      cancel: () => void (cancelledAt = performance.now()),
    })
    const result = timed(p.run(b.count, source).result)
    at('awaiting the input to flow')
    await until(() => pulled > 20, 10_000)
    const t0 = performance.now()
    process.kill(pid, 'SIGKILL')
    at('awaiting the error')
    const r = await result
    const t = trial(r.ok ? undefined : r.error, r.at - t0)
    at('awaiting the source to be cancelled')
    await until(() => !Number.isNaN(cancelledAt), 10_000)
    if (Number.isNaN(cancelledAt)) t.problems.push('the source was not cancelled within 10 s of the kill')
    t.figures['source cancelled'] = cancelledAt - t0
    at('awaiting the next call')
    await next(t, p, r.at)
    return t
  },
})

// -- 3: a worker stopped ------------------------------------------------------------------

/**
 * A stopped worker: the call's idleTimeout fails it, and the timeout's own
 * cancel, unconfirmed after cancelGrace, retires the worker. The next call
 * is made at once after the error (3a), or after `await call.cancel()`,
 * which returns once the grace is over (3b). In 3a that call still goes to
 * the stopped worker (it is not retired yet): it must fail with a
 * TransportError once the retired worker does not answer a ping, and the
 * call after it is served by a fresh worker.
 */
const stoppedWorker = (cancelFirst: boolean) =>
  defineCase<Fixture>({
    fault: `3${cancelFirst ? 'b' : 'a'}. worker SIGSTOP, idleTimeout ${IDLE_MS}, cancelGrace ${GRACE_MS}; next call ${cancelFirst ? 'after `await call.cancel()`' : 'at once'}`,
    targets: both,
    expected: { text: 'TimeoutError', test: (e) => e instanceof TimeoutError },
    bound: { text: `≈ idleTimeout: ≤ ${IDLE_MS} × ${SLACK}`, max: IDLE_MS * SLACK },
    figures: [
      ...(cancelFirst ? [] : [{ name: 'call sent in the grace failed (from the error)', unit: 'ms' as const, bound: duringGraceBound }]),
      { name: 'stopped worker gone (from the error)', unit: 'ms', bound: cancelFirst ? goneBound : duringGraceBound },
      ...(cancelFirst ? [{ name: 'cancel() returned (from the error)', unit: 'ms' as const, bound: { text: `≤ cancelGrace × ${SLACK}`, max: GRACE_MS * SLACK } }] : []),
    ],
    open: (target) => openPool(target, { defaults: { cancelGrace: GRACE_MS } }),
    close: closePool,
    async trial({ p, logs }, at) {
      const pid = await p.run(b.pid)
      const call = p.with({ idleTimeout: IDLE_MS }).run(b.slowItems, 1e9, 5)
      const it = call[Symbol.asyncIterator]()
      at('awaiting the first item')
      await it.next()
      const result = timed(call.result)
      const logsBefore = logs.length
      const t0 = performance.now()
      process.kill(pid, 'SIGSTOP')
      try {
        at('awaiting the error')
        const r = await result
        const t = trial(r.ok ? undefined : r.error, r.at - t0)
        // The timeout cancels the call by itself; cancel() only waits for that cancel to be confirmed or given up on.
        const gone = until(() => !running(pid), RECOVERY_DEADLINE_MS)
        if (cancelFirst) {
          at('awaiting cancel()')
          const c = await timed(call.cancel())
          t.figures['cancel() returned (from the error)'] = c.at - r.at
          if (!c.ok) t.problems.push(`cancel() threw ${describe(c.error)}`)
        }
        if (!cancelFirst) {
          at('awaiting the call sent during the grace')
          const during = await deadline(timed(p.run(b.pid)), RECOVERY_DEADLINE_MS)
          if (!during.done) t.problems.push(`the call sent during the grace did not settle within ${RECOVERY_DEADLINE_MS / 1000} s`)
          else if (!during.value.ok && !(during.value.error instanceof TransportError)) t.problems.push(`the call sent during the grace failed with ${describe(during.value.error)}`)
          else if (!during.value.ok) t.figures['call sent in the grace failed (from the error)'] = during.value.at - r.at
        }
        at('awaiting the next call')
        await next(t, p, r.at, (v) => typeof v === 'number' && v !== pid, () => p.run(b.pid))
        at('awaiting the stopped worker to be gone')
        const goneAt = await gone
        if (Number.isNaN(goneAt)) t.problems.push(`the stopped worker ${pid} was still there ${RECOVERY_DEADLINE_MS / 1000} s after the error`)
        t.figures['stopped worker gone (from the error)'] = goneAt - r.at
        if (!logs.slice(logsBefore).some((l) => l.includes(`did not confirm its cancellation within ${GRACE_MS} ms`))) t.problems.push('no log line said the worker was replaced')
        at('reading the rest of the stream')
        await rest(t, it)
        return t
      } finally {
        kill(pid, 'SIGKILL')
      }
    },
  })

// -- 4: a remote stuck between yields -----------------------------------------------------

const stuckRemote = defineCase<Fixture>({
  fault: `4. remote stuck between yields: break, cancelGrace ${GRACE_MS}`,
  targets: both,
  expected: { text: 'break returns; result CancelError', test: (e) => e instanceof CancelError },
  bound: { text: `≈ cancelGrace: ≤ ${GRACE_MS} × ${SLACK}`, max: GRACE_MS * SLACK },
  figures: [{ name: 'stuck worker gone (from the break)', unit: 'ms', bound: goneBound }],
  open: (target) => openPool(target, { defaults: { cancelGrace: GRACE_MS } }),
  close: closePool,
  async trial({ p, dir }, at) {
    const pid = await p.run(b.pid)
    const marker = path.join(dir, `stuck-${performance.now()}`)
    const call = p.run(b.stuckAfterOne, marker)
    const result = timed(call.result)
    const it = call[Symbol.asyncIterator]()
    at('awaiting the first item')
    await it.next()
    at('awaiting the remote to be stuck')
    await until(() => existsSync(marker), 10_000)
    const t0 = performance.now()
    at('awaiting break (return())')
    const returned = await timed(it.return!())
    try {
      const r = await result
      const t = trial(r.ok ? undefined : r.error, returned.at - t0)
      if (!returned.ok) t.problems.push(`break threw ${describe(returned.error)}`)
      const gone = until(() => !running(pid), RECOVERY_DEADLINE_MS)
      at('awaiting the next call')
      await next(t, p, returned.at, (v) => typeof v === 'number' && v !== pid, () => p.run(b.pid))
      at('awaiting the stuck worker to be gone')
      const goneAt = await gone
      if (Number.isNaN(goneAt)) t.problems.push(`the stuck worker ${pid} was still there ${RECOVERY_DEADLINE_MS / 1000} s after the break`)
      t.figures['stuck worker gone (from the break)'] = goneAt - t0
      return t
    } finally {
      kill(pid, 'SIGKILL')
    }
  },
})

// -- 5, 6: the SSH connection -----------------------------------------------------------

/** Session processes of the sshd that are not among `before` (those of other pools). */
const newSessions = async (before: Set<number>) => (await sshd()).sessionPids().filter((pid) => !before.has(pid))

interface SessionFixture extends Fixture {
  others: Set<number>
}

const stoppedSession = defineCase<SessionFixture>({
  fault: `5. sshd session SIGSTOP, keepalive ${KEEPALIVE.keepaliveInterval} × ${KEEPALIVE.keepaliveCountMax}`,
  targets: ['ssh'],
  expected: isTransport,
  bound: { text: `interval × (count + 1) = ${KEEPALIVE_BOUND_MS} ms`, max: KEEPALIVE_BOUND_MS },
  async open() {
    const others = new Set((await sshd()).sessionPids())
    return { ...(await openPool('ssh', {}, KEEPALIVE)), others }
  },
  close: closePool,
  async trial({ p, others }, at) {
    const call = p.run(b.slowItems, 1e9, 5)
    const it = call[Symbol.asyncIterator]()
    at('awaiting the first item')
    await it.next()
    const mine = await newSessions(others)
    const result = timed(call.result)
    const t0 = performance.now()
    for (const pid of mine) kill(pid, 'SIGSTOP')
    try {
      at('awaiting the error')
      const r = await result
      const t = trial(r.ok ? undefined : r.error, r.at - t0)
      if (mine.length === 0) t.problems.push('no sshd session process of this pool was found to stop')
      at('awaiting the next call')
      await next(t, p, r.at)
      return t
    } finally {
      for (const pid of mine) kill(pid, 'SIGKILL')
    }
  },
})

interface ProxyFixture extends Fixture {
  px: Awaited<ReturnType<typeof proxy>>
}

async function viaProxy(more: Partial<HostOptions>): Promise<ProxyFixture> {
  const s = await sshd()
  const px = await proxy(s.port)
  // The proxy's port is not in known_hosts; the key is the harness's own sshd.
  const host = { host: '127.0.0.1', port: px.port, user: s.user, identityFile: s.clientKey, knownHosts: 'off' as const, ...more }
  const logs: string[] = []
  const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-faults-'))
  const p = await pool({ hosts: [host], workers: 1, cacheDir: path.join(dir, 'cache'), onLog: (e) => void logs.push(e.line) })
  await p.run(b.add, 1, 1)
  return { p, logs, dir, px }
}

async function proxyTrial(f: ProxyFixture, fault: 'cut' | 'stall', at: (s: string) => void): Promise<Trial> {
  const call = f.p.run(b.slowItems, 1e9, 5)
  const it = call[Symbol.asyncIterator]()
  at('awaiting the first item')
  await it.next()
  const result = timed(call.result)
  const t0 = performance.now()
  f.px[fault]()
  at('awaiting the error')
  const r = await result
  f.px.dropStalled()
  const t = trial(r.ok ? undefined : r.error, r.at - t0)
  at('awaiting the next call')
  await next(t, f.p, r.at)
  return t
}

const cutConnection = defineCase<ProxyFixture>({
  fault: '6a. TCP connection cut (reset), default keepalive',
  targets: ['ssh'],
  expected: isTransport,
  bound: promptly,
  open: () => viaProxy({}),
  close: async (f) => {
    await closePool(f)
    await f.px.close()
  },
  trial: (f, at) => proxyTrial(f, 'cut', at),
})

const stalledConnection = defineCase<ProxyFixture>({
  fault: `6b. TCP connection stalled, keepalive ${KEEPALIVE.keepaliveInterval} × ${KEEPALIVE.keepaliveCountMax}`,
  targets: ['ssh'],
  expected: isTransport,
  bound: { text: `interval × (count + 1) = ${KEEPALIVE_BOUND_MS} ms`, max: KEEPALIVE_BOUND_MS },
  open: () => viaProxy(KEEPALIVE),
  close: async (f) => {
    await closePool(f)
    await f.px.close()
  },
  trial: (f, at) => proxyTrial(f, 'stall', at),
})

// -- 7: hostile workers ------------------------------------------------------------------

/** A pool of one hostile worker in `mode` (FARPIPE_HOSTILE), started by node with the fixture in front of the real worker. */
async function hostile(target: Target, mode: string, dir: string, options: PoolOptions = {}): Promise<Pool> {
  const nodeArgs = ['--import', tsxLoader, hostileWorker]
  const cacheDir = path.join(dir, 'cache')
  if (target === 'local') return pool({ transports: [new LocalTransport({ workers: 1, nodeArgs, env: { FARPIPE_HOSTILE: mode } })], cacheDir, ...options })
  return pool({ hosts: [{ host: (await sshd()).alias, env: { FARPIPE_HOSTILE: mode } }], workers: 1, nodeArgs, cacheDir, ...options })
}

/** A pool of good workers on the same target (the bench's shared one): it must go on serving while, and after, a hostile one is cut off. */
interface HostileFixture {
  target: Target
  good: Pool
  dir: string
}

const hostileFixture = async (target: Target): Promise<HostileFixture> => ({
  target,
  good: target === 'local' ? await localPool() : await sshPool(),
  dir: mkdtempSync(path.join(tmpdir(), 'farpipe-hostile-')),
})
const hostileClose = async (f: HostileFixture) => rmSync(f.dir, { recursive: true, force: true })

/** A call of 1000 items on the good pool, made while the hostile one misbehaves: served if all came, in the time from `from`. */
async function goodCall(t: Trial, good: Pool, from: number): Promise<void> {
  const r = await deadline(
    timed(
      (async () => {
        let n = 0
        for await (const _ of good.run(b.numbers, 1000)) n++
        return n
      })(),
    ),
    RECOVERY_DEADLINE_MS,
  )
  if (!r.done) return void t.problems.push(`the good pool's call was not served within ${RECOVERY_DEADLINE_MS / 1000} s`)
  if (!r.value.ok || r.value.value !== 1000) return void t.problems.push(`the good pool's call gave ${r.value.ok ? `${r.value.value} items` : describe(r.value.error)}`)
  t.served = true
  t.recoveryMs = r.value.at - from
}

/** Kills hostile workers left behind (they are not this bench's to keep), reporting them. */
async function leftBehind(t: Trial, before: Set<number>): Promise<void> {
  const end = performance.now() + 5000
  let left = processesWith(hostileWorker).filter((pid) => !before.has(pid))
  while (left.length > 0 && performance.now() < end) {
    await sleep(20)
    left = left.filter(running)
  }
  if (left.length > 0) t.problems.push(`hostile worker process ${left.join(', ')} still ran 5 s after its pool gave up on it (killed)`)
  for (const pid of left) kill(pid, 'SIGKILL')
}

const dataFlood = defineCase<HostileFixture>({
  fault: `7a. hostile: data flood without credit (200 MiB against a ${WINDOW_MIB} MiB window)`,
  targets: both,
  expected: { text: 'TransportError ← ProtocolError', test: (e) => e instanceof TransportError && e.cause instanceof ProtocolError && /no byte credit/.test(e.cause.message) },
  bound: promptly,
  figures: [
    { name: 'caller RSS peak growth', unit: 'MiB', bound: { text: `≤ window + maxFrameBytes = ${WINDOW_MIB + MAX_FRAME_MIB} MiB`, max: WINDOW_MIB + MAX_FRAME_MIB } },
    { name: 'sent before the cut (worker wchar)', unit: 'MiB' },
  ],
  open: hostileFixture,
  close: hostileClose,
  async trial({ target, good, dir }, at) {
    const before = new Set(processesWith(hostileWorker))
    at('starting the hostile pool')
    const p = await hostile(target, 'data-without-credit', dir)
    let kept: Trial | undefined
    try {
      const [worker] = processesWith(hostileWorker).filter((pid) => !before.has(pid))
      let sent = 0
      const served = trial(undefined, 0)
      const t0 = performance.now()
      const good1 = goodCall(served, good, t0)
      at('awaiting the cut')
      const { value: r, growthMiB } = await peakGrowth(
        () => timed(p.run(b.one).result),
        () => void (sent = Math.max(sent, (worker && written(worker)) ?? 0)),
      )
      const t = (kept = trial(r.ok ? undefined : r.error, r.at - t0))
      t.figures['caller RSS peak growth'] = growthMiB
      t.figures['sent before the cut (worker wchar)'] = worker ? sent / MiB : NaN
      at("awaiting the good pool's call")
      await good1
      Object.assign(t, { served: served.served, recoveryMs: served.recoveryMs })
      t.problems.push(...served.problems)
      return t
    } finally {
      await p.close()
      // The run's own trial, so that a worker left behind is reported with it.
      await leftBehind(kept ?? trial(undefined, 0), before)
    }
  },
})

const LOG_LINE_CHARS = 1024 * (64 * 1024 - 1)
const logFlood = defineCase<HostileFixture>({
  fault: '7b. hostile: log flood, one 64 MiB line',
  targets: both,
  expected: { text: "none: resolves 'flooded'", test: (e) => e === undefined },
  bound: undefined,
  figures: [
    { name: 'caller RSS peak growth', unit: 'MiB', bound: { text: '< 64 MiB (the line)', max: 64 } },
    { name: 'longest piece', unit: 'KiB', bound: { text: '≤ 64 KiB', max: 64 } },
  ],
  open: hostileFixture,
  close: hostileClose,
  async trial({ target, good, dir }, at) {
    const before = new Set(processesWith(hostileWorker))
    let chars = 0
    let longest = 0
    let pieces = 0
    at('starting the hostile pool')
    const p = await hostile(target, 'log-flood', dir, {
      onLog: (e) => {
        pieces++
        chars += e.line.length
        longest = Math.max(longest, e.line.length)
      },
    })
    let kept: Trial | undefined
    try {
      const served = trial(undefined, 0)
      const t0 = performance.now()
      const good1 = goodCall(served, good, t0)
      at('awaiting the result')
      const { value: r, growthMiB } = await peakGrowth(() => timed(p.run(b.one).result))
      const t = (kept = trial(r.ok ? undefined : r.error, r.at - t0))
      if (r.ok && (r.value as unknown) !== 'flooded') t.problems.push(`the result was ${JSON.stringify(r.value)}`)
      if (chars !== LOG_LINE_CHARS) t.problems.push(`onLog got ${chars} characters in ${pieces} pieces, ${LOG_LINE_CHARS} sent`)
      t.figures['caller RSS peak growth'] = growthMiB
      t.figures['longest piece'] = longest / 1024
      at("awaiting the good pool's call")
      await good1
      Object.assign(t, { served: served.served, recoveryMs: served.recoveryMs })
      t.problems.push(...served.problems)
      return t
    } finally {
      await p.close()
      // The run's own trial, so that a worker left behind is reported with it.
      await leftBehind(kept ?? trial(undefined, 0), before)
    }
  },
})

/** pool() with a worker that fails its start: the time from the worker process's start (first seen in /proc, every 5 ms) to pool()'s rejection. */
function startFault(mode: 'stray-byte' | 'silent', fault: string, message: string, bound: { text: string; max: number }): Case<unknown> {
  return defineCase<HostileFixture>({
    fault,
    targets: both,
    expected: { text: 'TransportError', test: (e) => e instanceof TransportError && e.message.includes(message) },
    bound,
    figures: [{ name: 'from the pool() call', unit: 'ms' }],
    open: hostileFixture,
    close: hostileClose,
    async trial({ target, good, dir }, at) {
      const before = new Set(processesWith(hostileWorker))
      const t0 = performance.now()
      let seen = NaN
      const watch = setInterval(() => {
        if (Number.isNaN(seen) && processesWith(hostileWorker).some((pid) => !before.has(pid))) seen = performance.now()
      }, 5)
      at('awaiting pool()')
      const r = await timed(hostile(target, mode, dir, { startTimeout: START_TIMEOUT_MS }))
      clearInterval(watch)
      const t = trial(r.ok ? undefined : r.error, r.at - (Number.isNaN(seen) ? t0 : seen))
      if (Number.isNaN(seen)) t.problems.push('the hostile worker process was not seen start (time taken from the pool() call)')
      t.figures['from the pool() call'] = r.at - t0
      if (r.ok) await r.value.close()
      at("awaiting the good pool's call")
      await goodCall(t, good, r.at)
      await leftBehind(t, before)
      return t
    },
  })
}

const strayByte = startFault('stray-byte', '7c. hostile: stray byte before hello', 'did not start with a hello frame', {
  text: `< startTimeout ${START_TIMEOUT_MS} ms (refused at the byte, not at the timeout)`,
  max: START_TIMEOUT_MS,
})
const silent = startFault('silent', `7d. hostile: never says hello, startTimeout ${START_TIMEOUT_MS}`, `did not say hello within ${START_TIMEOUT_MS} ms`, {
  text: `≈ startTimeout: ≤ ${START_TIMEOUT_MS} × ${SLACK}`,
  max: START_TIMEOUT_MS * SLACK,
})

const cases: Case<unknown>[] = [
  killedMidOutput,
  killedMidInput,
  stoppedWorker(false),
  stoppedWorker(true),
  stuckRemote,
  stoppedSession,
  cutConnection,
  stalledConnection,
  dataFlood,
  logFlood,
  strayByte,
  silent,
]

// -- running and reporting ---------------------------------------------------------------

interface Outcome {
  trials: Trial[]
  /** Runs that did not finish within the deadline, with where they were. */
  hung: string[]
  /** What went wrong closing the case's pool, if anything. */
  closing?: string
}

async function runCase(c: Case<unknown>, t: Target): Promise<Outcome> {
  const out: Outcome = { trials: [], hung: [] }
  let f = await c.open(t)
  for (let i = 0; i < RUNS; i++) {
    let stage = 'starting'
    const r = await deadline(
      c.trial(f, (s) => (stage = s)).catch((e: unknown) => {
        const x = trial(undefined, NaN)
        x.problems.push(`the run threw ${describe(e)} (at: ${stage})`)
        return x
      }),
      TRIAL_DEADLINE_MS,
    )
    if (r.done) {
      out.trials.push(r.value)
      continue
    }
    out.hung.push(`run ${i + 1} hung ${TRIAL_DEADLINE_MS / 1000} s while ${stage}`)
    // The hung call may hold the pool: go on with a fresh one.
    await deadline(c.close(f).catch(() => {}), 20_000)
    f = await c.open(t)
  }
  const closed = await deadline(c.close(f).then((): string | undefined => undefined, (e: unknown) => describe(e)), 20_000)
  if (!closed.done || closed.value) out.closing = closed.done ? `closing the pool failed: ${closed.value}` : 'closing the pool took more than 20 s'
  return out
}

const fmtMs = (x: number) => (Number.isNaN(x) ? '?' : x >= 100 ? x.toFixed(0) : x.toFixed(1))
const fmt = (x: number, unit: string) => `${unit === 'ms' ? fmtMs(x) : Number.isNaN(x) ? '?' : x.toFixed(1)} ${unit}`
const finite = (xs: number[]) => xs.filter((x) => !Number.isNaN(x))
/** `median (max) unit` over the runs that have the figure. */
function medMax(xs: number[], unit: string): string {
  const v = finite(xs)
  return v.length === 0 ? '—' : `${fmt(median(v), unit)} (${fmt(Math.max(...v), unit)})`
}
/** Held when every run has the figure and the largest is within the bound. */
const holds = (xs: number[], max: number) => xs.length > 0 && finite(xs).length === xs.length && Math.max(...xs) <= max

export async function run(): Promise<Section> {
  const rows: string[][] = []
  const problems: string[] = []
  const started = performance.now()
  for (const t of TARGETS as Target[]) {
    if (t !== 'local' && t !== 'ssh') throw new Error(`FARPIPE_BENCH_FAULTS_TARGETS: unknown target ${t}; use local, ssh or both`)
  }
  for (const c of cases) {
    if (ONLY && !c.fault.includes(ONLY)) continue
    for (const t of c.targets.filter((x) => TARGETS.includes(x))) {
      const label = t === 'local' ? 'local' : 'SSH'
      console.log(`  ${label}: ${c.fault}`)
      let o: Outcome
      try {
        o = await runCase(c, t)
      } catch (e) {
        rows.push([c.fault, label, `0 / ${RUNS}`, 'not run', '', c.bound?.text ?? '—', '✗', '', `could not start: ${describe(e)}`])
        problems.push(`- ${c.fault}, ${label}: could not start: ${describe(e)}`)
        continue
      }
      const ts = o.trials
      const tried = ts.length + o.hung.length
      const classes = new Map<string, number>()
      for (const x of ts) classes.set(className(x.error), (classes.get(className(x.error)) ?? 0) + 1)
      const asExpected = o.hung.length === 0 && ts.every((x) => c.expected.test(x.error))
      const errorCell = `${[...classes].map(([k, n]) => (classes.size > 1 ? `${k} ×${n}` : k)).join(', ')}${o.hung.length ? `, hung ×${o.hung.length}` : ''} ${asExpected ? '✓' : '✗'}`
      const times = ts.map((x) => x.ms)
      const figureHeld = (c.figures ?? []).every((fig) => !fig.bound || holds(ts.map((x) => x.figures[fig.name] ?? NaN), fig.bound.max))
      const held = asExpected && figureHeld && (!c.bound || holds(times, c.bound.max))
      const bounds = [c.bound?.text ?? '—', ...(c.figures ?? []).filter((fig) => fig.bound).map((fig) => `${fig.name} ${fig.bound!.text}`)]
      const served = ts.filter((x) => x.served)
      const notes = (c.figures ?? []).map((fig) => `${fig.name} ${medMax(ts.map((x) => x.figures[fig.name] ?? NaN), fig.unit)}`)
      const issues = [...o.hung, ...(o.closing ? [o.closing] : []), ...ts.flatMap((x, i) => [...(c.expected.test(x.error) ? [] : [`run ${i + 1}: ${describe(x.error)}`]), ...x.problems.map((p) => `run ${i + 1}: ${p}`)])]
      if (issues.length) notes.push(`${issues.length} unexpected (below)`)
      rows.push([
        c.fault,
        label,
        `${served.length} / ${tried}`,
        `${errorCell}${asExpected ? '' : ` (expected ${c.expected.text})`}`,
        c.bound || ts.some((x) => !Number.isNaN(x.ms)) ? medMax(times, 'ms') : '—',
        bounds.join('; '),
        held ? '✓' : '✗',
        served.length ? `${served.length} / ${tried}, ${medMax(served.map((x) => x.recoveryMs), 'ms')}` : `0 / ${tried}`,
        notes.join('; '),
      ])
      if (issues.length) problems.push(`- ${c.fault}, ${label}: ${[...new Set(issues)].slice(0, 6).join(' | ')}${issues.length > 6 ? ` | … (${issues.length} in all)` : ''}`)
    }
  }
  return {
    title: 'Faults',
    rows: [],
    table: {
      head: ['fault', 'target', 'runs (survived / tried)', 'error (class, as expected)', 'time to error, median (max)', 'bound', 'held', 'recovery (next call served, time: median (max))', 'notes'],
      rows,
    },
    notes: [
      `Faults and hostile peers, ${((performance.now() - started) / 1000).toFixed(0)} s in all. Each fault is provoked ${RUNS} times per target on one pool of one worker (the same pool for all runs, so each run also shows it survived the one before; a fresh one only after a run hung ${TRIAL_DEADLINE_MS / 1000} s). It strikes mid-call: a stream yielding an item every 5 ms has delivered one, or a \`ReadableStream\` source has been pulled 20 times. Kills and stops are signals to the worker or to this pool's sshd session process (the loopback sshd runs on this machine, as this user); a cut resets both sides of a TCP proxy between pool and sshd, a stall stops its forwarding. Time to error: from the signal or cut to the rejection of \`call.result\` (handler attached before the fault); for the stuck remote, from \`break\` (\`return()\` on the call's iterator) to its return; for floods, from the call; for start faults, from the hostile worker's first sight in /proc (polled every 5 ms) to \`pool()\`'s rejection. "Promptly" is read as ≤ ${PROMPT_MS} ms; timer bounds get ×${SLACK}; the keepalive bound is the README's worst case, held as is; "gone" means exited (a zombie counts). A failed call's stream must error too, not end.`,
      `Recovery: for 1–6 the next call on the same pool, made at once after the error (a new worker, or a reconnection), timed from the error; for 7 a call on a good pool on the same target (1000 items, made during the flood; or made right after \`pool()\` failed). Hostile workers are \`spec/fixtures/hostile-worker.ts\` run by node in front of the real worker (\`nodeArgs: ['--import', tsx, file]\`, \`FARPIPE_HOSTILE\` in the host's \`env\`, locally \`new LocalTransport({ env })\`); one still running 5 s after its pool gave up is reported. Memory: this process's RSS, sampled every 5 ms, and its kernel peak (VmHWM, reset first), minus the RSS after a GC; "sent" is what the flooder had written to its stdout (/proc/<pid>/io wchar) at the last sample. The flood's memory bound is the most a caller should hold of one stream: its byte window plus one frame of the largest size accepted.`,
      ...(problems.length ? ['Unexpected outcomes and bounds not held:', problems.join('\n')] : ['Every error was of the expected class, every run was served after its fault, nothing was left running.']),
    ],
  }
}
