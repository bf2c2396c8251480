// quick alternated local (and SSH if QB_SSH) bench: async vs sync, numbers/objects, break vs tiny call
import { pool } from 'farpipe'
import * as u from './bench/user-tasks.ts'
const N = 300_000
const p = await pool({ workers: 1, ...(process.env.QB_HOSTS ? { hosts: [process.env.QB_HOSTS] } : {}) })
async function rate(fn: any) { const t0 = performance.now(); let n = 0; for await (const _ of p.run(fn, N)) n++; return N / ((performance.now() - t0) / 1000) }
async function brk() { const t: number[] = []; for (let i = 0; i < 200; i++) { const it = p.run(u.endless)[Symbol.asyncIterator](); await it.next(); const t0 = performance.now(); await it.return!(); t.push(performance.now() - t0) } t.sort((a, b) => a - b); return t[100]! }
async function tiny() { const t: number[] = []; for (let i = 0; i < 200; i++) { const t0 = performance.now(); await p.run(u.noop); t.push(performance.now() - t0) } t.sort((a, b) => a - b); return t[100]! }
const med = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1]!
for (const [name, a, b] of [['numbers', u.asyncNumbers, u.numbers], ['objects', u.asyncObjects, u.objects]] as const) {
  const ra: number[] = [], rb: number[] = []
  for (let i = 0; i < 5; i++) { ra.push(await rate(a)); rb.push(await rate(b)) }
  console.log(name, 'async', (med(ra) / 1e6).toFixed(2), 'M/s sync', (med(rb) / 1e6).toFixed(2), 'M/s ratio', (med(ra) / med(rb)).toFixed(2))
}
const bs: number[] = [], ts: number[] = []
for (let i = 0; i < 3; i++) { bs.push(await brk()); ts.push(await tiny()) }
console.log('break p50', (med(bs) * 1000).toFixed(0), 'µs tiny', (med(ts) * 1000).toFixed(0), 'µs ratio', (med(bs) / med(ts)).toFixed(2))
await p.close()
