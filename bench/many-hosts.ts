// Many hosts: what `Pool.map` costs and how it scales, and what a host's
// death costs a map in flight.
//
// 1. Throughput of `p.map` (items/s) with a tiny function and with one that
//    waits 1 ms, on local pools of 1, 2 and 4 workers, over SSH with 1, 2
//    and 4 workers on one host, and over 3 hosts (127.0.0.1–3, each its own
//    sshd) × 1 worker. The anchor, in the same run and on the same pool, is
//    the loop a user would write without map: `await p.run(fn, x)` with the
//    same number of calls in flight (a window of lanes, each awaiting one
//    call after another). Runs alternate between the two.
// 2. A host's death during a map over the 3 hosts: its sshd is stopped (the
//    listener and the sessions killed) a third of the way in; timed from the
//    stop to the first event saying so, to the first result of one of its
//    items run again elsewhere (each item counts its calls), and to the map's end; next to the same map
//    with no death, alternated.
// 3. `ordered: false` next to the default, on the same pool and workload.
import { pool, type HostEventDetail, type MapOptions, type Pool, type PoolStats, type WorkerExitDetail } from 'farpipe'
import { startSshd, type Sshd } from '../spec/e2e/sshd.ts'
import { cacheDir, sshd } from './context.ts'
import { measure, median, pair, perSecond, RUNS, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

/** Items of a map of the tiny function. */
const ITEMS = Number(process.env.FARPIPE_BENCH_MAP_ITEMS ?? 20_000)
/** Items of a map of the 1 ms function (a rate: at one item in flight, 1000 items take over a second). */
const SLOW_ITEMS = Number(process.env.FARPIPE_BENCH_MAP_SLOW_ITEMS ?? 1000)
/** Items in flight for the wide-window figures (map's `concurrency`, and the anchor's lanes). */
const WINDOW = Number(process.env.FARPIPE_BENCH_MAP_WINDOW ?? 64)
/** Items of the map a host dies in. */
const DEATH_ITEMS = Number(process.env.FARPIPE_BENCH_DEATH_ITEMS ?? 6000)
/** What each item of that map waits, and how many are in flight (4 per host). */
const DEATH_MS = 2
const DEATH_CONCURRENCY = 12
const SLOW_MS = 1
/** The uneven workload of the ordered/unordered figure: one item in `every` waits `ms`, the others nothing. */
const JITTER = { every: 50, ms: 20 }

const fmtMs = (x: number) => (Number.isNaN(x) ? '?' : x >= 100 ? x.toFixed(0) : x.toFixed(1))
const fmtK = (n: number) => (n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n))

// -- workloads ------------------------------------------------------------------------------

/** One workload: its items, a map of them, and one call of item `i` (for the anchor). Every result is `2 * i`. */
interface Work {
  label: string
  n: number
  map(p: Pool, options: MapOptions): AsyncIterable<number>
  run(p: Pool, i: number): PromiseLike<number>
}

function jobs(n: number, ms: (x: number) => number): { x: number; ms: number }[] {
  return Array.from({ length: n }, (_, x) => ({ x, ms: ms(x) }))
}

const numbers = Array.from({ length: ITEMS }, (_, x) => x)
const tiny: Work = {
  label: `\`x => x * 2\` × ${fmtK(ITEMS)}`,
  n: ITEMS,
  map: (p, o) => p.map(b.double, numbers, o),
  run: (p, i) => p.run(b.double, numbers[i]!),
}
const slowJobs = jobs(SLOW_ITEMS, () => SLOW_MS)
const slow: Work = {
  label: `${SLOW_MS} ms timer × ${fmtK(SLOW_ITEMS)}`,
  n: SLOW_ITEMS,
  map: (p, o) => p.map(b.doubleAfter, slowJobs, o),
  run: (p, i) => p.run(b.doubleAfter, slowJobs[i]!),
}
const jitterJobs = jobs(SLOW_ITEMS, (x) => (x % JITTER.every === 0 ? JITTER.ms : 0))
const jittered: Work = {
  label: `1 in ${JITTER.every} items a ${JITTER.ms} ms timer, × ${fmtK(SLOW_ITEMS)}`,
  n: SLOW_ITEMS,
  map: (p, o) => p.map(b.doubleAfter, jitterJobs, o),
  run: (p, i) => p.run(b.doubleAfter, jitterJobs[i]!),
}

/** Items/s of `p.map` over the workload; checks that every result arrived once (and in order, when ordered). */
async function viaMap(p: Pool, w: Work, options: MapOptions = {}): Promise<number> {
  const t0 = performance.now()
  let n = 0
  let sum = 0
  const ordered = options.ordered ?? true
  for await (const y of w.map(p, options)) {
    if (ordered && y !== n * 2) throw new Error(`map: result ${n} is ${y}, expected ${n * 2}`)
    n++
    sum += y
  }
  const rate = perSecond(n, t0)
  if (n !== w.n || sum !== w.n * (w.n - 1)) throw new Error(`map: ${n} results summing to ${sum}, expected ${w.n} summing to ${w.n * (w.n - 1)}`)
  return rate
}

/** Items/s of `window` lanes each awaiting `p.run(fn, x)` one after another: what a user writes without map. */
async function viaRun(p: Pool, w: Work, window: number): Promise<number> {
  const t0 = performance.now()
  const out = new Array<number>(w.n)
  let next = 0
  const lane = async () => {
    while (next < w.n) {
      const i = next++
      out[i] = await w.run(p, i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(window, w.n) }, lane))
  const rate = perSecond(w.n, t0)
  for (let i = 0; i < w.n; i++) if (out[i] !== i * 2) throw new Error(`run(): result ${i} is ${out[i]}, expected ${i * 2}`)
  return rate
}

// -- a host's death -------------------------------------------------------------------------

/** What one map over the three hosts measured; times in ms from the stop, NaN when it did not happen. */
interface DeathRun {
  total: number
  toExit: number
  toDown: number
  toRerun: number
  toEnd: number
  stopped: number
  reruns: number
  /** Results that came from an item's second call. */
  second: number
  /** `p.stats()` when `stop()` resolved, and once the pool had said `hostdown` (on the next turn of the event loop). */
  atStop: PoolStats | undefined
  atDown: PoolStats | undefined
  problems: string[]
}

/** A map of DEATH_ITEMS items over `hosts` × 1 worker, on a fresh pool; `victim`'s sshd is stopped a third of the way in (and restarted after). */
async function mapOver(hosts: Sshd[], victim: Sshd | undefined): Promise<DeathRun> {
  const p = await pool({ hosts: hosts.map((h) => h.alias), workers: 1, cacheDir: await cacheDir() })
  const problems: string[] = []
  let t0 = NaN
  let stopped: Promise<number> | undefined
  let atStop: PoolStats | undefined
  let atDown: PoolStats | undefined
  const seen = { exit: NaN, down: NaN }
  try {
    // Every host up and its worker warm, so that the map starts on all three.
    await Promise.all(p.broadcast(b.noop))
    p.addEventListener('workerexit', (e) => {
      if ((e as CustomEvent<WorkerExitDetail>).detail.host === victim?.alias && Number.isNaN(seen.exit)) seen.exit = performance.now()
    })
    p.addEventListener('hostdown', (e) => {
      if ((e as CustomEvent<HostEventDetail>).detail.host !== victim?.alias || !Number.isNaN(seen.down)) return
      seen.down = performance.now()
      setImmediate(() => (atDown = p.stats()))
    })
    // `attempt` is read when the item is serialized, once for each call made for it: 2 on a re-run.
    const items = Array.from({ length: DEATH_ITEMS }, (_, x) => {
      let calls = 0
      return {
        x,
        ms: DEATH_MS,
        get attempt() {
          return ++calls
        },
      }
    })
    let firstRerun = NaN
    let second = 0
    const where: string[] = []
    const start = performance.now()
    const stream = p.map(b.doubleWhere, items, { concurrency: DEATH_CONCURRENCY })
    let n = 0
    for await (const r of stream) {
      if (r.y !== n * 2 && problems.length < 5) problems.push(`result ${n} is ${r.y}, expected ${n * 2}`)
      if (r.attempt > 1) {
        if (second++ === 0) firstRerun = performance.now()
        if (r.host === victim?.alias) problems.push(`item ${n} ran again on the stopped host`)
      }
      where[n] = r.host
      n++
      if (victim && n === Math.floor(DEATH_ITEMS / 3)) {
        t0 = performance.now()
        stopped = victim.stop().then(() => {
          atStop = p.stats()
          return performance.now()
        })
      }
    }
    const end = performance.now()
    if (n !== DEATH_ITEMS) problems.push(`${n} results, expected ${DEATH_ITEMS}`)
    const reruns = stream.progress.rerun
    if (second !== reruns) problems.push(`${second} results of second calls, but progress.rerun is ${reruns}`)
    if (victim) {
      if (reruns === 0) problems.push('no item was run again')
      if (Number.isNaN(seen.exit) && Number.isNaN(seen.down)) problems.push('neither workerexit nor hostdown was dispatched for the stopped host')
      if (where.slice(Math.floor(DEATH_ITEMS / 2)).includes(victim.alias)) problems.push('results from the stopped host after its death')
    } else if (reruns !== 0) problems.push(`${reruns} re-runs with no host stopped`)
    return {
      total: end - start,
      toExit: seen.exit - t0,
      toDown: seen.down - t0,
      toRerun: firstRerun - t0,
      toEnd: end - t0,
      stopped: stopped ? (await stopped) - t0 : NaN,
      reruns,
      second,
      atStop,
      atDown,
      problems,
    }
  } finally {
    await p.close()
    if (victim && stopped) {
      await stopped
      await victim.restart()
    }
  }
}

// -- the section ----------------------------------------------------------------------------

export async function run(): Promise<Section> {
  const started = performance.now()
  const first = await sshd()
  const extra: Sshd[] = []
  try {
    // Two more hosts on other loopback addresses, with the bench's client HOME (config and known_hosts).
    for (const [alias, address] of [['farpipe-bench-2', '127.0.0.2'], ['farpipe-bench-3', '127.0.0.3']] as const) {
      extra.push(await startSshd({ alias, address, home: first.home }))
    }
    const hosts = [first, ...extra]
    const cache = await cacheDir()
    const configs: { name: string; workers: number; open: () => Promise<Pool> }[] = [
      ...[1, 2, 4].map((w) => ({ name: `local, ${w} worker${w > 1 ? 's' : ''}`, workers: w, open: () => pool({ workers: w, cacheDir: cache }) })),
      ...[1, 2, 4].map((w) => ({ name: `SSH, 1 host × ${w} worker${w > 1 ? 's' : ''}`, workers: w, open: () => pool({ hosts: [first.alias], workers: w, cacheDir: cache }) })),
      { name: 'SSH, 3 hosts × 1 worker', workers: 3, open: () => pool({ hosts: hosts.map((h) => h.alias), workers: 1, cacheDir: cache }) },
    ]

    const tinyRows: Row[] = []
    const wideRows: Row[] = []
    const slowRows: Row[] = []
    const orderRows: Row[] = []
    const slowRates = new Map<string, number>()
    for (const c of configs) {
      console.log(`  ${c.name}`)
      const p = await c.open()
      try {
        await p.run(b.noop)
        const anchor = (window: number, values: number[]) => ({ name: `\`await p.run()\`, ${window} in flight`, measure: measure(values, 'items/s') })
        const [m1, r1] = await pair(() => viaMap(p, tiny), () => viaRun(p, tiny, c.workers))
        tinyRows.push({ figure: `${tiny.label}, ${c.name}, default concurrency (${c.workers})`, farpipe: measure(m1, 'items/s'), anchor: anchor(c.workers, r1) })
        const [m2, r2] = await pair(() => viaMap(p, tiny, { concurrency: WINDOW }), () => viaRun(p, tiny, WINDOW))
        wideRows.push({ figure: `${tiny.label}, ${c.name}, concurrency ${WINDOW}`, farpipe: measure(m2, 'items/s'), anchor: anchor(WINDOW, r2) })
        const [m3, r3] = await pair(() => viaMap(p, slow), () => viaRun(p, slow, c.workers))
        slowRows.push({ figure: `${slow.label}, ${c.name}, default concurrency (${c.workers})`, farpipe: measure(m3, 'items/s'), anchor: anchor(c.workers, r3) })
        slowRates.set(c.name, median(m3))
        if (c.name.startsWith('SSH, 3 hosts')) {
          for (const w of [tiny, jittered]) {
            const [u, o] = await pair(() => viaMap(p, w, { concurrency: WINDOW, ordered: false }), () => viaMap(p, w, { concurrency: WINDOW }))
            orderRows.push({ figure: `\`ordered: false\`, ${w.label}, ${c.name}, concurrency ${WINDOW}`, farpipe: measure(u, 'items/s'), anchor: { name: 'ordered (the default)', measure: measure(o, 'items/s') } })
          }
        }
      } finally {
        await p.close()
      }
    }

    console.log('  a host stopped mid-map')
    const victim = extra[0]!
    // One unmeasured run of each warms the hosts' caches; then they alternate.
    await mapOver(hosts, undefined)
    await mapOver(hosts, victim)
    const died: DeathRun[] = []
    const lived: DeathRun[] = []
    for (let i = 0; i < RUNS; i++) {
      died.push(await mapOver(hosts, victim))
      lived.push(await mapOver(hosts, undefined))
    }
    const ms = (xs: number[]) => measure(xs, 'ms', false)
    const pick = (k: 'toExit' | 'toDown') => died.map((d) => d[k])
    const firstEvent = died.map((d) => Math.min(...[d.toExit, d.toDown].filter((x) => !Number.isNaN(x))))
    const deathLabel = `map of ${fmtK(DEATH_ITEMS)} items (${DEATH_MS} ms timer each, concurrency ${DEATH_CONCURRENCY}) over 3 hosts × 1 worker`
    const deathRows: Row[] = [
      { figure: `${deathLabel}, one host's sshd stopped at item ${fmtK(Math.floor(DEATH_ITEMS / 3))}: map duration`, farpipe: ms(died.map((d) => d.total)), anchor: { name: 'the same map, no host stopped', measure: ms(lived.map((d) => d.total)) } },
      { figure: 'host death: `stop()` → first `workerexit`/`hostdown` of that host (its calls fail)', farpipe: ms(firstEvent) },
      { figure: 'host death: `stop()` → first result of one of its items, run again on another host', farpipe: ms(died.map((d) => d.toRerun)) },
      { figure: 'host death: `stop()` → map ends', farpipe: ms(died.map((d) => d.toEnd)) },
      { figure: 'host death: re-runs (`stream.progress.rerun`)', farpipe: measure(died.map((d) => d.reruns), 'calls', false) },
    ]

    const medMs = (xs: number[]) => `${fmtMs(median(xs))} ms (${fmtMs(Math.min(...xs))}–${fmtMs(Math.max(...xs))})`
    const speedups = (prefix: string) =>
      configs
        .filter((c) => c.name.startsWith(prefix))
        .map((c) => `${c.workers} → ×${(slowRates.get(c.name)! / slowRates.get(configs.find((x) => x.name.startsWith(prefix))!.name)!).toFixed(2)}`)
        .join(', ')
    const last = died.at(-1)
    const block = (stats: PoolStats | undefined, when: string) =>
      stats ? [`${when}:`, ['```', `queued: ${stats.queued}`, ...stats.hosts.map((h) => JSON.stringify(h)), '```'].join('\n')] : [`${when}: not taken (it did not happen during the map).`]
    const statsBlock = [
      ...block(last?.atStop, `\`p.stats()\` in the last run with a death (the stopped host is ${victim.alias}, ${victim.host}), when \`stop()\` resolved`),
      ...block(last?.atDown, 'and on the turn of the event loop after its `hostdown`'),
    ]
    const problems = [...died, ...lived].flatMap((d, i) => d.problems.map((x) => `- ${i < died.length ? `death run ${i + 1}` : `no-death run ${i - died.length + 1}`}: ${x}`))
    return {
      title: 'Many hosts',
      rows: [...tinyRows, ...wideRows, ...slowRows, ...orderRows, ...deathRows],
      notes: [
        `Method (${((performance.now() - started) / 1000).toFixed(0)} s in all): throughput is items per second of \`p.map(fn, items)\` read with \`for await\`, every result checked (value, order, count). Each pool is opened once (local worker processes, or one SSH connection per host with one exec channel per worker; the 3 hosts are 3 sshds on 127.0.0.1, .2 and .3, all on this 2-core machine) and measures, alternating with its anchor: the same calls made with \`await p.run(fn, x)\` in as many lanes as map has items in flight (each lane awaits its call, then takes the next item), results stored in order. Map's default concurrency is the pool's worker count, one call in flight per worker: for the tiny function that measures round trips, so the same is shown with ${WINDOW} in flight. The ${SLOW_MS} ms function awaits a timer (no CPU), so its rate is set by workers × calls in flight, not by cores. Ratio: map ÷ anchor (below 1×: map is slower than the plain loop).`,
        `Scaling of the ${SLOW_MS} ms function with workers (map, default concurrency, over 1 worker): local ${speedups('local')}; SSH one host ${speedups('SSH, 1 host')}; 3 hosts × 1 worker ×${(slowRates.get('SSH, 3 hosts × 1 worker')! / slowRates.get('SSH, 1 host × 1 worker')!).toFixed(2)} over SSH 1 × 1.`,
        `\`ordered: false\`: the anchor is the default (ordered) map on the same pool, alternated. The uneven workload is where order costs: an ordered map cannot pass on what finished behind a slow item, and its window stays full of finished items meanwhile. With even, tiny items, the unordered map pays for racing every item in flight for each result it passes on (\`Promise.race\` over \`concurrency\` pending reads, lib/pool/map.ts).`,
        `Host death: a fresh pool over the 3 hosts for each run (one worker each, all warm), a map of \`{ x, ms: ${DEATH_MS}, attempt }\` items whose function waits and returns \`{ y: 2x, host: context().host, attempt }\`; \`attempt\` is a getter that counts the calls made for its item (it is read once a call, when the item is serialized), so a re-run's result says it is one. When result ${Math.floor(DEATH_ITEMS / 3)} arrives, \`sshd.stop()\` of ${victim.alias} (${victim.host}) is called: SIGTERM to its listener, then SIGKILL to its sessions, which carry the pool's connection (\`stop()\` resolved ${medMs(died.map((d) => d.stopped))} after it was called). Timed from that call: the first \`workerexit\` (${medMs(pick('toExit'))}) or \`hostdown\` (${medMs(pick('toDown'))}) event naming that host; the first result of a second call (from another host; the map is ordered, so it comes behind the items before it); the map's end. \`progress.rerun\` per run: ${died.map((d) => d.reruns).join(', ')}; results of second calls: ${died.map((d) => d.second).join(', ')}. The sshd is restarted between runs; the runs alternate with the same map with no death.`,
        ...statsBlock,
        ...(problems.length ? ['Unexpected:', problems.join('\n')] : ['Every result of every map arrived once, in order.']),
      ],
    }
  } finally {
    await Promise.all(extra.map((s) => s.stop()))
  }
}
