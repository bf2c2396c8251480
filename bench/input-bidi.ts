// Figure 2: the same items streamed in (client streaming) and echoed
// (bidirectional). Anchor: gRPC client streaming and bidi.
import type { Pool } from 'farpipe'
import { grpc, localPool, sshPool } from './context.ts'
import { measure, perSecond, repeat, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

const N = Number(process.env.FARPIPE_BENCH_ITEMS ?? 1_000_000)
const N_GRPC = Math.min(N, 200_000)
type Kind = 'numbers' | 'objects'

function* items(kind: Kind): Generator<number | { i: number; name: string; ok: boolean }> {
  if (kind === 'numbers') for (let i = 0; i < N; i++) yield i
  else for (let i = 0; i < N; i++) yield { i, name: 'item' + i, ok: true }
}

async function up(p: Pool, kind: Kind): Promise<number> {
  const t0 = performance.now()
  const n = await p.run(b.count, items(kind))
  if (n !== N) throw new Error(`expected ${N} items, got ${n}`)
  return perSecond(n, t0)
}

async function bidi(p: Pool, kind: Kind): Promise<number> {
  const t0 = performance.now()
  let n = 0
  for await (const _ of p.run(b.echo, items(kind))) n++
  if (n !== N) throw new Error(`expected ${N} items, got ${n}`)
  return perSecond(n, t0)
}

export async function run(): Promise<Section> {
  const rows: Row[] = []
  const g = await grpc()
  for (const kind of ['numbers', 'objects'] as const) {
    const grpcUp = measure(await repeat(() => g.clientStream(N_GRPC, kind)), 'items/s')
    const grpcBidi = measure(await repeat(() => g.bidi(N_GRPC, kind)), 'items/s')
    for (const [where, p] of [['local pool', await localPool()], ['SSH', await sshPool()]] as const) {
      rows.push({ figure: `${(N / 1e6).toFixed(0)}M ${kind} in, ${where}`, farpipe: measure(await repeat(() => up(p, kind)), 'items/s'), anchor: { name: 'gRPC client streaming', measure: grpcUp } })
      rows.push({ figure: `${(N / 1e6).toFixed(0)}M ${kind} echoed, ${where}`, farpipe: measure(await repeat(() => bidi(p, kind)), 'items/s'), anchor: { name: 'gRPC bidi', measure: grpcBidi } })
    }
  }
  return {
    title: '2. Input and bidirectional streaming',
    rows,
    notes: [`In: a local generator streamed to a remote function that counts. Echoed: the remote yields back each item it reads; items/s counts items one way. gRPC streams ${N_GRPC} items a run (a rate).`],
  }
}
