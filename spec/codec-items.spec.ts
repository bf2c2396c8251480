import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { deepStrictEqual } from 'node:assert'
import { thrown } from './helpers.ts'
import { ItemWriter, readItems, streamsInItems } from '../lib/codec/items.ts'
import { ProtocolError, SerializeError } from '../lib/errors.ts'
import { FrameDecoder, HEADER_BYTES, Kind } from '../lib/wire/frame.ts'
import { FrameWriter } from '../lib/wire/frame-writer.ts'
import { roundTrip, throwsA, u32 } from './codec.ts'

const items = suite('stream items')

const limits = { softFrameBytes: 256 * 1024, maxFrameBytes: 64 * 1024 * 1024 }

function roundTripItems(values: unknown[], l = limits): { back: unknown[]; frames: number; sizes: number[]; payloadBytes: number } {
  const w = new FrameWriter()
  const items = new ItemWriter(w, l)
  w.begin(Kind.data, 1, 0)
  const sizes = values.map((v, i) => items.write(v, () => `yield[${i}]`))
  items.close()
  if (w.frameBytes > HEADER_BYTES) w.end()
  else w.abandon()
  const frames = new FrameDecoder().decode(w.take()!)
  const back: unknown[] = []
  for (const f of frames) back.push(...readItems(f.payload))
  return { back, frames: frames.length, sizes, payloadBytes: frames.reduce((n, f) => n + f.payload.byteLength, 0) }
}

items('round-trips every value of the table as items of one frame', () => {
  const values = roundTrip.map(([, v]) => v)
  const { back, frames } = roundTripItems(values)
  assert.is(frames, 1)
  deepStrictEqual(back, values)
})

items('counts each item at the bytes it takes in the frame, the first of a run with the run header', () => {
  const { sizes } = roundTripItems([1, 'abc', { a: 1 }, Uint8Array.of(1, 2)])
  assert.equal(sizes, [5 + 8, 10 + 6, 8, 7])
})

// Regression: the sender counted run headers nowhere while the receiver
// counted whole payloads, so the two credit books drifted apart over a long
// stream (and a receiver checking byte credit would have refused a sender
// that kept to it).
items('the items of every frame count for exactly its payload bytes', () => {
  const mixes: unknown[][] = [
    Array.from({ length: 5000 }, (_, i) => i),
    Array.from({ length: 5000 }, (_, i) => ({ i, s: 'x'.repeat(i % 50) })),
    Array.from({ length: 3000 }, (_, i) => [i, 'é' + i, { i }, new Uint8Array(i % 300), new Date(i), i % 7 === 0 ? new Uint8Array(20_000) : null][i % 6]),
  ]
  for (const values of mixes) {
    const { sizes, payloadBytes, frames } = roundTripItems(values, { softFrameBytes: 8 * 1024, maxFrameBytes: 1 << 20 })
    assert.ok(frames > 1)
    assert.is(sizes.reduce((a, b) => a + b, 0), payloadBytes)
  }
})

items('packs runs: numbers as floats, JSON-safe values as one array', () => {
  const values = [1, 2, 3, 'a', { b: [true, null] }, 4, Uint8Array.of(9), 'z']
  const { back, frames } = roundTripItems(values)
  assert.is(frames, 1)
  assert.equal(back.slice(0, 6), values.slice(0, 6))
  assert.equal([...(back[6] as Uint8Array)], [9])
  assert.is(back[7], 'z')
})

items('splits a long run across frames at the soft limit', () => {
  const n = 50_000
  const { back, frames } = roundTripItems(Array.from({ length: n }, (_, i) => (i % 2 ? i : { i, name: 'item' + i })), { softFrameBytes: 16 * 1024, maxFrameBytes: 1 << 20 })
  assert.is(back.length, n)
  assert.ok(frames > 10, `${frames} frames`)
  assert.equal(back[n - 1], n - 1)
  assert.equal(back[n - 2], { i: n - 2, name: `item${n - 2}` })
})

items('starts a new frame rather than grow one past the soft limit', () => {
  const chunk = new Uint8Array(10 * 1024)
  const { back, frames } = roundTripItems([chunk, chunk, chunk, chunk], { softFrameBytes: 24 * 1024, maxFrameBytes: 1 << 20 })
  assert.is(back.length, 4)
  assert.is(frames, 2)
})

items('sends a large chunk in a frame of its own, from its own buffer', () => {
  const big = new Uint8Array(100 * 1024).map((_, i) => i & 255)
  const w = new FrameWriter()
  const items = new ItemWriter(w, limits)
  w.begin(Kind.data, 1, 0)
  items.write(1, () => 'yield[0]')
  items.write(big.subarray(10), () => 'yield[1]')
  items.write(2, () => 'yield[2]')
  items.close()
  w.end()
  const parts = w.takeParts()
  assert.ok(parts.some((p) => p.buffer === big.buffer), 'the chunk itself is one of the parts written')
  const frames = new FrameDecoder().decode(Buffer.concat(parts))
  assert.is(frames.length, 3)
  const back = frames.flatMap((f) => readItems(f.payload))
  assert.is(back[0], 1)
  assert.equal([...(back[1] as Uint8Array)], [...big.subarray(10)])
  assert.is(back[2], 2)
})

items('refuses an item larger than maxFrameBytes, naming it, with nothing written', () => {
  const w = new FrameWriter()
  w.begin(Kind.data, 1, 0)
  new ItemWriter(w, limits).write(1, () => 'yield[0]')
  const before = w.pending
  try {
    new ItemWriter(w, { softFrameBytes: 512, maxFrameBytes: 1024 }).write(new Uint8Array(2000), () => 'yield[1]')
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, SerializeError)
    assert.match((err as Error).message, 'yield[1]: item of 2005 bytes exceeds maxFrameBytes 1024')
  }
  assert.is(w.pending, before)
  assert.ok(w.frameBytes > HEADER_BYTES)
})

items('refuses an unsendable item with its path and writes nothing', () => {
  const w = new FrameWriter()
  w.begin(Kind.data, 1, 0)
  try {
    new ItemWriter(w, limits).write({ a: [1, { f: () => 1 }] }, () => 'yield[7]')
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, SerializeError)
    assert.match((err as Error).message, 'yield[7].a[1].f: function')
  }
  assert.is(w.frameBytes, HEADER_BYTES)
})

items('copies received bytes out of the frame buffer', () => {
  const { back } = roundTripItems([Uint8Array.of(1, 2, 3)])
  const u = back[0] as Uint8Array
  assert.is(u.buffer.byteLength, 3)
})

items('reports an item that overruns its frame as a protocol error', () => {
  const bad = Buffer.from([3, 10, 0, 0, 0, 65])
  try {
    readItems(bad)
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, ProtocolError)
  }
})

items('readItems names each stream in a value with the index of its item', () => {
  const w = new FrameWriter()
  const iw = new ItemWriter(w, { softFrameBytes: 1 << 20, maxFrameBytes: 1 << 24 })
  let next = 0x8000
  const hooks = { toId: (v: unknown) => (v instanceof ReadableStream ? next++ : undefined) }
  w.begin(Kind.data, 1, 0)
  iw.write(1, () => 'x', hooks)
  iw.write({ a: 1 }, () => 'x', hooks)
  iw.write({ body: new ReadableStream(), more: [new ReadableStream()] }, () => 'x', hooks)
  iw.write('text', () => 'x', hooks)
  iw.write({ body: new ReadableStream() }, () => 'x', hooks)
  iw.close()
  w.end()
  const payload = new FrameDecoder().decode(Buffer.concat(w.takeParts()))[0]!.payload
  const seen: [number, number][] = []
  const got = readItems(payload, false, (id, item) => {
    seen.push([id, item])
    return `stream ${id}`
  }) as unknown[]
  assert.equal(seen, [[0x8000, 2], [0x8001, 2], [0x8002, 4]])
  assert.equal(got[2], { body: 'stream 32768', more: ['stream 32769'] })
  // Skipping reads only the values, and names the same streams.
  const skipped: number[] = []
  streamsInItems(payload, (id) => void skipped.push(id))
  assert.equal(skipped, [0x8000, 0x8001, 0x8002])
})

items('a stream in an item with no hooks to number it cannot be sent, and names the item', () => {
  const w = new FrameWriter()
  const iw = new ItemWriter(w, { softFrameBytes: 1 << 20, maxFrameBytes: 1 << 24 })
  w.begin(Kind.data, 1, 0)
  const err = thrown(() => iw.write({ body: new ReadableStream() }, () => 'yield[4]'))
  assert.instance(err, SerializeError)
  assert.match(err.message, 'yield[4].body: instance of ReadableStream cannot be sent')
})

const hostile = suite('hostile payloads')

hostile('a JSON run with __proto__ keys leaves Object.prototype alone', () => {
  const text = Buffer.from('[{"__proto__":{"polluted":true}}]')
  const p = Buffer.concat([Buffer.from([8]), u32(1), u32(text.byteLength), text])
  const [item] = readItems(p) as [Record<string, unknown>]
  assert.is(({} as { polluted?: unknown }).polluted, undefined)
  assert.is(Object.getPrototypeOf(item), Object.prototype)
})

hostile('regression: a malformed JSON run is a protocol error (escaped as a SyntaxError)', () => {
  for (const text of ['[{', '{"a":1}', 'nul', '']) {
    const t = Buffer.from(text)
    throwsA(ProtocolError, () => readItems(Buffer.concat([Buffer.from([8]), u32(1), u32(t.byteLength), t])))
  }
})

items.run()
hostile.run()
