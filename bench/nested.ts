// Streams nested in values: the bytes of files yielded as `{ name, body }`
// items, each body its own sub-stream with its own credit, against the same
// bytes yielded as top-level items of one call, in the same run (alternated).
import type { Pool } from 'farpipe'
import { localPool, sshPool } from './context.ts'
import { measure, mibps, pair, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'
import { down as topLevel } from './bulk-bytes.ts'

const BYTES = Number(process.env.FARPIPE_BENCH_NESTED_BYTES ?? 512 * 2 ** 20)
const CHUNK = 64 * 1024
const FILES = 16

/** Every file's body read in turn, after its item arrived: MiB/s of `total` bytes in `files` bodies. */
export async function nested(p: Pool, files = FILES, total = BYTES): Promise<number> {
  const t0 = performance.now()
  let n = 0
  for await (const f of p.run(b.bodies, files, total / files, CHUNK)) {
    for await (const c of f.body) n += c.byteLength
  }
  if (n !== total) throw new Error(`expected ${total} bytes, got ${n}`)
  return mibps(n, t0)
}

export async function run(): Promise<Section> {
  const rows: Row[] = []
  const mib = `${(BYTES / 2 ** 20).toFixed(0)} MiB`
  for (const [where, open] of [['SSH', sshPool], ['local pool', localPool]] as const) {
    const p = await open()
    const [fp, top] = await pair(() => nested(p), () => topLevel(p, BYTES))
    rows.push({ figure: `${mib} as ${FILES} nested bodies, ${where}`, farpipe: measure(fp, 'MiB/s'), anchor: { name: 'the same bytes as top-level yields', measure: measure(top, 'MiB/s') } })
    const [many, top2] = await pair(() => nested(p, 512), () => topLevel(p, BYTES))
    rows.push({ figure: `${mib} as 512 nested bodies of 1 MiB, ${where}`, farpipe: measure(many, 'MiB/s'), anchor: { name: 'the same bytes as top-level yields', measure: measure(top2, 'MiB/s') } })
  }
  return {
    title: 'Streams nested in values (file bodies)',
    rows,
    notes: [
      `A remote \`async function*\` yields \`{ name, body }\` items whose bodies are ReadableStreams of 64 KiB chunks; the caller reads each body to its end before taking the next item. The anchor yields the same chunks as the items of one call. A body starts with a 64 KiB window and gets its whole window (highWaterBytes, 8 MiB) at its first read, so each new body costs about one round trip before it flows at full speed.`,
    ],
  }
}
