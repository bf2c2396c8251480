import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { deepStrictEqual } from 'node:assert'
import './helpers.ts'
import { encodeValue, ItemWriter, readItems, readValue, valueBytes } from '../lib/codec.ts'
import { CancelError, ProtocolError, SerializeError, TimeoutError } from '../lib/errors.ts'
import { FrameDecoder, FrameWriter, HEADER_BYTES, Kind } from '../lib/wire.ts'

const cyclic: Record<string, unknown> = { name: 'loop' }
cyclic.self = cyclic
const big = new Uint8Array(1024).map((_, i) => i)

/** Values that must come back equal, whole or as stream items. */
const roundTrip: [string, unknown][] = [
  ['integer', 42],
  ['float', 3.25],
  ['negative zero', -0],
  ['NaN', NaN],
  ['Infinity', -Infinity],
  ['bigint', 12345678901234567890n],
  ['undefined', undefined],
  ['null', null],
  ['true', true],
  ['empty string', ''],
  ['unicode string', 'héllo ✓ 𝄞'],
  ['array', [1, 'two', [3]]],
  ['sparse array', [1, , 3]],
  ['plain object', { i: 1, name: 'item1', ok: true, nested: { deep: [null] } }],
  ['object with undefined', { a: undefined, b: 1 }],
  ['Date', new Date('2026-11-24T10:00:00Z')],
  ['Map', new Map<unknown, unknown>([['a', 1], [2, { b: 3 }]])],
  ['Set', new Set([1, 'x', null])],
  ['RegExp', /a+b/gi],
  ['cycle', cyclic],
  ['Uint8Array', big],
  ['ArrayBuffer', big.buffer.slice(0)],
  ['Float64Array', new Float64Array([1.5, -2, NaN])],
  ['Int16Array', new Int16Array([-1, 2, 30000])],
  ['bytes inside an object', { header: 'x', body: Uint8Array.of(1, 2, 3) }],
]

const value = suite('value codec')

for (const [name, v] of roundTrip) {
  value(`round-trips ${name}`, () => {
    // node's deepStrictEqual: it follows cycles and tells NaN and -0 apart, as the codec must.
    deepStrictEqual(readValue(valueBytes(v, 'v')), v)
  })
}

value('sends only the bytes of a view, not its whole backing buffer', () => {
  const backing = new Uint8Array(1_000_000)
  const view = backing.subarray(1000, 1010).fill(7)
  const bytes = valueBytes({ view }, 'v')
  assert.ok(bytes.byteLength < 200, `encoded ${bytes.byteLength} bytes for a 10-byte view`)
  const back = readValue(bytes) as { view: Uint8Array }
  assert.equal([...back.view], new Array(10).fill(7))
  assert.is(back.view.buffer.byteLength, 10)
})

value('sends binary as raw bytes, not base64 text', () => {
  const data = new Uint8Array(64 * 1024).map((_, i) => (i * 7) & 255)
  const enc = encodeValue({ data }, 'v')
  assert.is(enc.attachments.length, 1)
  assert.ok(enc.text.length < 100, `text part is ${enc.text.length} chars`)
})

value('rebuilds errors with name, message, stack, own properties and the cause chain', () => {
  const root = new RangeError('root')
  const mid = new TypeError('mid', { cause: root })
  const top = Object.assign(new Error('top', { cause: mid }), { code: 'E_TOP', detail: { n: 1 } })
  const back = readValue(valueBytes(top, 'e')) as Error & { code: string; detail: unknown }
  assert.instance(back, Error)
  assert.is(back.message, 'top')
  assert.is(back.code, 'E_TOP')
  assert.equal(back.detail, { n: 1 })
  assert.is(back.stack, top.stack)
  assert.instance(back.cause, TypeError)
  assert.is((back.cause as Error).message, 'mid')
  assert.instance((back.cause as Error).cause, RangeError)
})

value('keeps the name of a custom error class without constructing it', () => {
  class MyError extends Error {}
  const back = readValue(valueBytes(new MyError('mine'), 'e')) as Error
  assert.is(back.name, 'MyError')
  assert.is(back.constructor, Error)
})

value('rebuilds AggregateError with its errors', () => {
  const agg = new AggregateError([new Error('a'), new TypeError('b')], 'both')
  const back = readValue(valueBytes(agg, 'e')) as AggregateError
  assert.instance(back, AggregateError)
  assert.equal(back.errors.map((e: Error) => e.message), ['a', 'b'])
  assert.instance(back.errors[1], TypeError)
})

value('rebuilds farpipe errors as their classes', () => {
  assert.instance(readValue(valueBytes(new TimeoutError('late'), 'e')), TimeoutError)
  const s = readValue(valueBytes(new SerializeError('args[0]: bad', 'args[0]'), 'e')) as SerializeError
  assert.instance(s, SerializeError)
  assert.is(s.path, 'args[0]')
  assert.instance(readValue(valueBytes(new CancelError('stop'), 'e')), CancelError)
})

value('replaces an error property that cannot be sent instead of failing the error', () => {
  const err = Object.assign(new Error('with socket'), { socket: { write() {} }, fine: 1 })
  const back = readValue(valueBytes(err, 'e')) as Error & { socket: unknown; fine: number }
  assert.is(back.fine, 1)
  assert.match(String(back.socket), 'unsendable')
})

value('sends an error whose cause chain loops back to it, with the loop described', () => {
  const err = new Error('self') as Error & { cause: unknown }
  err.cause = err
  const back = readValue(valueBytes(err, 'e')) as Error
  assert.is(back.message, 'self')
  assert.match(String(back.cause), '[circular cause: Error: self]')
})

/** Values that cannot be sent, and the path and kind the message must name. */
const unsendable: [string, unknown, string][] = [
  ['a function', { bad: () => 1 }, 'args.bad: function cannot be sent'],
  ['a nested function', [{ user: { save() {} } }], 'args[0].user.save: function'],
  ['a symbol', { s: Symbol('x') }, 'args.s: symbol'],
  ['a class instance', { when: new (class Clock {})() }, 'args.when: instance of Clock'],
  ['a promise', { p: Promise.resolve(1) }, 'args.p: promise'],
  ['a value inside a Map', new Map([['k', () => 1]]), 'function'],
]

for (const [name, v, message] of unsendable) {
  value(`refuses ${name}, naming the path`, () => {
    try {
      encodeValue(v, 'args')
      assert.unreachable('should have thrown')
    } catch (err) {
      assert.instance(err, SerializeError)
      assert.match((err as Error).message, message)
    }
  })
}

value('reports a truncated value as a protocol error', () => {
  const bytes = valueBytes({ a: 'hello' }, 'v')
  try {
    readValue(bytes.subarray(0, bytes.byteLength - 3))
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, ProtocolError)
  }
})

const items = suite('stream items')

const limits = { softFrameBytes: 256 * 1024, maxFrameBytes: 64 * 1024 * 1024 }

function roundTripItems(values: unknown[], l = limits): { back: unknown[]; frames: number; sizes: number[] } {
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
  return { back, frames: frames.length, sizes }
}

items('round-trips every value of the table as items of one frame', () => {
  const values = roundTrip.map(([, v]) => v)
  const { back, frames } = roundTripItems(values)
  assert.is(frames, 1)
  deepStrictEqual(back, values)
})

items('counts each item at the bytes it takes in the frame', () => {
  const { sizes } = roundTripItems([1, 'abc', { a: 1 }, Uint8Array.of(1, 2)])
  assert.equal(sizes, [8, 6, 8, 7])
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

value.run()
items.run()
