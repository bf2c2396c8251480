// What the codec specs share: the values that must come back equal, whole
// or as stream items, and helpers to build and refuse hostile payloads.
import * as assert from 'uvu/assert'

const cyclic: Record<string, unknown> = { name: 'loop' }
cyclic.self = cyclic
const big = new Uint8Array(1024).map((_, i) => i)

/** Values that must come back equal, whole or as stream items. */
export const roundTrip: [string, unknown][] = [
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

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32LE(n, 0)
  return b
}

/** Runs `fn`, expecting it to throw an instance of `type`; returns the error. */
export function throwsA<T>(type: abstract new (...args: any[]) => T, fn: () => unknown): T {
  try {
    fn()
  } catch (err) {
    if (!(err instanceof type)) throw new assert.Assertion({ message: `expected ${type.name}, got ${String(err)}`, generated: false, operator: 'instance', expects: type.name, actual: err })
    return err
  }
  throw new assert.Assertion({ message: `expected a ${type.name} to be thrown`, generated: false, operator: 'throws', expects: type.name, actual: 'no throw' })
}
