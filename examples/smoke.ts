import { pool, input } from 'farpipe'
import { fibonacci, runningMean, movingAverage, slowCount } from './tasks.ts'
const t0 = performance.now()
await using p = await pool()
console.log('pool', performance.now() - t0)
for await (const x of p.run(fibonacci, 10)) console.log(x, performance.now() - t0)
const means = await p.run(runningMean, [1, 2, 3].values())
console.log(means)
await ReadableStream.from([1, 2, 3, 4, 5, 6]).pipeThrough(p.run(movingAverage, input, 3)).pipeTo(new WritableStream({ write: (v) => console.log(v) }))
let n = 0
for await (const x of p.run(slowCount)) { if (++n > 5) break }
console.log('done', performance.now() - t0)
