// Figure 1: small items from a remote generator, consumed with `for await`.
// Anchors: gRPC server streaming (protobuf, insecure, loopback) and the
// hand-written baseline over a bare ssh2 exec channel (JSON lines).
import type { Pool } from 'farpipe'
import { grpc, localPool, sshAnchors, sshPool } from './context.ts'
import { measure, pair, perSecond, repeat, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

const N = Number(process.env.FARPIPE_BENCH_ITEMS ?? 1_000_000)
/** gRPC streams ~100k items/s: a rate over fewer items keeps the run short and measures the same. */
const N_GRPC = Math.min(N, 200_000)
type Kind = 'numbers' | 'objects'

async function farpipeDown(p: Pool, kind: Kind): Promise<number> {
  const t0 = performance.now()
  let n = 0
  for await (const _ of p.run(kind === 'numbers' ? b.numbers : b.objects, N)) n++
  if (n !== N) throw new Error(`expected ${N} items, got ${n}`)
  return perSecond(n, t0)
}

export async function run(): Promise<Section> {
  const rows: Row[] = []
  const g = await grpc()
  const a = await sshAnchors()
  for (const kind of ['numbers', 'objects'] as const) {
    const grpcRuns = measure(await repeat(() => g.serverStream(N_GRPC, kind)), 'items/s')
    for (const [where, p] of [['local pool', await localPool()], ['SSH', await sshPool()]] as const) {
      const [mine, json] = await pair(() => farpipeDown(p, kind), () => a.jsonLinesDown(N, kind))
      const figure = `${(N / 1e6).toFixed(0)}M ${kind}, ${where}`
      rows.push({ figure, farpipe: measure(mine, 'items/s'), anchor: { name: 'gRPC server streaming', measure: grpcRuns }, target: { text: '≥ 3×', holds: (r) => r >= 3 } })
      rows.push({ figure, farpipe: measure(mine, 'items/s'), anchor: { name: 'JSON lines over bare ssh2', measure: measure(json, 'items/s') }, target: { text: '≥ 0.5×', holds: (r) => r >= 0.5 } })
    }
  }
  return {
    title: '1. Small items from a remote generator (`for await`)',
    rows,
    notes: [
      `Numbers are the integers 0..${N - 1}; objects are \`{ i, name: 'item' + i, ok: true }\`. farpipe runs one worker and alternates runs with the JSON-lines baseline; gRPC streams ${N_GRPC} items a run (a rate; its slowness would otherwise dominate the bench's time); the JSON-lines baseline writes newline-delimited JSON in large writes on the remote and the caller splits lines and \`JSON.parse\`s each.`,
    ],
  }
}
