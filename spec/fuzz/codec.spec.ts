// Properties of the codec, checked on generated values and hostile payloads.
import { suite } from 'uvu'
import fc from 'fast-check'
import '../helpers.ts'
import { encodeValue, readValue, valueBytes } from '../../lib/codec/values.ts'
import { ItemWriter, readItems, streamsInItems, type ItemLimits } from '../../lib/codec/items.ts'
import { ProtocolError, SerializeError } from '../../lib/errors.ts'
import { FrameDecoder, HEADER_BYTES, Kind } from '../../lib/wire/frame.ts'
import { FrameWriter } from '../../lib/wire/frame-writer.ts'
import { assertAllowedClasses, assertSame, bytes, hasProtoKey, jsonValues, onlyProtocolErrors, property, RUNS, thrown, values } from './arbitraries.ts'

/** A value payload (`u32 text length | text | u32 count | (u32 length | bytes)*`) built by hand. */
function payload(text: string, attachments: Uint8Array[] = []): Buffer {
  const t = Buffer.from(text, 'utf8')
  const parts: Uint8Array[] = [u32(t.byteLength), t, u32(attachments.length)]
  for (const a of attachments) parts.push(u32(a.byteLength), a)
  return Buffer.concat(parts)
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n >>> 0, 0)
  return b
}

/** Fails when decoding reached a prototype every object shares. */
const prototypeKeys = [Object.prototype, Array.prototype, Function.prototype, Error.prototype].map((p) => Object.getOwnPropertyNames(p).length)
function assertUnpolluted(): void {
  if (({} as { polluted?: unknown }).polluted !== undefined || Object.getPrototypeOf({}) !== Object.prototype) throw new Error('Object.prototype was polluted')
  const now = [Object.prototype, Array.prototype, Function.prototype, Error.prototype].map((p) => Object.getOwnPropertyNames(p).length)
  if (now.join() !== prototypeKeys.join()) throw new Error('a shared prototype gained properties')
}

const value = suite('fuzz: value codec')

property(value, 'valueBytes → readValue gives back any value (or refuses an own __proto__ key with a SerializeError)', fc.property(values(), (v) => {
  let bytes: Buffer | undefined
  const err = thrown(() => (bytes = valueBytes(v, 'v')))
  if (hasProtoKey(v)) {
    if (!(err instanceof SerializeError) || !err.message.includes('"__proto__"')) throw new Error(`expected a __proto__ refusal, got ${String(err)}`)
    return
  }
  if (err) throw err
  assertSame(v, readValue(bytes!))
}))

property(value, 'a value with streams asks toId once per stream and comes back with them in place', fc.property(values({ maxDepth: 2 }), fc.nat(5), (v, copies) => {
  const streams = Array.from({ length: copies }, () => new ReadableStream())
  const wrapped = { v, streams, again: streams, inError: Object.assign(new Error('e'), { streams }) }
  if (hasProtoKey(v)) return
  const asked: unknown[] = []
  const ids = new Map<number, unknown>()
  const bytes = valueBytes(wrapped, 'args', {
    toId: (x) => {
      if (!(x instanceof ReadableStream)) return undefined
      asked.push(x)
      ids.set(asked.length, x)
      return asked.length
    },
  })
  if (asked.length !== copies) throw new Error(`toId numbered ${asked.length} streams, not ${copies}`)
  const back = readValue(bytes, { fromId: (id) => ids.get(id) }) as typeof wrapped
  back.streams.forEach((s, i) => { if (s !== streams[i]) throw new Error(`stream ${i} not in place`) })
  if (back.again !== back.streams) throw new Error('a shared array came back as a copy')
  assertSame(v, back.v)
}), RUNS / 4)

/** Byte-level edits: flip, drop, insert, or overwrite a u32 with a large or small number. */
const edits = fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'drop', 'insert', 'u32')), { minLength: 1, maxLength: 4 })

function mutate(b: Uint8Array, list: [number, number, string][]): Uint8Array {
  const out = [...b]
  for (const [at, byte, how] of list) {
    const i = out.length ? at % out.length : 0
    if (how === 'flip') out[i] = byte
    else if (how === 'drop') out.splice(i, 1 + (byte % 8))
    else if (how === 'insert') out.splice(i, 0, ...new Array(1 + (byte % 8)).fill(byte))
    else {
      const n = byte < 128 ? byte : 0xffffffff - byte
      for (let k = 0; k < 4 && i + k < out.length; k++) out[i + k] = (n >>> (8 * k)) & 0xff
    }
  }
  return Uint8Array.from(out)
}

property(value, 'a truncated or mutated value payload decodes or throws a ProtocolError', fc.property(values({ maxDepth: 2 }), edits, fc.nat(), fc.boolean(), (v, list, cut, truncate) => {
  if (hasProtoKey(v)) return
  const good = valueBytes(v, 'v')
  const bad = truncate ? good.subarray(0, cut % good.byteLength) : mutate(good, list)
  onlyProtocolErrors(thrown(() => readValue(bad, { fromId: (id) => id })))
  assertUnpolluted()
}))

/** Hostile devalue text: entries that reference anything, name any type, use dangerous keys. */
const typeNames = [
  'Error', 'Bytes', 'Stream', 'BigInt', 'Date', 'Set', 'Map', 'RegExp', 'Object', 'null', 'Int8Array', 'Uint8Array', 'Float64Array', 'BigInt64Array', 'DataView', 'ArrayBuffer',
  'URL', 'URLSearchParams', 'Temporal.Instant', 'constructor', '__proto__', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'Function', 'Promise', 'Buffer', 'WeakMap', 'Proxy', 'eval', 'process', 'globalThis',
]
const keys = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'polluted', 'toString', 'a', '0', 'length'), fc.string({ maxLength: 4 }))
const ref = fc.integer({ min: -8, max: 12 })
const scalar: fc.Arbitrary<string> = fc.oneof(ref.map(String), fc.constantFrom('"E"', '"0x1f"', '"-12"', '"Uint8Array"', '"ArrayBuffer"', 'true', 'null', '1.5', '{}', '[]'), fc.string({ maxLength: 6 }).map((s) => JSON.stringify(s)))
const entry: fc.Arbitrary<string> = fc.oneof(
  scalar,
  fc.tuple(fc.oneof(fc.constantFrom(...typeNames), fc.string({ maxLength: 6 })), fc.array(scalar, { maxLength: 7 })).map(([t, args]) => `[${[JSON.stringify(t), ...args].join(',')}]`),
  fc.array(fc.tuple(keys, scalar), { maxLength: 4 }).map((kv) => `{${kv.map(([k, x]) => `${JSON.stringify(k)}:${x}`).join(',')}}`),
  fc.array(scalar, { maxLength: 6 }).map((xs) => `[${xs.join(',')}]`),
)
const hostileText = fc.array(entry, { minLength: 1, maxLength: 10 }).map((es) => `[${es.join(',')}]`)
const attachments = fc.array(fc.uint8Array({ maxLength: 16 }), { maxLength: 3 })

const hostile = suite('fuzz: hostile payloads')

property(hostile, 'hostile devalue text decodes to allowed classes or throws a ProtocolError, and pollutes nothing', fc.property(hostileText, attachments, (text, atts) => {
  let back: unknown
  const err = thrown(() => (back = readValue(payload(text, atts), { fromId: (id) => ({ stream: id }) })))
  onlyProtocolErrors(err)
  if (!err) assertAllowedClasses(back)
  assertUnpolluted()
}))

property(hostile, 'an encoded value with one entry replaced decodes or throws a ProtocolError, and pollutes nothing', fc.property(values({ maxDepth: 2 }), fc.nat(), fc.oneof(entry, jsonValues.map((j) => JSON.stringify(j))), (v, at, replacement) => {
  if (hasProtoKey(v)) return
  const enc = encodeValue(v, 'v')
  const parsed = JSON.parse(enc.text) as unknown
  if (!Array.isArray(parsed)) return
  const texts = parsed.map((x) => JSON.stringify(x))
  texts[at % texts.length] = replacement
  let back: unknown
  const err = thrown(() => (back = readValue(payload(`[${texts.join(',')}]`, enc.attachments))))
  onlyProtocolErrors(err)
  if (!err) assertAllowedClasses(back)
  assertUnpolluted()
}))

const kinds = ['array', 'object', 'map', 'set', 'null', 'error'] as const

/** Devalue text nesting `depth` containers of the given kinds (repeated), one reference each. */
function nested(depth: number, pattern: (typeof kinds)[number][]): string {
  const entries: string[] = ['', '"k"', '{}', '1']
  const [K, P, ONE] = [1, 2, 3]
  let cur = 0
  for (let level = 0; level < depth; level++) {
    const next = entries.push('') - 1
    switch (pattern[level % pattern.length]!) {
      case 'array': entries[cur] = `[${next}]`; break
      case 'object': entries[cur] = `{"a":${next}}`; break
      case 'map': entries[cur] = `["Map",${K},${next}]`; break
      case 'set': entries[cur] = `["Set",${next}]`; break
      case 'null': entries[cur] = `["null","a",${next}]`; break
      case 'error': {
        const rec = entries.push('') - 1
        entries[cur] = `["Error",${rec}]`
        entries[rec] = `[${K},${K},${K},${P},${ONE},${next}]`
        break
      }
    }
    cur = next
  }
  entries[cur] = '0'
  return `[${entries.join(',')}]`
}

property(hostile, 'nesting of any depth decodes or throws a ProtocolError (a stack overflow included)', fc.property(
  fc.oneof(fc.integer({ min: 1, max: 2000 }), fc.integer({ min: 2000, max: 200_000 })),
  fc.array(fc.constantFrom(...kinds), { minLength: 1, maxLength: 4 }),
  (depth, pattern) => {
    onlyProtocolErrors(thrown(() => readValue(payload(nested(depth, pattern)))))
    // A JSON run nested as deep: JSON.parse copes, or it is a protocol error.
    const run = Buffer.from(`[${'['.repeat(depth)}${']'.repeat(depth)}]`)
    onlyProtocolErrors(thrown(() => readItems(Buffer.concat([Buffer.from([8]), u32(1), u32(run.byteLength), run]))))
  },
), RUNS / 20)

property(hostile, 'sending a value nested deeper than the stack allows fails with a SerializeError', fc.property(fc.integer({ min: 1, max: 100_000 }), fc.boolean(), (depth, useMap) => {
  let v: unknown = 1
  for (let i = 0; i < depth; i++) v = useMap ? new Map([['a', v]]) : { a: v }
  let bytes: Buffer | undefined
  const err = thrown(() => (bytes = valueBytes(v, 'v')))
  if (err !== undefined && !(err instanceof SerializeError)) throw err
  if (bytes) onlyProtocolErrors(thrown(() => readValue(bytes!)))
}), RUNS / 50)

property(hostile, 'a BigInt of any length decodes in linear time or is refused with a ProtocolError', fc.property(
  fc.constantFrom(1, 19, 600, 9_999, 10_000, 10_001, 100_000, 1_000_000, 2_000_000),
  fc.boolean(), fc.boolean(), fc.boolean(),
  (digits, hex, negative, ours) => {
    const text = (negative ? '-' : '') + (hex ? '0x' + 'f'.repeat(digits) : '9'.repeat(digits))
    // Ours: ["BigInt", ref] and the text as its own entry; devalue's own form carries the text inline.
    const p = payload(ours ? `[["BigInt",1],${JSON.stringify(text)}]` : `[["BigInt",${JSON.stringify(text)}]]`)
    const started = performance.now()
    let back: unknown
    const err = thrown(() => (back = readValue(p)))
    const ms = performance.now() - started
    if (ms > 1000) throw new Error(`${digits} ${hex ? 'hex' : 'decimal'} digits took ${ms.toFixed(0)} ms`)
    if (!hex && digits > 10_000) {
      if (!(err instanceof ProtocolError)) throw new Error(`expected a refusal of ${digits} decimal digits, got ${String(err)}`)
      return
    }
    if (err) throw err
    if (typeof back !== 'bigint') throw new Error('no BigInt came back')
    const abs = back < 0n ? -back : back
    if ((back < 0n) !== negative || abs.toString(hex ? 16 : 10).length !== digits) throw new Error('a different BigInt came back')
  },
), RUNS / 20)

const items = suite('fuzz: stream items')

/** Items as a stream carries them: runs of numbers and JSON, strings, bytes, and values that need devalue. */
const item = fc.oneof(
  { weight: 4, arbitrary: fc.oneof(fc.double(), fc.integer()) },
  { weight: 3, arbitrary: jsonValues },
  { weight: 2, arbitrary: fc.string() },
  { weight: 1, arbitrary: bytes },
  { weight: 1, arbitrary: bytes.map((b) => b.slice().buffer) },
  { weight: 2, arbitrary: values({ maxDepth: 2 }) },
)

const limits: fc.Arbitrary<ItemLimits> = fc.oneof(
  fc.record({ softFrameBytes: fc.integer({ min: 32, max: 300_000 }), maxFrameBytes: fc.constant(64 * 1024 * 1024) }),
  fc.integer({ min: 64, max: 40_000 }).chain((max) => fc.record({ softFrameBytes: fc.integer({ min: 16, max }), maxFrameBytes: fc.constant(max) })),
)

property(items, 'ItemWriter → frames (any split) → readItems gives back the items not refused, in order', fc.property(fc.array(item, { maxLength: 40 }), limits, fc.array(fc.nat(), { maxLength: 6 }), (list, lim, cuts) => {
  const w = new FrameWriter()
  const writer = new ItemWriter(w, lim)
  const sent: unknown[] = []
  let counted = 0
  w.begin(Kind.data, 1, 0)
  list.forEach((v, i) => {
    const before = w.pending
    const err = thrown(() => (counted += writer.write(v, () => `yield[${i}]`)))
    if (err === undefined) return void sent.push(v)
    if (!(err instanceof SerializeError) || !err.message.startsWith(`yield[${i}]`)) throw err
    if (w.pending !== before) throw new Error('a refused item left bytes behind')
    const tooBig = err.message.includes('exceeds maxFrameBytes')
    if (!tooBig && !hasProtoKey(v)) throw err
  })
  writer.close()
  if (w.frameBytes > HEADER_BYTES) w.end()
  else w.abandon()
  const stream = Buffer.concat(w.takeParts())
  const at = cuts.map((c) => c % (stream.byteLength + 1)).sort((a, b) => a - b)
  const d = new FrameDecoder(lim.maxFrameBytes)
  const back: unknown[] = []
  let payloadBytes = 0
  let prev = 0
  for (const c of [...at, stream.byteLength]) {
    for (const f of d.decode(stream.subarray(prev, c))) {
      payloadBytes += f.payload.byteLength
      back.push(...readItems(f.payload, f.owned))
    }
    prev = c
  }
  d.end()
  // Each item is encoded on its own: references shared between items arrive as copies.
  if (back.length !== sent.length) throw new Error(`${sent.length} items sent, ${back.length} received`)
  sent.forEach((v, i) => assertSame(v, back[i], `items[${i}]`))
  // Byte credit: the items of the frames count for exactly their payload bytes (run headers included).
  if (counted !== payloadBytes) throw new Error(`counted ${counted} bytes for ${payloadBytes} bytes of payload`)
}))

property(items, 'streams nested in items are named with the index of their item, by readItems and by streamsInItems alike', fc.property(fc.array(fc.tuple(item, fc.nat(3)), { maxLength: 30 }), (list) => {
  const w = new FrameWriter()
  const writer = new ItemWriter(w, { softFrameBytes: 1 << 30, maxFrameBytes: 1 << 30 })
  let next = 1
  const hooks = { toId: (x: unknown) => (x instanceof ReadableStream ? next++ : undefined) }
  const expected: [number, number][] = []
  let index = 0
  w.begin(Kind.data, 1, 0)
  for (const [v, streams] of list) {
    if (hasProtoKey(v)) continue
    const value = streams === 0 ? v : { v, bodies: Array.from({ length: streams }, () => new ReadableStream()) }
    const first = next
    writer.write(value, () => `yield[${index}]`, hooks)
    for (let id = first; id < next; id++) expected.push([id, index])
    index++
  }
  writer.close()
  if (w.frameBytes <= HEADER_BYTES) return void w.abandon()
  w.end()
  // Large byte items travel in frames of their own: item indices count within a frame.
  const named: [number, number][] = []
  const scanned: number[] = []
  let read = 0
  for (const f of new FrameDecoder(1 << 30).decode(Buffer.concat(w.takeParts()))) {
    const offset = read
    read += readItems(f.payload, false, (id, item) => {
      named.push([id, offset + item])
      return id
    }).length
    streamsInItems(f.payload, (id) => void scanned.push(id))
  }
  if (read !== index) throw new Error(`${index} items written, ${read} read`)
  if (JSON.stringify(named) !== JSON.stringify(expected)) throw new Error(`streams named ${JSON.stringify(named)}, expected ${JSON.stringify(expected)}`)
  if (JSON.stringify(scanned) !== JSON.stringify(expected.map(([id]) => id))) throw new Error(`streamsInItems found ${JSON.stringify(scanned)}`)
}))

property(items, 'a truncated or mutated data frame payload decodes or throws a ProtocolError', fc.property(fc.array(item, { minLength: 1, maxLength: 12 }), edits, fc.nat(), fc.boolean(), (list, list2, cut, truncate) => {
  const w = new FrameWriter()
  const writer = new ItemWriter(w, { softFrameBytes: 1 << 20, maxFrameBytes: 1 << 26 })
  w.begin(Kind.data, 1, 0)
  list.forEach((v, i) => thrown(() => writer.write(v, () => `yield[${i}]`)))
  writer.close()
  w.end()
  for (const f of new FrameDecoder().decode(Buffer.concat(w.takeParts()))) {
    const bad = truncate ? f.payload.subarray(0, cut % (f.payload.byteLength + 1)) : mutate(f.payload, list2)
    onlyProtocolErrors(thrown(() => readItems(bad)))
  }
  assertUnpolluted()
}))

property(items, 'random bytes as a data frame payload decode or throw a ProtocolError', fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom(3, 4, 6, 7, 8, 0, 255), (b, tag) => {
  const withTag = Uint8Array.from([tag, ...b])
  onlyProtocolErrors(thrown(() => readItems(withTag)))
  onlyProtocolErrors(thrown(() => readItems(b)))
  assertUnpolluted()
}))

value.run()
hostile.run()
items.run()
