// Load and leaks: many calls at once, many calls in a row, and many calls
// cancelled at random points, each on the local pool and over SSH. Every
// call must settle as the contract says, every remote `finally` must run,
// and nothing may be left behind: the caller's heap, RSS, handles and file
// descriptors and the workers' RSS and descriptors are read before and
// after each case (after a settle and a garbage collection on both sides).
// A case that does not finish within its deadline is reported as hung, with
// what was outstanding, and the bench goes on with a fresh pool.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { CancelError, input, pool, TimeoutError, type Pool, type RemoteCall, type Runner } from 'farpipe'
import { sshd } from './context.ts'
import { rssOf, type Section } from './lib.ts'
import * as b from './tasks.ts'

/** Multiplies every case's number of calls (0.01 for a quick check). */
const SCALE = Number(process.env.FARPIPE_BENCH_RELIABILITY_SCALE ?? 1)
/** Seconds a case may take before it is reported as hung. */
const DEADLINE_S = Number(process.env.FARPIPE_BENCH_RELIABILITY_DEADLINE ?? 300)
/** Seed of the PRNG that plans the cancellations. */
const SEED = Number(process.env.FARPIPE_BENCH_RELIABILITY_SEED ?? 1)
/** Which targets to run: `local`, `ssh` or both. */
const TARGETS = (process.env.FARPIPE_BENCH_RELIABILITY_TARGETS ?? 'local,ssh').split(',').map((s) => s.trim())

/** Worker processes per pool: one per core of this 2-core machine, so calls spread over two sessions. */
const WORKERS = 2
/** Items each of the concurrent streaming calls yields. */
const STREAM_ITEMS = 100
/** Cancelled calls in flight at once. */
const CANCEL_LANES = 32
/** How long the caller and the workers are left alone before a snapshot. */
const SETTLE_MS = 300
/** How long remote `finally` blocks (of calls whose result already rejected) get to show up in the tally. */
const FINALLY_GRACE_MS = 5000
/** Marks this bench's workers among the processes (the other benches' pools do not pass it). */
const NODE_ARGS = ['--expose-gc']
const MiB = 1048576

const scaled = (n: number) => Math.max(1, Math.round(n * SCALE))
type Target = 'local' | 'ssh'

// -- what is measured before and after ----------------------------------------

interface Proc {
  pid: number
  ppid: number
  comm: string
}

function processes(): Proc[] {
  const out: Proc[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const close = stat.lastIndexOf(')')
      const [state, ppid] = stat.slice(close + 2).split(' ')
      if (state !== 'Z') out.push({ pid: Number(name), ppid: Number(ppid), comm: stat.slice(stat.indexOf('(') + 1, close) })
    } catch {
      // exited meanwhile
    }
  }
  return out
}

function descendants(root: number, procs: Proc[]): Proc[] {
  const out: Proc[] = []
  const queue = [root]
  for (let parent = queue.shift(); parent !== undefined; parent = queue.shift()) {
    for (const p of procs) {
      if (p.ppid !== parent) continue
      out.push(p)
      queue.push(p.pid)
    }
  }
  return out
}

const cmdline = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    return ''
  }
}

const fdCount = (pid: number | 'self'): number => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return 0
  }
}

/**
 * This bench's worker processes: local ones are children of this process;
 * SSH ones run under the loopback sshd (as the same user: the harness logs
 * in as the current user). Also the sshd processes serving the sessions.
 */
async function workerProcs(target: Target): Promise<{ workers: number[]; sshd: number[] }> {
  const procs = processes()
  const isWorker = (p: Proc) => p.comm === 'node' && NODE_ARGS.every((a) => cmdline(p.pid).includes(a))
  if (target === 'local') return { workers: procs.filter((p) => p.ppid === process.pid && isWorker(p)).map((p) => p.pid), sshd: [] }
  const under = descendants((await sshd()).pid, procs)
  return { workers: under.filter(isWorker).map((p) => p.pid), sshd: under.filter((p) => p.comm.startsWith('sshd')).map((p) => p.pid) }
}

interface Snapshot {
  heap: number
  rss: number
  handles: Record<string, number>
  fds: number
  workers: { pid: number; rss: number; fds: number; heap: number }[]
  sshd: { count: number; fds: number }
  /** False when the workers could not all be reached to collect their garbage. */
  workersCollected: boolean
}

/** Asks every worker to collect garbage, and returns their heaps used by pid: calls made together go to different workers (least-loaded dispatch). */
async function collectWorkers(p: Pool, pids: number[]): Promise<Map<number, number>> {
  const seen = new Map<number, number>()
  for (let attempt = 0; attempt < 5 && pids.some((pid) => !seen.has(pid)); attempt++) {
    const got = await Promise.all(Array.from({ length: WORKERS }, () => p.run(b.collect, 50) as PromiseLike<{ pid: number; heap: number }>))
    for (const w of got) seen.set(w.pid, w.heap)
  }
  return seen
}

async function snapshot(p: Pool | undefined, target: Target): Promise<Snapshot> {
  let heaps = new Map<number, number>()
  if (p) {
    const r = await deadline(collectWorkers(p, (await workerProcs(target)).workers), 10_000)
    if (r.done) heaps = r.value
  }
  await sleep(SETTLE_MS)
  global.gc?.()
  await sleep(0)
  global.gc?.()
  const handles: Record<string, number> = {}
  for (const type of process.getActiveResourcesInfo()) handles[type] = (handles[type] ?? 0) + 1
  const mem = process.memoryUsage()
  const procs = await workerProcs(target)
  const workers = procs.workers.map((pid) => {
    let rss = 0
    try {
      rss = rssOf(pid).rss
    } catch {}
    return { pid, rss, fds: fdCount(pid), heap: heaps.get(pid) ?? NaN }
  })
  const sshdProcs = { count: procs.sshd.length, fds: procs.sshd.reduce((s, pid) => s + fdCount(pid), 0) }
  return { heap: mem.heapUsed, rss: mem.rss, handles, fds: fdCount('self'), workers, sshd: sshdProcs, workersCollected: workers.every((w) => heaps.has(w.pid)) }
}

// -- deadlines and what is outstanding -----------------------------------------

async function deadline<T>(work: Promise<T>, ms: number): Promise<{ done: true; value: T } | { done: false }> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<{ done: false }>((r) => (timer = setTimeout(() => r({ done: false }), ms)))
  try {
    return await Promise.race([work.then((value) => ({ done: true as const, value })), late])
  } finally {
    clearTimeout(timer)
  }
}

/** Where each call of a case is: what the report names when the case hangs. */
class Outstanding {
  readonly calls = new Map<number, { kind: string; what: string; state: string }>()
  /** `kind` groups calls in the summary; `what` describes this one. */
  begin(id: number, kind: string, what: string): void {
    this.calls.set(id, { kind, what, state: 'starting' })
  }
  at(id: number, state: string): void {
    const c = this.calls.get(id)
    if (c) c.state = state
  }
  end(id: number): void {
    this.calls.delete(id)
  }
  /** `12 outstanding: 7 × break: awaiting result; ...`, with one example of each. */
  summary(): string {
    const groups = new Map<string, { n: number; example: string }>()
    for (const [id, c] of this.calls) {
      const key = `${c.kind}: ${c.state.replace(/\d+/g, 'k')}`
      const g = groups.get(key)
      if (g) g.n++
      else groups.set(key, { n: 1, example: `call ${id} (${c.what}: ${c.state})` })
    }
    const list = [...groups].map(([key, g]) => `${g.n} × ${key}, e.g. ${g.example}`)
    return `${this.calls.size} outstanding: ${list.slice(0, 6).join('; ')}${list.length > 6 ? '; …' : ''}`
  }
}

/** What a case saw. */
interface Outcome {
  tried: number
  completed: number
  cancelled: number
  /** Failures the contract calls for (TimeoutError from `timeout`). */
  failed: number
  unexpected: string[]
  notes: string[]
}

const newOutcome = (tried: number): Outcome => ({ tried, completed: 0, cancelled: 0, failed: 0, unexpected: [], notes: [] })

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`
  return `${typeof e} ${String(e)}`
}

/** Reads a tally file: the ids whose remote function started, and those whose `finally` ran. */
function readTally(file: string): { started: Set<number>; finished: Set<number> } {
  const started = new Set<number>()
  const finished = new Set<number>()
  let text = ''
  try {
    text = readFileSync(file, 'utf8')
  } catch {}
  for (const line of text.split('\n')) {
    if (line.startsWith('s')) started.add(Number(line.slice(1)))
    else if (line.startsWith('f')) finished.add(Number(line.slice(1)))
  }
  return { started, finished }
}

/** Waits (a bounded time) for every remote function that started to have run its `finally`, and reports the ones that did not. */
async function checkTally(file: string, o: Outcome, whatOf: (id: number) => string, mustStart?: number): Promise<void> {
  const t0 = performance.now()
  let t = readTally(file)
  const missing = () => [...t.started].filter((id) => !t.finished.has(id))
  while (missing().length > 0 && performance.now() - t0 < FINALLY_GRACE_MS) {
    await sleep(50)
    t = readTally(file)
  }
  const miss = missing()
  o.notes.push(`remote functions started ${t.started.size}, their finally blocks ran ${t.finished.size}`)
  if (miss.length > 0) {
    o.unexpected.push(`${miss.length} remote finally blocks did not run within ${FINALLY_GRACE_MS / 1000} s of the case's end, e.g. ${miss.slice(0, 3).map((id) => `call ${id} (${whatOf(id)})`).join(', ')}`)
  }
  if (mustStart !== undefined && t.started.size !== mustStart) o.unexpected.push(`${t.started.size} remote functions started, ${mustStart} expected`)
}

// -- case 1: concurrent streams --------------------------------------------------

async function concurrentStreams(p: Runner, n: number, tally: string, out: Outstanding): Promise<Outcome> {
  const o = newOutcome(n)
  await Promise.all(
    Array.from({ length: n }, async (_, id) => {
      out.begin(id, 'stream', `stream of ${STREAM_ITEMS}`)
      try {
        const call = p.run(b.ticks, tally, id, STREAM_ITEMS, STREAM_ITEMS + 1)
        let got = 0
        let bad: string | undefined
        for await (const x of call) {
          if (x !== got) bad ??= `item ${got} was ${x}`
          out.at(id, `${++got} items read`)
        }
        out.at(id, 'awaiting result')
        const r = await call.result
        if (bad || got !== STREAM_ITEMS || r !== STREAM_ITEMS) o.unexpected.push(`call ${id}: ${bad ?? `${got} items, result ${r}`}`)
        else o.completed++
      } catch (e) {
        o.unexpected.push(`call ${id}: ${describe(e)}`)
      }
      out.end(id)
    }),
  )
  await checkTally(tally, o, () => 'a stream read to its end', n)
  return o
}

// -- case 2: sequential tiny calls ------------------------------------------------

async function sequentialTiny(p: Runner, n: number, _tally: string, out: Outstanding): Promise<Outcome> {
  const o = newOutcome(n)
  out.begin(0, 'add(1, 2)', 'add(1, 2)')
  for (let i = 0; i < n; i++) {
    out.at(0, `call ${i + 1} of ${n}`)
    try {
      const r = await (p.run(b.add, 1, 2) as PromiseLike<number>)
      if (r === 3) o.completed++
      else o.unexpected.push(`call ${i}: result ${r}`)
    } catch (e) {
      o.unexpected.push(`call ${i}: ${describe(e)}`)
    }
  }
  out.end(0)
  return o
}

// -- case 3: cancelled at random points ---------------------------------------------

/** mulberry32: a small seeded PRNG, so a run's plan can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const MODES = ['cancel before start', 'abort before start', 'break', 'cancel()', 'signal', 'timeout', 'input iterator', 'input stream', 'input writable'] as const
type Mode = (typeof MODES)[number]

/** One cancelled call's plan, drawn from the PRNG before the case runs. */
interface Plan {
  id: number
  mode: Mode
  /** Items the remote yields (or the input has). */
  n: number
  /** The remote (or the input source) pauses 1 ms after every `every` items. */
  every: number
  /** Stop after this many items read (when `timer` is undefined); more than `n` means never. */
  k: number
  /** Or stop this many ms after the call starts. */
  timer: number | undefined
  /** A small `highWaterMark`, so that the producer (remote or local) waits for credit when it is stopped; else the default. */
  hwm: number | undefined
  /** The reader pauses 1 ms after every this many items (0: it reads as fast as it can). */
  readPause: number
  /** For the modes that stop a call before it starts: the streamed input it is given, if any. */
  source: 'none' | 'iterator' | 'stream'
}

function plans(n: number, seed: number): Plan[] {
  const rnd = prng(seed)
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1))
  return Array.from({ length: n }, (_, id) => {
    const mode = MODES[int(0, MODES.length - 1)]!
    const items = int(1, 200)
    return {
      id,
      mode,
      n: items,
      every: int(1, 20),
      k: int(1, items + 10),
      timer: rnd() < 0.4 ? int(0, 8) : undefined,
      hwm: rnd() < 0.5 ? int(1, 16) : undefined,
      readPause: rnd() < 0.3 ? int(1, 10) : 0,
      source: (['none', 'iterator', 'stream'] as const)[int(0, 2)]!,
    }
  })
}

/** Whether the plan stops the call by a timer (else after k items, or as its mode says). */
const stopsByTime = (p: Plan): boolean => p.timer !== undefined && ['cancel()', 'signal', 'input iterator', 'input stream', 'input writable'].includes(p.mode)

const sourceOf = (p: Plan): 'none' | 'iterator' | 'stream' | 'writable' =>
  p.mode.endsWith('before start') ? p.source : p.mode === 'input iterator' ? 'iterator' : p.mode === 'input stream' ? 'stream' : p.mode === 'input writable' ? 'writable' : 'none'

const whatOf = (p: Plan): string =>
  `${p.mode} #${p.id}, ${p.n} items, pause every ${p.every}` +
  (p.mode.endsWith('before start') && p.source !== 'none' ? `, input from ${p.source === 'stream' ? 'a ReadableStream' : 'an async generator'}` : '') +
  (p.hwm ? `, highWaterMark ${p.hwm}` : '') +
  (p.readPause ? `, reader pauses every ${p.readPause}` : '') +
  (p.mode.endsWith('before start') ? '' : p.mode === 'timeout' ? `, timeout ${(p.timer ?? p.k % 9) + 1} ms` : stopsByTime(p) ? `, after ${p.timer} ms` : `, after ${p.k} items`)

type Settled = { ok: true; value: unknown } | { ok: false; error: unknown }
const settled = (x: Promise<unknown>): Promise<Settled> => x.then((value) => ({ ok: true as const, value }), (error) => ({ ok: false as const, error }))

/** Local input sources: how many began and how many were closed (returned, cancelled or read to their end). */
interface Sources {
  opened: number
  closed: number
  open: Set<number>
}

/**
 * Runs one planned call and says how it ended: 'completed', 'cancelled' or
 * 'failed' (a TimeoutError the plan asked for); throws a description of
 * anything the contract does not allow.
 */
async function cancelledCall(run: Runner, plan: Plan, tally: string, out: Outstanding, sources: Sources): Promise<'completed' | 'cancelled' | 'failed'> {
  const { id, mode, n, every } = plan
  const reason = new Error(`abort reason of call ${id}`)
  const controller = new AbortController()
  const timeoutMs = (plan.timer ?? plan.k % 9) + 1
  const viewed = plan.hwm ? run.with({ highWaterMark: plan.hwm }) : run
  const p = mode === 'signal' || mode === 'abort before start' ? viewed.with({ signal: controller.signal }) : mode === 'timeout' ? viewed.with({ timeout: timeoutMs }) : viewed
  const expected = (e: unknown): boolean =>
    mode === 'signal' || mode === 'abort before start' ? e === reason : mode === 'timeout' ? e instanceof TimeoutError : e instanceof CancelError
  const src = sourceOf(plan)
  const factor = src === 'none' ? 1 : 2

  // The streamed input of the input modes.
  let writer: WritableStreamDefaultWriter<number> | undefined
  let call: RemoteCall<number, number, number>
  if (src === 'iterator') {
    const source = async function* () {
      sources.opened++
      sources.open.add(id)
      try {
        for (let i = 0; i < n; i++) {
          yield i
          if ((i + 1) % every === 0) await sleep(1)
        }
      } finally {
        sources.closed++
        sources.open.delete(id)
      }
    }
    call = p.run(b.doubled, tally, id, source()) as RemoteCall<number, number, number>
  } else if (src === 'stream') {
    let i = 0
    let closed = false
    const close = () => {
      if (closed) return
      closed = true
      sources.closed++
      sources.open.delete(id)
    }
    const stream = new ReadableStream<number>(
      {
        start() {
          sources.opened++
          sources.open.add(id)
        },
        async pull(c) {
          if (i >= n) {
            c.close()
            return close()
          }
          c.enqueue(i++)
          if (i % every === 0) await sleep(1)
        },
        cancel: close,
      },
      { highWaterMark: 0 },
    )
    call = p.run(b.doubled, tally, id, stream) as RemoteCall<number, number, number>
  } else if (src === 'writable') {
    call = p.run(b.doubled, tally, id, input) as RemoteCall<number, number, number>
    writer = call.writable.getWriter()
  } else {
    call = p.run(b.ticks, tally, id, n, every) as RemoteCall<never, number, number>
  }

  // How it is stopped.
  let cancelling: Promise<void> | undefined
  const stop = () => {
    if (mode === 'signal') controller.abort(reason)
    else cancelling ??= call.cancel()
  }
  if (mode === 'cancel before start') stop()
  if (mode === 'abort before start') controller.abort(reason)
  const byTime = stopsByTime(plan)
  const timer = byTime ? setTimeout(stop, plan.timer) : undefined
  const stopAt = byTime || mode === 'timeout' || mode.endsWith('before start') ? Infinity : plan.k

  // The input writer runs beside the reader; it must stop (its writes reject) once the call is stopped.
  let writing: Promise<string | undefined> = Promise.resolve(undefined)
  if (writer) {
    const w = writer
    writing = (async () => {
      try {
        for (let i = 0; i < n; i++) {
          await w.write(i)
          if ((i + 1) % every === 0) await sleep(1)
        }
        await w.close()
        return undefined
      } catch (e) {
        // close() of a stream the call has errored rejects with a TypeError (as the Streams spec says); the error it holds is what counts.
        const held = e instanceof TypeError ? await w.closed.then(() => e, (x: unknown) => x) : e
        return held instanceof CancelError || held === reason ? undefined : `input write rejected with ${describe(e)}`
      }
    })()
  }

  // Read until the end, an error, or the stopping point.
  out.at(id, 'reading')
  let got = 0
  let bad: string | undefined
  let ended: 'done' | 'stopped' | 'error' = 'done'
  let readError: unknown
  const it = call[Symbol.asyncIterator]()
  try {
    for (;;) {
      const r = await it.next()
      if (r.done) break
      if (r.value !== got * factor) bad ??= `item ${got} was ${r.value}`
      got++
      out.at(id, `${got} items read`)
      if (plan.readPause && got % plan.readPause === 0) await sleep(1)
      if (got >= stopAt) {
        ended = 'stopped'
        if (mode === 'break') {
          out.at(id, `break after ${got} items`)
          await it.return!()
        } else {
          stop()
          // After a stop, what is already here may still be read, then the stream errors (or ends, if the end was here first).
          out.at(id, `draining after a stop at ${got} items`)
          try {
            for (let r2 = await it.next(); !r2.done; r2 = await it.next()) {
              if (r2.value !== got * factor) bad ??= `item ${got} was ${r2.value}`
              got++
            }
            ended = 'done'
          } catch (e) {
            ended = 'error'
            readError = e
          }
        }
        break
      }
    }
  } catch (e) {
    ended = 'error'
    readError = e
  }
  clearTimeout(timer)

  out.at(id, 'awaiting result')
  const result = await settled(call.result)
  if (cancelling) {
    out.at(id, 'awaiting cancel()')
    await cancelling
  }
  out.at(id, 'awaiting input writer')
  const writeProblem = await writing
  out.at(id, 'settled')

  const problems: string[] = []
  if (bad) problems.push(bad)
  if (writeProblem) problems.push(writeProblem)
  let kind: 'completed' | 'cancelled' | 'failed'
  if (result.ok) {
    kind = 'completed'
    if (result.value !== n) problems.push(`result ${String(result.value)}, expected ${n}`)
    if (ended === 'error') problems.push(`result resolved but the stream errored with ${describe(readError)}`)
    if (ended === 'done' && got !== n) problems.push(`stream ended after ${got} of ${n} items`)
    if (mode.endsWith('before start')) problems.push('it completed although it was stopped before it started')
  } else {
    kind = mode === 'timeout' ? 'failed' : 'cancelled'
    if (!expected(result.error)) problems.push(`result rejected with ${describe(result.error)}`)
    if (ended === 'done') problems.push(`the stream ended normally after ${got} of ${n} items, but the result rejected with ${describe(result.error)}`)
    if (ended === 'error' && !expected(readError)) problems.push(`the stream errored with ${describe(readError)}`)
  }
  if (problems.length > 0) throw new Error(problems.join('; '))
  return kind
}

async function cancelledCalls(p: Runner, n: number, tally: string, out: Outstanding, seed = SEED): Promise<Outcome> {
  const o = newOutcome(n)
  const all = plans(n, seed)
  const byMode = new Map<Mode, number>()
  const sources: Sources = { opened: 0, closed: 0, open: new Set() }
  let next = 0
  const lane = async () => {
    for (let i = next++; i < n; i = next++) {
      const plan = all[i]!
      byMode.set(plan.mode, (byMode.get(plan.mode) ?? 0) + 1)
      out.begin(plan.id, plan.mode, whatOf(plan))
      try {
        o[await cancelledCall(p, plan, tally, out, sources)]++
      } catch (e) {
        o.unexpected.push(`call ${plan.id} (${whatOf(plan)}): ${e instanceof Error ? e.message : String(e)}`)
      }
      out.end(plan.id)
    }
  }
  await Promise.all(Array.from({ length: CANCEL_LANES }, lane))
  await checkTally(tally, o, (id) => whatOf(all[id]!))
  // Local input sources: each one that began must have been closed (returned, cancelled or read to its end).
  const t0 = performance.now()
  while (sources.open.size > 0 && performance.now() - t0 < FINALLY_GRACE_MS) await sleep(50)
  o.notes.push(`local input sources begun ${sources.opened}, closed ${sources.closed}`)
  if (sources.open.size > 0) {
    const ids = [...sources.open]
    o.unexpected.push(`${ids.length} local input sources were never closed, e.g. ${ids.slice(0, 3).map((id) => `call ${id} (${whatOf(all[id]!)})`).join(', ')}`)
  }
  o.notes.push(`modes: ${[...byMode].map(([m, k]) => `${m} ${k}`).join(', ')}`)
  return o
}

// -- running the cases ----------------------------------------------------------

interface Case {
  name: string
  calls: number
  run(p: Runner, n: number, tally: string, out: Outstanding): Promise<Outcome>
}

const cases: Case[] = [
  { name: `${scaled(1000)} concurrent streams of ${STREAM_ITEMS} items`, calls: scaled(1000), run: concurrentStreams },
  { name: `${scaled(100_000)} sequential tiny calls`, calls: scaled(100_000), run: sequentialTiny },
  { name: `${scaled(10_000)} calls cancelled at random points`, calls: scaled(10_000), run: cancelledCalls },
]

async function openPool(target: Target, cacheDir: string): Promise<Pool> {
  const where = target === 'ssh' ? { hosts: [(await sshd()).alias] } : {}
  const p = await pool({ ...where, workers: WORKERS, cacheDir, nodeArgs: NODE_ARGS })
  await p.run(b.add, 1, 2)
  return p
}

async function closePool(p: Pool): Promise<string | undefined> {
  const r = await deadline(p.close(), 15_000)
  return r.done ? undefined : 'close() of the pool did not finish within 15 s'
}

const signed = (x: number, digits = 0) => `${x >= 0 ? '+' : ''}${x.toFixed(digits)}`
const mib = (bytes: number) => (Number.isNaN(bytes) ? '?' : `${signed(bytes / MiB, 2)} MiB`)

function handlesDelta(a: Record<string, number>, b: Record<string, number>): string {
  const types = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
  const changes = types.map((t) => [t, (b[t] ?? 0) - (a[t] ?? 0)] as const).filter(([, d]) => d !== 0)
  const total = changes.reduce((s, [, d]) => s + d, 0)
  return changes.length === 0 ? '0' : `${signed(total)} (${changes.map(([t, d]) => `${t} ${signed(d)}`).join(', ')})`
}

const sum = (ws: Snapshot['workers'], key: 'rss' | 'fds' | 'heap') => ws.reduce((s, w) => s + w[key], 0)

export async function run(): Promise<Section> {
  const rows: string[][] = []
  const notes: string[] = []
  const cacheDir = mkdtempSync(path.join(tmpdir(), 'farpipe-reliability-'))
  const t0 = performance.now()
  for (const target of TARGETS as Target[]) {
    if (target !== 'local' && target !== 'ssh') throw new Error(`FARPIPE_BENCH_RELIABILITY_TARGETS: unknown target ${target}; use local, ssh or both`)
    const label = target === 'local' ? 'local' : 'SSH'
    let p: Pool
    try {
      p = await openPool(target, cacheDir)
    } catch (e) {
      rows.push(...cases.map((c) => [c.name, label, String(c.calls), 'not run', `pool() failed: ${describe(e)}`, '', '', '', '', '', '', '', '']))
      continue
    }
    for (const [i, c] of cases.entries()) {
      console.log(`  ${label}: ${c.name}`)
      const tally = path.join(cacheDir, `tally-${target}-${i}`)
      // A small unmeasured round first, so that what code and caches every run needs once is not counted as a leak.
      const warm = Math.max(1, Math.round(c.calls / 20))
      const warmOut = new Outstanding()
      const w = await deadline(c.run(p, warm, `${tally}-warm`, warmOut).catch(() => undefined), DEADLINE_S * 1000)
      const before = await snapshot(w.done ? p : undefined, target)
      let out = new Outstanding()
      const started = performance.now()
      let o = newOutcome(c.calls)
      let hung: string | undefined
      if (!w.done) {
        // The pool is not in a state to measure anything: say what hung, and go on with a fresh one.
        out = warmOut
        hung = `hung in its warm-up round of ${warm} calls: no end after ${DEADLINE_S} s; ${out.summary()}`
      }
      const seconds = () => (w.done ? performance.now() - started : DEADLINE_S * 1000) / 1000
      if (w.done) {
        try {
          const r = await deadline(c.run(p, c.calls, tally, out), DEADLINE_S * 1000)
          if (r.done) o = r.value
          else hung = `hung: no end after ${DEADLINE_S} s; ${out.summary()}`
        } catch (e) {
          o.unexpected.push(`the case threw ${describe(e)}`)
        }
      }
      const time = seconds()
      const after = await snapshot(hung ? undefined : p, target)
      const note = [`${label}, ${c.name}`, ...o.notes]
      if (hung) note.push(hung)
      if (!after.workersCollected && !hung) note.push('the workers could not all be reached to collect their garbage')
      if (target === 'ssh') note.push(`sshd session processes ${before.sshd.count} → ${after.sshd.count}, their fds ${signed(after.sshd.fds - before.sshd.fds)}`)
      note.push(`caller heap per call ${signed((after.heap - before.heap) / c.calls)} B`)
      if (o.unexpected.length) note.push(`unexpected: ${o.unexpected.slice(0, 5).join(' | ')}${o.unexpected.length > 5 ? ` | … (${o.unexpected.length} in all)` : ''}`)
      notes.push(`- ${note.join('; ')}.`)
      const sameWorkers = before.workers.map((x) => x.pid).join() === after.workers.map((x) => x.pid).join()
      rows.push([
        c.name,
        label,
        String(o.tried),
        `${o.completed} / ${o.cancelled} / ${o.failed}`,
        hung ? `**hung** (${out.calls.size} call${out.calls.size === 1 ? '' : 's'} outstanding)${o.unexpected.length ? ` + ${o.unexpected.length}` : ''}` : String(o.unexpected.length),
        `${time.toFixed(1)} s`,
        mib(after.heap - before.heap),
        mib(after.rss - before.rss),
        handlesDelta(before.handles, after.handles),
        signed(after.fds - before.fds),
        `${mib(sum(after.workers, 'rss') - sum(before.workers, 'rss'))} (heap ${mib(sum(after.workers, 'heap') - sum(before.workers, 'heap'))})${sameWorkers ? '' : ' (workers replaced)'}`,
        signed(sum(after.workers, 'fds') - sum(before.workers, 'fds')),
        `${before.workers.length} → ${after.workers.length}`,
      ])
      rmSync(`${tally}-warm`, { force: true })
      if (hung) {
        // The hung calls may hold the pool: go on with a fresh one.
        const problem = await closePool(p)
        if (problem) notes.push(`- ${label}: ${problem} after the hang.`)
        p = await openPool(target, cacheDir)
      }
    }
    const problem = await closePool(p)
    if (problem) notes.push(`- ${label}: ${problem}.`)
  }
  rmSync(cacheDir, { recursive: true, force: true })
  return {
    title: 'Reliability',
    rows: [],
    table: {
      head: ['case', 'target', 'calls tried', 'completed / cancelled / failed as expected', 'unexpected', 'time', 'caller heap Δ', 'RSS Δ', 'handles Δ', 'fds Δ', 'worker RSS Δ', 'worker fds Δ', 'worker processes before → after'],
      rows,
    },
    notes: [
      `Load and leaks, ${((performance.now() - t0) / 1000).toFixed(0)} s in all. Each case runs on a fresh-enough pool of ${WORKERS} workers (\`nodeArgs: ['--expose-gc']\`), after an unmeasured round of 1/20 of its calls. Before and after it, the workers collect their garbage (a remote \`gc()\`), everything is left alone ${SETTLE_MS} ms, and the caller collects its own; then: the caller's heap used and RSS, \`process.getActiveResourcesInfo()\` by type, its open fds (/proc/self/fd), and the workers' count, RSS (/proc/<pid>/status; their heap used, after their \`gc()\`, in parentheses) and fds (/proc/<pid>/fd). Local workers are this process's children; SSH workers are the node processes under the loopback sshd (same user, same machine). A case has ${DEADLINE_S} s before it is reported as hung with what was outstanding.`,
      `Cases. Streams: every call is consumed at once, concurrently; each must yield 0..${STREAM_ITEMS - 1} and return ${STREAM_ITEMS}. Tiny: \`await p.run(add, 1, 2)\` in a row, each must give 3. Cancelled: ${CANCEL_LANES} calls in flight, each drawn from a PRNG (seed ${SEED}): a remote generator of 1–200 items that pauses 1 ms every 1–20 items (or, for the input modes, a remote that doubles what it reads from a local async generator, a ReadableStream or the writable side) is stopped before it starts (\`cancel()\` in the same tick, or its signal aborted right after \`run()\`; a third of these given a ReadableStream to read, a third an async generator), after k items read (\`break\`, \`cancel()\`, \`abort(reason)\`) or after 0–8 ms, or by a \`timeout\` of 1–9 ms; half of them with a \`highWaterMark\` of 1–16 (so producers wait for credit when stopped), a third with a reader that pauses 1 ms every 1–10 items. It must settle: the result resolves with the full count when the call finished first (and then the stream delivered every item), or rejects with \`CancelError\` (\`TimeoutError\`, counted as failed as expected; the abort reason itself) and the stream errors the same way; items read are always a prefix of the right ones. Remote functions append \`s<id>\` when they start and \`f<id>\` in their \`finally\` to a tally file: every start needs its finally within ${FINALLY_GRACE_MS / 1000} s. Every local input source that began must be closed (returned, cancelled or read to its end).`,
      notes.join('\n'),
    ],
  }
}

// Exposed for a quick look at one plan: `FARPIPE_BENCH_RELIABILITY_SEED=1` and the call's id name it.
export { plans, whatOf }
