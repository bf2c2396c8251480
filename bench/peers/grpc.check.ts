// Runs the gRPC anchor on its own and prints its numbers, with the channel
// options the benchmarks use and once without the retry-buffer option, to
// show what that option is worth. The process must exit by itself.
//
//   cd /work/main && node --import tsx bench/peers/grpc.check.ts
import { CHANNEL_OPTIONS, startGrpcWith, type GrpcPeer, type ItemKind } from './grpc.ts'

const N = 200_000
/**
 * Without the retry-buffer option client and bidi streaming crawl (~5k/s);
 * fewer items keep the check short. Client streaming of numbers only falls
 * off the cliff once its 256 KiB retry buffer fills: at this n it may still
 * look fast, at n=200000 it ran at ~4k/s.
 */
const N_SLOW = 50_000
const CALLS = 2000
const RUNS = 3
const KINDS: ItemKind[] = ['numbers', 'objects']

const k = (x: number) => `${(x / 1000).toFixed(1).padStart(6)}k/s`
const us = ({ p50, p99 }: { p50: number; p99: number }) => `p50 ${p50.toFixed(0).padStart(5)} µs   p99 ${p99.toFixed(0).padStart(5)} µs`

async function streams(peer: GrpcPeer, n: number, runs: number): Promise<void> {
  for (const method of ['serverStream', 'clientStream', 'bidi'] as const) {
    for (const kind of KINDS) {
      const rates: number[] = []
      for (let r = 0; r < runs; r++) rates.push(await peer[method](n, kind))
      console.log(`  ${method.padEnd(12)} ${kind.padEnd(7)} n=${n}: ${rates.map(k).join('  ')}   best ${k(Math.max(...rates))}`)
    }
  }
}

console.log(`gRPC (@grpc/grpc-js), channel options ${JSON.stringify(CHANNEL_OPTIONS)}`)
const peer = await startGrpcWith(CHANNEL_OPTIONS)
try {
  await streams(peer, N, RUNS)
  for (let r = 0; r < RUNS; r++) console.log(`  unary        calls=${CALLS}: ${us(await peer.unary(CALLS))}`)
  for (let r = 0; r < RUNS; r++) console.log(`  firstMessage calls=${CALLS}: ${us(await peer.firstMessage(CALLS))}`)
  for (const stallMs of [200, 1000]) console.log(`  stalledLead  stall ${stallMs} ms: ${await peer.stalledLead(stallMs)} items`)
} finally {
  await peer.close()
}

const { 'grpc.per_rpc_retry_buffer_size': _, ...withoutRetryBuffer } = CHANNEL_OPTIONS
console.log(`\nwithout grpc.per_rpc_retry_buffer_size: ${JSON.stringify(withoutRetryBuffer)}`)
const slow = await startGrpcWith(withoutRetryBuffer)
try {
  await streams(slow, N_SLOW, 1)
} finally {
  await slow.close()
}
