// Figure 5: memory. Peak RSS growth of the caller and of the worker while
// 10 GiB flows through a bidirectional call whose consumer is slow; and how
// far a producer runs ahead of a consumer that stalls, next to gRPC.
import { callDefaults } from '../lib/options.ts'
import type { Pool } from 'farpipe'
import { grpc, localPool, sshPool } from './context.ts'
import { measure, repeat, resetPeak, rssOf, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

const BYTES = Number(process.env.FARPIPE_BENCH_MEMORY_BYTES ?? 10 * 2 ** 30)
const CHUNK = 64 * 1024
const MiB = 1048576
const STALL_MS = 500
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** One transfer; returns the peak RSS growth (bytes) of the caller and of the worker. */
async function transfer(p: Pool): Promise<{ caller: number; worker: number }> {
  const workerPid = (await p.run(b.pid)) as number
  global.gc?.()
  await sleep(50)
  const callerBase = rssOf(process.pid).rss
  const workerBase = rssOf(workerPid).rss
  const canReset = resetPeak(process.pid) && resetPeak(workerPid)
  let callerPeak = callerBase
  let workerPeak = workerBase
  const sampler = setInterval(() => {
    callerPeak = Math.max(callerPeak, rssOf(process.pid).rss)
    workerPeak = Math.max(workerPeak, rssOf(workerPid).rss)
  }, 20)
  const chunk = new Uint8Array(CHUNK)
  function* source() {
    for (let sent = 0; sent < BYTES; sent += CHUNK) yield chunk
  }
  let got = 0
  let k = 0
  for await (const c of p.run(b.echo, source())) {
    got += (c as Uint8Array).byteLength
    // The slow consumer: a millisecond's pause every 512 KiB (at most ~500 MiB/s).
    if (++k % 8 === 0) await sleep(1)
  }
  clearInterval(sampler)
  if (got !== BYTES) throw new Error(`expected ${BYTES} bytes back, got ${got}`)
  if (canReset) {
    callerPeak = Math.max(callerPeak, rssOf(process.pid).peak)
    workerPeak = Math.max(workerPeak, rssOf(workerPid).peak)
  }
  return { caller: callerPeak - callerBase, worker: workerPeak - workerBase }
}

async function lead(p: Pool): Promise<number> {
  const call = p.run(b.counted)
  const it = call[Symbol.asyncIterator]()
  for (let i = 0; i < 3; i++) await it.next()
  await sleep(STALL_MS)
  const produced = await p.run(b.producedCount)
  await call.cancel()
  return produced - 3
}

export async function run(): Promise<Section> {
  const rows: Row[] = []
  const g = await grpc()
  const under64 = { text: '< 64 MiB', holds: (_: number, v: number) => v < 64 }
  const gib = `${(BYTES / 2 ** 30).toFixed(BYTES % 2 ** 30 ? 2 : 0)} GiB`
  for (const [where, p] of [['local pool', await localPool()], ['SSH', await sshPool()]] as const) {
    const runs: { caller: number; worker: number }[] = []
    await repeat(async () => {
      runs.push(await transfer(p))
      return 0
    }, Number(process.env.FARPIPE_BENCH_MEMORY_RUNS ?? 5), 0)
    rows.push({ figure: `${gib} echoed, slow consumer, ${where}: caller peak RSS growth`, farpipe: measure(runs.map((r) => r.caller / MiB), 'MiB', false), target: under64 })
    rows.push({ figure: `${gib} echoed, slow consumer, ${where}: worker peak RSS growth`, farpipe: measure(runs.map((r) => r.worker / MiB), 'MiB', false), target: under64 })
  }
  const grpcLead = measure(await repeat(async () => (await g.stalledLead(STALL_MS)) - 3, 5, 0), 'items', false)
  const bound = callDefaults.highWaterMark + 1024
  for (const [where, p] of [['local pool', await localPool()], ['SSH', await sshPool()]] as const) {
    rows.push({
      figure: `producer lead over a consumer that took 3 items and stalled, ${where}`,
      farpipe: measure(await repeat(() => lead(p), 5, 0), 'items', false),
      anchor: { name: 'gRPC server streaming, stalled client', measure: grpcLead },
      target: { text: `≤ hwm + one batch (${bound})`, holds: (_: number, v: number) => v <= bound },
    })
  }
  return {
    title: '5. Memory and backpressure',
    rows,
    notes: [
      `Peak RSS growth: the process's peak RSS during the transfer minus its RSS just before (sampled every 20 ms and from /proc VmHWM after resetting it). The caller streams ${gib} of 64 KiB chunks to a remote echo and reads them back with a pause of 1 ms every 512 KiB. Lead: small objects, default highWaterMark (${callDefaults.highWaterMark}); a batch is at most 1024 items.`,
    ],
  }
}
