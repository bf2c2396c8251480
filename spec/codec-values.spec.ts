import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { deepStrictEqual } from 'node:assert'
import './helpers.ts'
import { encodeValue, readValue, valueBytes } from '../lib/codec/values.ts'
import { CancelError, ProtocolError, SerializeError, TimeoutError } from '../lib/errors.ts'
import { roundTrip, throwsA, u32 } from './codec.ts'

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

/** A value payload built by hand, as a hostile or foreign peer could send it. */
function payload(text: string, attachments: Uint8Array[] = []): Buffer {
  const t = Buffer.from(text, 'utf8')
  const parts = [u32(t.byteLength), t, u32(attachments.length)]
  for (const a of attachments) parts.push(u32(a.byteLength), Buffer.from(a))
  return Buffer.concat(parts)
}

/** Names that resolve on a plain object's prototype chain: a lookup that is not own-only finds something for each. */
const prototypeKeys = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', 'propertyIsEnumerable', 'toLocaleString', '__defineGetter__', '__lookupSetter__']

for (const name of prototypeKeys) {
  value(`regression: an error named ${name} (a prototype key) is rebuilt as an Error with that name`, () => {
    const err = new Error('message of ' + name)
    err.name = name
    const back = readValue(valueBytes(err, 'e')) as Error
    assert.instance(back, Error)
    assert.is(back.constructor, Error)
    assert.is(back.name, name)
    assert.is(back.message, 'message of ' + name)
  })
}

value('regression: a renamed error comes back as its class, with its name (was a plain Error)', () => {
  const renamed = new RangeError('out of range')
  renamed.name = 'LimitError'
  const back = readValue(valueBytes(renamed, 'e')) as Error
  assert.instance(back, RangeError)
  assert.is(back.name, 'LimitError')
  // A plain Error named after an allow-listed class stays a plain Error.
  const posing = new Error('posing')
  posing.name = 'TypeError'
  const back2 = readValue(valueBytes(posing, 'e')) as Error
  assert.is(back2.constructor, Error)
  assert.is(back2.name, 'TypeError')
})

value('regression: a subclass of an allow-listed class comes back as the nearest allow-listed class (was a plain Error)', () => {
  class HttpError extends TypeError {
    override name = 'HttpError'
    status = 404
  }
  class LateError extends TimeoutError {}
  const back = readValue(valueBytes([new HttpError('not found'), new LateError('late')], 'e')) as [Error & { status: number }, Error]
  assert.instance(back[0], TypeError)
  assert.is(back[0].name, 'HttpError')
  assert.is(back[0].status, 404)
  assert.instance(back[1], TimeoutError)
  assert.is(back[1].name, 'LateError')
})

value('regression: an error whose own name is "Error" keeps it (its class name replaced it)', () => {
  const e = new TimeoutError('late')
  Object.defineProperty(e, 'name', { value: 'Error', writable: true, configurable: true })
  const back = readValue(valueBytes(e, 'e')) as Error
  assert.instance(back, TimeoutError)
  assert.is(back.name, 'Error')
})

value('regression: a SerializeError whose path is not a string is rebuilt (decoding it threw)', () => {
  const e = Object.assign(new SerializeError('odd', 'args'), { path: Object.create(null) as object })
  const back = readValue(valueBytes(e, 'e')) as SerializeError
  assert.instance(back, SerializeError)
  assert.equal(back.path, Object.create(null))
})

value('regression: an error property that cannot be sent is replaced by a note that says where and why (was "[unsendable object]")', () => {
  const err = Object.assign(new Error('odd'), { detail: { ok: 1, bad: JSON.parse('{"__proto__": 1}') }, socket: { write() {} } })
  const back = readValue(valueBytes(err, 'e')) as Error & { detail: unknown; socket: unknown }
  assert.match(String(back.detail), /^\[unsendable: detail\.bad\.__proto__: an own "__proto__" key cannot be sent/)
  assert.match(String(back.socket), /^\[unsendable: socket\.write: function cannot be sent\]$/)
})

value('regression: a binary attachment whose kind is a prototype key is refused, not constructed', () => {
  for (const kind of ['constructor', 'toString', '__proto__']) {
    throwsA(ProtocolError, () => readValue(payload(`[["Bytes",1],[2,3],0,"${kind}"]`, [Uint8Array.of(1, 2)])))
  }
})

value('regression: a binary attachment named twice is refused (a small frame could make the receiver copy one attachment again and again)', () => {
  const att = new Uint8Array(1024)
  // 1 + 2n entries: an array of n Bytes values, all naming attachment 0.
  const n = 100
  const refs = Array.from({ length: n }, (_, i) => 1 + i)
  const entries = [`[${refs.join(',')}]`, ...refs.map(() => `["Bytes",${1 + n}]`), `[${2 + n},${3 + n}]`, '0', '"Uint8Array"']
  const err = throwsA(ProtocolError, () => readValue(payload(`[${entries.join(',')}]`, [att])))
  assert.match(err.message, 'binary attachment 0 is used twice')
})

value('regression: a binary attachment with an index that is not one is refused', () => {
  for (const index of ['"__proto__"', '"0"', '-1', '1.5', '1']) {
    throwsA(ProtocolError, () => readValue(payload(`[["Bytes",1],[2,3],${index},"Uint8Array"]`, [Uint8Array.of(1, 2)])))
  }
})

/** Ways a value can hold an own `__proto__` key, and the path the refusal must name. */
const protoKeys: [string, unknown, string][] = [
  ['made with defineProperty', Object.defineProperty({}, '__proto__', { value: 1, enumerable: true, configurable: true, writable: true }), 'args.__proto__'],
  ['made by JSON.parse', JSON.parse('{"a": 1, "__proto__": {"b": 2}}'), 'args.__proto__'],
  ['nested in an array', { list: [0, JSON.parse('{"__proto__": 1}')] }, 'args.list[1].__proto__'],
  ['on a null-prototype object', Object.assign(Object.create(null), JSON.parse('{"__proto__": 1}')), 'args.__proto__'],
]

for (const [name, v, path] of protoKeys) {
  value(`regression: refuses an own __proto__ key ${name}, naming its path and why (was "object with symbol keys")`, () => {
    const err = throwsA(SerializeError, () => encodeValue(v, 'args'))
    assert.is(err.path, path)
    assert.match(err.message, `${path}: an own "__proto__" key cannot be sent`)
    assert.not.match(err.message, 'symbol')
  })
}

value('regression: refuses an object with a custom prototype saying so (was "object with symbol keys")', () => {
  const err = throwsA(SerializeError, () => encodeValue({ o: Object.create({ inherited: 1 }) }, 'args'))
  assert.is(err.message, 'args.o: object with a prototype other than Object.prototype or null cannot be sent')
})

value('regression: an error with an own enumerable __proto__ property is sent without that key', () => {
  const err = new Error('odd') as Error & { fine: number }
  Object.defineProperty(err, '__proto__', { value: { a: 1 }, enumerable: true, configurable: true, writable: true })
  err.fine = 1
  const back = readValue(valueBytes(err, 'e')) as Error & { fine: number }
  assert.is(back.message, 'odd')
  assert.is(back.fine, 1)
  assert.is(Object.getPrototypeOf(back), Error.prototype)
  assert.not.ok(Object.hasOwn(back, '__proto__'))
})

value('regression: a stream inside an error property is given one stream id (the trial encoding asked for a second)', () => {
  const stream = new ReadableStream()
  const ids: unknown[] = []
  let next = 1
  const toId = (v: unknown) => {
    if (!(v instanceof ReadableStream)) return undefined
    ids.push(v)
    return next++
  }
  const err = Object.assign(new Error('with a body'), { body: stream })
  encodeValue([err, stream], 'args', { toId })
  assert.is(ids.length, 1)
})

value('regression: a streamed value whose id is not a stream id is refused before fromId sees it', () => {
  const seen: unknown[] = []
  const fromId = (id: number) => (seen.push(id), id)
  for (const id of ['"1"', '-1', '1.5', '65536', '0', '{}']) {
    throwsA(ProtocolError, () => readValue(payload(`[["Stream",1],${id}]`), { fromId }))
  }
  assert.equal(seen, [])
  assert.is(readValue(payload('[["Stream",1],7]'), { fromId }), 7)
})

value('regression: a big BigInt travels in linear time (its decimal text took quadratic time to write and read)', () => {
  const huge = -(7n ** 1_500_000n) // about 1.27 million decimal digits
  const started = performance.now()
  const bytes = valueBytes({ huge }, 'v')
  const back = readValue(bytes) as { huge: bigint }
  const ms = performance.now() - started
  assert.ok(back.huge === huge, 'the same BigInt comes back')
  assert.ok(bytes.byteLength < 1_100_000, `sent as hex (${bytes.byteLength} bytes)`)
  assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`)
})

value('regression: a peer\'s decimal BigInt of a million digits is refused with a protocol error, promptly', () => {
  const started = performance.now()
  const err = throwsA(ProtocolError, () => readValue(payload(`[["BigInt","${'9'.repeat(1_000_000)}"]]`)))
  assert.match(err.message, 'BigInt of 1000000 decimal digits')
  assert.ok(performance.now() - started < 100, 'refused before parsing')
  // Short decimal BigInts (devalue's own format) still decode, boxed ones too.
  assert.is(readValue(payload('[["BigInt","-12345678901234567890"]]')), -12345678901234567890n)
  assert.equal(readValue(payload('[["Object",1],["BigInt","12"]]')), Object(12n))
})

value('round-trips boxed primitives, a boxed BigInt among them', () => {
  const boxed = [Object(1n), Object(2), Object('s'), Object(false)]
  deepStrictEqual(readValue(valueBytes(boxed, 'v')), boxed)
})

const hostile = suite('hostile payloads')

/** Payloads a hostile peer could send, meant to reach Object.prototype. */
const pollution: [string, Uint8Array, boolean][] = [
  ['a __proto__ key', payload('[{"__proto__":1},{"polluted":2},true]'), false],
  ['a __proto__ key in a null-prototype object', payload('[["null","__proto__",1],{"polluted":2},true]'), false],
  ['a __proto__ key in an error\'s properties', payload('[["Error",1],[2,3,3,4,5],"E","m",{"__proto__":6},0,{"polluted":7},true]'), false],
  ['a constructor.prototype path', payload('[{"constructor":1},{"prototype":2},{"polluted":3},true]'), true],
]

for (const [name, p, decodes] of pollution) {
  hostile(`decoding ${name} leaves Object.prototype alone`, () => {
    try {
      readValue(p)
      assert.ok(decodes, 'expected a refusal')
    } catch (err) {
      assert.instance(err, ProtocolError)
    }
    assert.is(({} as { polluted?: unknown }).polluted, undefined)
    assert.is(Object.getPrototypeOf({}), Object.prototype)
  })
}

hostile('a reference chain deep enough to overflow the stack is a protocol error', () => {
  const n = 200_000
  const chain = Array.from({ length: n }, (_, i) => (i < n - 1 ? `[${i + 1}]` : '1'))
  throwsA(ProtocolError, () => readValue(payload(`[${chain.join(',')}]`)))
})

hostile('an out-of-range reference is a protocol error', () => {
  for (const text of ['[[5]]', '[{"a":9}]', '[["Map",1,7],1]', '[["Error",9]]', '[["Set",2]]', '0', '[]', '{}', '[1']) {
    throwsA(ProtocolError, () => readValue(payload(text)))
  }
})

hostile('a type that is not one of ours or devalue\'s is refused, never constructed', () => {
  for (const type of ['Foo', 'Buffer', 'Function', 'Promise', 'Object.prototype', 'constructor', 'hasOwnProperty', '__proto__', 'WeakMap']) {
    const err = throwsA(ProtocolError, () => readValue(payload(`[["${type}",1],"x"]`)))
    assert.match(err.message, type)
  }
})

hostile('regression: a malformed error record is a protocol error (was rebuilt from whatever it held)', () => {
  for (const text of ['[["Error",1],5]', '[["Error",1],[]]', '[["Error",1],[2,2,2,3],"E",5]', '[["Error",1],[2,2,2,2,3,4,5],"E",1,0,4]', '[["Error",1],[2,3,3,4,5,6,7],"AggregateError","m",{},0,-1,5]']) {
    throwsA(ProtocolError, () => readValue(payload(text)))
  }
})

value.run()
hostile.run()
