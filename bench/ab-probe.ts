// One run of the A/B probe (bench/ab.mjs runs it in two checkouts, alternated):
// items/s on the local pool; bytes down and up, and the latency of a small
// call, on the local pool and over SSH (the bench sshd). Prints one JSON line.
import { pool } from 'farpipe'
import * as b from './tasks.ts'
import { sshd, stopAll, cacheDir } from './context.ts'
const MiB = 2 ** 20
const out: Record<string, number> = {}
async function measure(p: Awaited<ReturnType<typeof pool>>, tag: string) {
  // items
  if (tag === 'local') {
    let n = 0
    const t0 = performance.now()
    for await (const _ of p.run(b.numbers, 1_000_000)) n++
    out[`${tag}.items/s`] = Math.round(n / ((performance.now() - t0) / 1000))
  }
  // bytes down
  let got = 0
  let t0 = performance.now()
  const total = 512 * MiB
  for await (const c of p.run(b.bytes, total, 65536)) got += c.byteLength
  out[`${tag}.down MiB/s`] = Math.round(got / MiB / ((performance.now() - t0) / 1000))
  // bytes up
  const chunk = new Uint8Array(65536)
  async function* up() { for (let s = 0; s < total; s += chunk.byteLength) yield chunk }
  t0 = performance.now()
  await p.run(b.sink, up())
  out[`${tag}.up MiB/s`] = Math.round(total / MiB / ((performance.now() - t0) / 1000))
  // latency
  const N = 3000
  // Warm: the first calls pay for the bundle and the JIT.
  for (let i = 0; i < 300; i++) await p.run(b.add, i, 1)
  t0 = performance.now()
  for (let i = 0; i < N; i++) await p.run(b.add, i, 1)
  out[`${tag}.latency µs`] = Math.round(((performance.now() - t0) * 1000) / N)
}
const local = await pool({ workers: 1, cacheDir: await cacheDir() })
await local.run(b.noop)
await measure(local, 'local')
await local.close()
const s = await sshd()
const remote = await pool({ hosts: [s.alias], workers: 1, cacheDir: await cacheDir() })
await remote.run(b.noop)
await measure(remote, 'ssh')
await remote.close()
await stopAll()
console.log(JSON.stringify(out))
