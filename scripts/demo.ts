// The demo: the streaming examples of DESIGN.md on the embedded local
// pool (worker processes on this machine), each result printed as it arrives.
import { input, pool } from 'farpipe'
import { fileURLToPath } from 'node:url'
import { files, fibonacci, movingAverage, runningMean } from '../examples/tasks.ts'

const t0 = performance.now()
const ms = () => `${(performance.now() - t0).toFixed(0).padStart(5)} ms`

await using p = await pool()
console.log(`${ms()}  pool open: ${p.size} local worker processes`)

console.log(`\nOutput streaming: the first 10 Fibonacci numbers, yielded remotely`)
for await (const x of p.run(fibonacci, 10)) console.log(`${ms()}  fibonacci → ${x}`)

console.log(`\nInput streaming: the running mean of 1..5, sent as an iterator`)
const means = await p.run(runningMean, [1, 2, 3, 4, 5].values())
console.log(`${ms()}  runningMean → ${JSON.stringify(means)}`)

console.log(`\nBoth ways: a moving average (window 3) of 1..6 as a pipeThrough stage`)
await ReadableStream.from([1, 2, 3, 4, 5, 6])
  .pipeThrough(p.run(movingAverage, input, 3))
  .pipeTo(new WritableStream({ write: (v) => console.log(`${ms()}  movingAverage → ${v}`) }))

console.log(`\nStreams inside values: the files at the top of this repository, each with its body as a stream (read for .md and .json files)`)
for await (const { name, body } of p.run(files, fileURLToPath(new URL('..', import.meta.url)))) {
  if (!/\.(md|json)$/.test(name)) {
    await body.cancel() // not wanted: the file on the worker's side is closed unread
    continue
  }
  let lines = 0
  for await (const chunk of body) for (const byte of chunk) if (byte === 10) lines++
  console.log(`${ms()}  files → ${name}: ${lines} lines`)
}

console.log(`\n${ms()}  done`)
