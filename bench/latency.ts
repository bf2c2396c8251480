// Figure 4: latency. Warm: time to first item of a generator and the round
// trip of a tiny non-generator call (p50, p99 over many calls), next to gRPC
// unary and time to first message on a warm channel. Cold: pool() open to
// first item, locally and over SSH, with the bundle cached on the host and not.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import type { Pool, PoolOptions } from 'farpipe'
import { grpc, localPool, sshd, sshPool } from './context.ts'
import { coldStart, measure, percentile, repeat, RUNS, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

const CALLS = Number(process.env.FARPIPE_BENCH_CALLS ?? 10_000)

async function samples(fn: () => Promise<unknown>, calls: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now()
    await fn()
    out.push((performance.now() - t0) * 1000)
  }
  return out
}

/** Microseconds from the call to its first item; the call is then left (which cancels it), untimed. */
async function firstItem(p: Pool): Promise<number> {
  const t0 = performance.now()
  const call = p.run(b.one)
  let us = 0
  for await (const _ of call) {
    us = (performance.now() - t0) * 1000
    break
  }
  return us
}

const cold = (options: PoolOptions) => coldStart(options, b.one)

export async function run(): Promise<Section> {
  const g = await grpc()
  const rows: Row[] = []
  const pools = [['local pool', await localPool()], ['SSH', await sshPool()]] as const
  const p50 = (s: number[]) => percentile(s, 50)
  const p99 = (s: number[]) => percentile(s, 99)
  // Each run is a batch of CALLS calls; its p50 and p99 are the run's figures.
  // Runs alternate between gRPC and farpipe, so that whatever else the
  // machine does at the time weighs on both alike.
  const grpcUnary: number[] = []
  const grpcFirst: number[] = []
  const tiny = pools.map((): number[][] => [])
  const first = pools.map((): number[][] => [])
  await g.unary(CALLS)
  for (let r = 0; r < RUNS; r++) {
    grpcUnary.push((await g.unary(CALLS)).p50)
    grpcFirst.push((await g.firstMessage(CALLS)).p50)
    for (const [i, [, p]] of pools.entries()) {
      tiny[i]!.push(await samples(() => p.run(b.noop) as PromiseLike<number> as Promise<number>, CALLS))
      const f: number[] = []
      for (let c = 0; c < CALLS; c++) f.push(await firstItem(p))
      first[i]!.push(f)
    }
  }
  const unary = { name: 'gRPC unary p50', measure: measure(grpcUnary, 'µs', false) }
  const lowerThanUnary = { text: '< 1× (below gRPC unary p50)', holds: (r: number) => r < 1 }
  const firstMessage = { name: 'gRPC first message p50', measure: measure(grpcFirst, 'µs', false) }
  for (const [i, [where]] of pools.entries()) {
    const firstP50 = measure(first[i]!.map(p50), 'µs', false)
    rows.push({ figure: `tiny call round trip p50, ${where}`, farpipe: measure(tiny[i]!.map(p50), 'µs', false), anchor: unary, target: lowerThanUnary })
    rows.push({ figure: `tiny call round trip p99, ${where}`, farpipe: measure(tiny[i]!.map(p99), 'µs', false) })
    rows.push({ figure: `time to first item p50, ${where}`, farpipe: firstP50, anchor: unary, target: lowerThanUnary })
    rows.push({ figure: `time to first item p50, ${where}`, farpipe: firstP50, anchor: firstMessage })
    rows.push({ figure: `time to first item p99, ${where}`, farpipe: measure(first[i]!.map(p99), 'µs', false) })
  }
  const host = (await sshd()).alias
  const fresh = () => mkdtempSync(path.join(tmpdir(), 'farpipe-cold-'))
  const cached = fresh()
  await cold({ hosts: [host], cacheDir: cached })
  rows.push({ figure: 'cold: pool() to first item, local (default workers)', farpipe: measure(await repeat(() => cold({ cacheDir: cached }), 5, 0), 'ms', false) })
  rows.push({ figure: 'cold: pool() to first item, SSH, bundles cached on the host', farpipe: measure(await repeat(() => cold({ hosts: [host], cacheDir: cached }), 5, 0), 'ms', false) })
  rows.push({ figure: 'cold: pool() to first item, SSH, nothing cached (uploads)', farpipe: measure(await repeat(() => cold({ hosts: [host], cacheDir: fresh() }), 5, 0), 'ms', false) })
  return {
    title: '4. Latency',
    rows,
    notes: [
      `Warm: ${CALLS} sequential calls per run on a pool with one worker; runs alternate with gRPC's. Tiny call: \`await p.run(noop)\`. First item: from starting a generator call to its first item (the \`break\` that follows, which cancels it, is not timed; gRPC's first message is from a one-item stream the server ends, as cancelling thousands of gRPC streams trips HTTP/2 reset protection). Cold: \`pool()\` with the default number of workers, then the first item of a generator; the local pool starts processes; over SSH it connects, probes, and uploads what is missing.`,
    ],
  }
}
