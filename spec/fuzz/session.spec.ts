// The caller's session against a worker that answers a call with random
// frames: random kinds, call ids and stream ids near the real ones, random
// payloads and well-formed ones (items, end, error, credit) in random order,
// then a closed channel. Whatever arrives, the call settles (never hangs),
// fails only with farpipe's own errors, and nothing escapes as an uncaught
// exception or unhandled rejection (helpers.ts turns those into failures).
import { suite } from 'uvu'
import fc from 'fast-check'
import '../helpers.ts'
import { FarpipeError, pool, type Channel, type Transport, type TransportEvents } from 'farpipe'
import { valueBytes } from '../../lib/codec/values.ts'
import { encodeFrame, FrameDecoder, Kind, PROTOCOL_VERSION } from '../../lib/wire/frame.ts'
import { payloads } from '../../lib/wire/payloads.ts'
import * as t from '../fixtures/tasks.ts'
import { hasProtoKey, RUNS } from './arbitraries.ts'

/** What the fake worker sends once a call arrives, given the call's id. */
type Script = (id: number) => Uint8Array[]

/** A transport whose one worker says hello and answers each call with its script, then closes. */
class ScriptedTransport implements Transport {
  readonly host = 'fuzz'
  readonly up = true
  constructor(private readonly script: Script) {}
  async connect(): Promise<number> {
    return 1
  }
  async open(_index: number, events: TransportEvents): Promise<Channel> {
    const decoder = new FrameDecoder()
    let open = true
    const deliver = (chunks: Uint8Array[], close: boolean) =>
      setImmediate(() => {
        for (const c of chunks) if (open) events.data(c)
        if (close && open) {
          open = false
          events.close()
        }
      })
    return {
      write: (chunk) => {
        for (const f of decoder.decode(chunk)) {
          if (f.kind === Kind.hello) {
            deliver([encodeFrame(Kind.hello, 0, 0, payloads.json({ v: PROTOCOL_VERSION, node: 'v20', pid: 1, platform: 'linux', arch: 'x64', cacheDir: '/x' }))], false)
          } else if (f.kind === Kind.call) {
            deliver(this.script(f.call), true)
          }
        }
      },
      end: () => deliver([], true),
      destroy: () => deliver([], true),
    }
  }
  async close(): Promise<void> {}
}

const kinds = fc.constantFrom(Kind.data, Kind.end, Kind.error, Kind.credit, Kind.cancel, Kind.cancelled, Kind.log, Kind.need, Kind.hello, Kind.call, Kind.bundle, 0xee)

const sendableJson = fc.jsonValue({ maxDepth: 2 }).filter((v) => !hasProtoKey(v))

/** A payload: random bytes, or one of the shapes a real worker sends (so the frames get past the first checks). */
const payload = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.array(fc.double(), { maxLength: 50 }).map((xs) => {
    const b = Buffer.alloc(5 + 8 * xs.length)
    b[0] = 7
    b.writeUInt32LE(xs.length, 1)
    xs.forEach((x, i) => b.writeDoubleLE(x, 5 + 8 * i))
    return b
  }),
  // JSON values may hold an own "__proto__" key, which the sender refuses: those are left out.
  sendableJson.map((v) => payloads.end(false, valueBytes(v, 'return'))),
  sendableJson.map((v) => valueBytes(v, 'error')),
  fc.record({ error: fc.string(), index: fc.nat() }).map((v) => valueBytes({ ...v, error: new Error(v.error), runtime: false }, 'error')),
  fc.tuple(fc.nat(), fc.nat()).map(([i, b]) => payloads.credit(i, b)),
  fc.string().map((s) => Buffer.concat([Buffer.from([1]), Buffer.from(s)])),
)

/** One frame relative to the real call id: that id, a neighbour, 0 or any. */
const frame = fc.record({
  kind: kinds,
  call: fc.oneof(fc.constant(0), fc.constant(1), fc.integer({ min: -2, max: 2 }), fc.nat()),
  relative: fc.boolean(),
  stream: fc.oneof(fc.constant(0), fc.constant(1), fc.integer({ min: 0, max: 0xffff })),
  payload,
})

const frames = fc.array(frame, { minLength: 0, maxLength: 12 })

const s = suite('session fuzz')

s('a call answered with random frames always settles, with farpipe errors only', async () => {
  const runs = Math.max(20, Math.round(RUNS / 5))
  let failedWith = new Map<string, number>()
  const started = performance.now()
  await fc.assert(
    fc.asyncProperty(frames, fc.boolean(), async (list, streamed) => {
      const script: Script = (id) => list.map((f) => encodeFrame(f.kind, (f.relative ? Math.max(0, id + f.call) : Math.abs(f.call)) % 2 ** 32, f.stream, f.payload))
      const p = await pool({ transports: [new ScriptedTransport(script)], onLog: () => {} })
      try {
        // A streamed argument gives the frames for stream 1 something to find.
        const call = streamed ? p.run(t.sum, [1, 2, 3].values()) : p.run(t.countAsync, 3)
        const outcome = await Promise.allSettled([call.result, (async () => { for await (const _ of call); })()])
        for (const o of outcome) {
          if (o.status === 'rejected') {
            if (!(o.reason instanceof FarpipeError)) throw new Error(`a call failed with ${String(o.reason?.constructor?.name)}: ${o.reason?.message}`)
            failedWith.set(o.reason.constructor.name, (failedWith.get(o.reason.constructor.name) ?? 0) + 1)
          }
        }
      } finally {
        await p.close()
      }
    }),
    { numRuns: runs, ...(process.env.FARPIPE_FUZZ_SEED ? { seed: Number(process.env.FARPIPE_FUZZ_SEED) } : {}) },
  )
  if (process.env.FARPIPE_FUZZ_RUNS) {
    process.stderr.write(`  [fuzz] session: ${runs} cases in ${((performance.now() - started) / 1000).toFixed(1)} s; failures by class: ${JSON.stringify(Object.fromEntries(failedWith))}\n`)
  }
  failedWith = new Map()
})

s.run()
