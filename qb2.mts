// interleaved: break vs tiny call, and async vs sync rates, alternated per sample
import { pool } from 'farpipe'
import * as u from './bench/user-tasks.ts'
const p = await pool({ workers: 1, ...(process.env.QB_HOSTS ? { hosts: [process.env.QB_HOSTS] } : {}) })
const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!
const b: number[] = [], t: number[] = []
for (let i = 0; i < 400; i++) {
  const it = p.run(u.endless)[Symbol.asyncIterator](); await it.next(); let t0 = performance.now(); await it.return!(); b.push(performance.now() - t0)
  t0 = performance.now(); await p.run(u.noop); t.push(performance.now() - t0)
}
console.log('break p50', (med(b) * 1000).toFixed(0), 'µs; tiny p50', (med(t) * 1000).toFixed(0), 'µs; ratio', (med(b) / med(t)).toFixed(2))
if (process.env.QB_RATES) {
  const N = 200_000
  async function rate(fn: any) { const t0 = performance.now(); for await (const _ of p.run(fn, N)); return N / ((performance.now() - t0) / 1000) }
  for (const [name, a, s] of [['numbers', u.asyncNumbers, u.numbers], ['objects', u.asyncObjects, u.objects]] as const) {
    const ra: number[] = [], rs: number[] = []
    for (let i = 0; i < 9; i++) { ra.push(await rate(a)); rs.push(await rate(s)) }
    console.log(name, 'async/sync', (med(ra) / med(rs)).toFixed(2), `(${(med(ra) / 1e6).toFixed(2)} / ${(med(rs) / 1e6).toFixed(2)} M/s)`)
  }
}
await p.close()
