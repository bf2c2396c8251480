// The speed of the code users write (issue 13): `async function*`
// producers, `for await` consumers that `break`, `pipeThrough` chains, and
// the latency figures around them (first item of an endless producer,
// tails, cold start). Every ratio is between runs alternated in this run.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { input, type Pool, type PoolOptions } from 'farpipe'
import { cacheDir, localPool, sshAnchors, sshd, sshPool } from './context.ts'
import { coldStart, measure, median, pair, percentile, perSecond, RUNS, type Row, type Section } from './lib.ts'
import * as b from './user-tasks.ts'

/** Items a throughput run streams (a rate: fewer than small-items' million keeps this bench to minutes). */
const N = Number(process.env.FARPIPE_BENCH_USER_ITEMS ?? 300_000)
/** Items through a pipeline run. */
const N_CHAIN = Math.min(N, 100_000)
/** Samples of each latency per run. */
const SAMPLES = Number(process.env.FARPIPE_BENCH_USER_SAMPLES ?? 500)
/** Breaks in a row. */
const BREAKS = 2000

type Obj = { i: number; name: string; ok: boolean }

async function down(p: Pool, fn: typeof b.numbers | typeof b.asyncNumbers | typeof b.objects | typeof b.asyncObjects): Promise<number> {
  const t0 = performance.now()
  let n = 0
  for await (const _ of p.run(fn, N)) n++
  if (n !== N) throw new Error(`expected ${N} items, got ${n}`)
  return perSecond(n, t0)
}

function* source(n: number): Generator<Obj> {
  for (let i = 0; i < n; i++) yield { i, name: 'item' + i, ok: true }
}

async function chain(p: Pool, stages: number): Promise<number> {
  const t0 = performance.now()
  let s: ReadableStream<Obj> = ReadableStream.from(source(N_CHAIN))
  for (let k = 0; k < stages; k++) s = s.pipeThrough(p.run(b.stage, input))
  let n = 0
  for await (const _ of s) n++
  if (n !== N_CHAIN) throw new Error(`expected ${N_CHAIN} items, got ${n}`)
  return perSecond(n, t0)
}

/** µs from the call to its first item (the break that follows is not timed). */
async function firstItem(p: Pool, fn: typeof b.one | typeof b.endless): Promise<number> {
  const t0 = performance.now()
  let us = 0
  for await (const _ of p.run(fn)) {
    us = (performance.now() - t0) * 1000
    break
  }
  return us
}

/** µs the `break` out of an endless fast producer takes (from its first item to the loop's end). */
async function breakOut(p: Pool): Promise<number> {
  let t0 = 0
  for await (const _ of p.run(b.endless)) {
    t0 = performance.now()
    break
  }
  return (performance.now() - t0) * 1000
}

async function tiny(p: Pool): Promise<number> {
  const t0 = performance.now()
  await p.run(b.noop)
  return (performance.now() - t0) * 1000
}

/** Alternates two samplers `SAMPLES` times and returns their samples. */
async function samplePair(a: () => Promise<number>, c: () => Promise<number>, n = SAMPLES): Promise<[number[], number[]]> {
  const as: number[] = []
  const cs: number[] = []
  for (let i = 0; i < n; i++) {
    as.push(await a())
    cs.push(await c())
  }
  return [as, cs]
}

const cold = (options: PoolOptions) => coldStart(options, b.one)

export async function run(): Promise<Section> {
  const rows: Row[] = []
  const ips = (v: number[]) => measure(v, 'items/s')
  const us = (v: number[]) => measure(v, 'µs', false)
  const pools = [['local', await localPool()], ['SSH', await sshPool()]] as const
  const a = await sshAnchors()
  const atLeast = (x: number) => ({ text: `≥ ${x}×`, holds: (r: number) => r >= x })
  const atMost = (x: number) => ({ text: `≤ ${x}×`, holds: (r: number) => r <= x })

  // Throughput: async function* against the same function*.
  for (const [where, p] of pools) {
    const [an, sn] = await pair(() => down(p, b.asyncNumbers), () => down(p, b.numbers))
    rows.push({ figure: `${N / 1000}k numbers, \`async function*\`, ${where}`, farpipe: ips(an), anchor: { name: '`function*`', measure: ips(sn) }, target: atLeast(0.7) })
    const [ao, so] = await pair(() => down(p, b.asyncObjects), () => down(p, b.objects))
    rows.push({ figure: `${N / 1000}k objects, \`async function*\`, ${where}`, farpipe: ips(ao), anchor: { name: '`function*`', measure: ips(so) }, target: atLeast(0.7) })
  }
  {
    const [ao, json] = await pair(() => down(pools[1][1], b.asyncObjects), () => a.jsonLinesDown(N, 'objects'))
    rows.push({ figure: `${N / 1000}k objects, \`async function*\`, SSH`, farpipe: ips(ao), anchor: { name: 'JSON lines over bare ssh2', measure: ips(json) }, target: atLeast(0.5) })
  }
  // Pipelines: three remote stages against one.
  for (const [where, p] of pools) {
    const [three, one] = await pair(() => chain(p, 3), () => chain(p, 1))
    rows.push({ figure: `${N_CHAIN / 1000}k objects through 3 remote stages, ${where}`, farpipe: ips(three), anchor: { name: '1 stage', measure: ips(one) }, target: atLeast(0.5) })
  }
  // Latency: each run alternates SAMPLES of each; a run's figure is its median (or p99).
  for (const [where, p] of pools) {
    const firstEndless: number[] = [], firstOne: number[] = [], firstOneP99: number[] = []
    const brk: number[] = [], tinyP50: number[] = [], tinyP99: number[] = []
    await samplePair(() => firstItem(p, b.endless), () => firstItem(p, b.one), 50)
    for (let r = 0; r < RUNS; r++) {
      const [e, o] = await samplePair(() => firstItem(p, b.endless), () => firstItem(p, b.one))
      firstEndless.push(median(e))
      firstOne.push(median(o))
      firstOneP99.push(percentile(o, 99))
      const [k, t] = await samplePair(() => breakOut(p), () => tiny(p))
      brk.push(median(k))
      tinyP50.push(median(t))
      tinyP99.push(percentile(t, 99))
    }
    rows.push({ figure: `first item of an endless fast \`async function*\`, p50, ${where}`, farpipe: us(firstEndless), anchor: { name: 'one-item generator p50', measure: us(firstOne) }, target: atMost(1.5) })
    rows.push({ figure: `\`break\` out of an endless fast \`async function*\`, p50, ${where}`, farpipe: us(brk), anchor: { name: 'tiny call round trip p50', measure: us(tinyP50) }, target: atMost(2) })
    rows.push({ figure: `tiny call round trip p99, ${where}`, farpipe: us(tinyP99), anchor: { name: 'its p50', measure: us(tinyP50) }, target: atMost(3) })
    rows.push({ figure: `first item (one-item generator) p99, ${where}`, farpipe: us(firstOneP99), anchor: { name: 'its p50', measure: us(firstOne) }, target: atMost(3) })
  }
  {
    const p = pools[0][1]
    const runs: number[] = [], anchors: number[] = []
    const breaks = async () => {
      const t0 = performance.now()
      for (let i = 0; i < BREAKS; i++) for await (const _ of p.run(b.endless)) break
      return performance.now() - t0
    }
    const tinies = async () => {
      const t0 = performance.now()
      for (let i = 0; i < BREAKS; i++) await p.run(b.noop)
      return performance.now() - t0
    }
    const [k, t] = await pair(breaks, tinies, Math.min(RUNS, 3))
    runs.push(...k)
    anchors.push(...t)
    // Each of these is a call (a round trip to its first item) and a break (at most 2 round trips by the target above): 3 tiny calls' worth.
    rows.push({ figure: `${BREAKS} calls in a row, each broken out of after its first item, local`, farpipe: measure(runs, 'ms', false), anchor: { name: `${BREAKS} tiny calls in a row`, measure: measure(anchors, 'ms', false) }, target: atMost(3) })
  }
  // Cold start: pool() to the first item, default workers; bundles cached on the host.
  const host = (await sshd()).alias
  const cached = await cacheDir()
  await cold({ cacheDir: cached })
  await cold({ hosts: [host], cacheDir: cached })
  const [cl, cs] = await pair(() => cold({ cacheDir: cached }), () => cold({ hosts: [host], cacheDir: cached }))
  rows.push({ figure: 'cold: `pool()` to first item, local (default workers)', farpipe: measure(cl, 'ms', false) })
  rows.push({ figure: 'cold: `pool()` to first item, SSH, bundles cached (default workers)', farpipe: measure(cs, 'ms', false) })
  const fresh = () => mkdtempSync(path.join(tmpdir(), 'farpipe-cold-'))
  const [cu] = await pair(() => cold({ hosts: [host], cacheDir: fresh() }), async () => 0, 3)
  rows.push({ figure: 'cold: `pool()` to first item, SSH, nothing cached (uploads)', farpipe: measure(cu, 'ms', false) })
  return {
    title: '6. The code users write',
    rows,
    notes: [
      `One worker per pool for the warm figures. Throughput: ${N} items a run, \`for await\` over \`p.run(fn, N)\`, the \`async function*\` alternated with the same \`function*\` (numbers 0..N-1; objects \`{ i, name: 'item' + i, ok: true }\`), and over SSH with the hand-written JSON-lines baseline of section 1. Pipelines: ${N_CHAIN} objects from a local \`ReadableStream.from(generator)\` through \`pipeThrough(p.run(stage, input))\` three times (three calls on the one worker) against once. Latency: ${SAMPLES} samples of each figure per run, alternated; a run's figure is the median (p99) of its samples, the table shows the median of ${RUNS} runs. The endless producer is \`async function* () { for (let i = 0; ; i++) yield { i, name: 'item' + i, ok: true } }\`; its first item is timed from \`run()\`, its \`break\` from the first item to the end of the \`for await\` (which waits for the worker to confirm that the generator's \`finally\` ran). Cold start: \`pool()\` with the default number of workers (${'`os.availableParallelism()`'}) then the first item of a one-item generator, local and SSH alternated; bundles cached on the host except in the last row.`,
    ],
  }
}
