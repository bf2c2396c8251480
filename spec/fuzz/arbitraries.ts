// What the fuzz suites share: run counts, a property runner that says how
// many cases ran and how to replay a failure, the value arbitraries, and a
// structural equality that tells NaN, -0, error classes and causes apart.
//
// Env: FARPIPE_FUZZ_RUNS  cases per property (default 500; `npm run fuzz`: 100000)
//      FARPIPE_FUZZ_SEED, FARPIPE_FUZZ_PATH, FARPIPE_FUZZ_ONLY  replay a failure
//      (a failing property prints all three; ONLY skips the properties whose name does not contain it)
import fc from 'fast-check'
import type { Test } from 'uvu'
import { CancelError, FarpipeError, ProtocolError, SerializeError, TimeoutError, TransportError } from '../../lib/errors.ts'

/** Cases per property. */
export const RUNS = Number(process.env.FARPIPE_FUZZ_RUNS ?? 500)

/**
 * Defines a uvu case that checks `property` for `runs` cases (a fraction of
 * {@link RUNS} for expensive properties). A failure reports fast-check's
 * counterexample, seed and path; with FARPIPE_FUZZ_RUNS set, each property
 * also prints how many cases it ran and how long they took.
 */
export function property<Ts>(test: Test, name: string, prop: fc.IProperty<Ts>, runs = RUNS): void {
  const only = process.env.FARPIPE_FUZZ_ONLY
  if (only && !name.includes(only)) return void test.skip(name)
  test(name, () => {
    const seed = process.env.FARPIPE_FUZZ_SEED
    const path = process.env.FARPIPE_FUZZ_PATH
    const started = performance.now()
    const details = fc.check(prop, {
      numRuns: Math.max(1, Math.round(runs)),
      ...(seed ? { seed: Number(seed) } : {}),
      ...(path ? { path } : {}),
    })
    const ms = performance.now() - started
    if (process.env.FARPIPE_FUZZ_RUNS) process.stderr.write(`  [fuzz] ${name}: ${details.numRuns} cases in ${(ms / 1000).toFixed(1)} s\n`)
    if (details.failed) {
      const why = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance)
      throw new Error(`${why}\n${fc.defaultReportMessage(details)}\nReplay: FARPIPE_FUZZ_SEED=${details.seed} FARPIPE_FUZZ_PATH=${details.counterexamplePath ?? ''} FARPIPE_FUZZ_ONLY=${JSON.stringify(name)}`)
    }
  })
}

/** Runs `fn`; returns what it threw (or undefined). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  return undefined
}

/** Fails unless `err` is undefined or a ProtocolError. */
export function onlyProtocolErrors(err: unknown): void {
  if (err !== undefined && !(err instanceof ProtocolError)) {
    throw new Error(`expected a ProtocolError or nothing, got ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)}`, { cause: err })
  }
}

/** Byte arrays: mostly small, sometimes large enough to get a frame of their own (16 KiB and up). */
export const bytes = fc.oneof(
  { weight: 20, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 16 * 1024, maxLength: 20 * 1024 }) },
)

/** BigInts of every size, up to about 3,000 decimal digits. */
export const bigints = fc.oneof(
  fc.bigInt(),
  fc.bigInt({ min: -(2n ** 10_000n), max: 2n ** 10_000n }),
)

const errorNames = ['Error', 'TypeError', 'RangeError', 'SyntaxError', 'EvalError', 'URIError', 'ReferenceError', 'MyError', 'constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf', 'FarpipeError', 'TimeoutError', 'CancelError', 'TransportError', 'ProtocolError']

/** Errors of many classes and names, with own properties, causes (errors or not) and AggregateError's errors, `depth` levels deep. */
export function errors(leaf: fc.Arbitrary<unknown>, depth = 2): fc.Arbitrary<Error> {
  const inner: fc.Arbitrary<Error> | undefined = depth > 0 ? errors(leaf, depth - 1) : undefined
  return fc
    .record({
      kind: fc.constantFrom(Error, TypeError, RangeError, SyntaxError, AggregateError, TimeoutError, CancelError, TransportError, SerializeError),
      name: fc.option(fc.oneof(fc.constantFrom(...errorNames), fc.string()), { nil: undefined }),
      message: fc.string(),
      props: fc.dictionary(fc.constantFrom('code', 'detail', 'errno', 'path', 'x'), leaf, { maxKeys: 3 }),
      hasCause: fc.boolean(),
      cause: inner ? fc.oneof({ weight: 3, arbitrary: leaf }, { weight: 1, arbitrary: inner }) : leaf,
      errors: inner ? fc.array(inner, { maxLength: 2 }) : fc.constant([]),
    })
    .map(({ kind, name, message, props, cause, hasCause, errors }) => {
      const e: Error =
        kind === AggregateError ? new AggregateError(errors, message)
        : kind === SerializeError ? new SerializeError(message, 'args[0]')
        : new (kind as new (m: string) => Error)(message)
      // defineProperty: farpipe's errors have a `name` getter.
      if (name !== undefined) Object.defineProperty(e, 'name', { value: name, writable: true, enumerable: true, configurable: true })
      Object.assign(e, props)
      if (hasCause) Object.defineProperty(e, 'cause', { value: cause, writable: true, configurable: true, enumerable: false })
      return e
    })
}

/** Leaves the codec must carry besides what fc.anything makes. */
const extraLeaves: fc.Arbitrary<unknown>[] = [
  bigints,
  bytes,
  bytes.map((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)),
  fc.uint8Array({ minLength: 4, maxLength: 64 }).chain((b) => fc.nat(b.byteLength).map((at) => b.subarray(at))), // a view into a larger buffer
  fc.date(),
  fc.constantFrom(NaN, -0, Infinity, -Infinity, undefined, null, /a+b/giu),
  fc.string({ unit: 'binary' }), // lone surrogates
  fc.bigInt64Array({ maxLength: 4 }),
  fc.bigUint64Array({ maxLength: 4 }),
  fc.uint8Array({ maxLength: 16 }).map((b) => new DataView(b.buffer)),
]

/**
 * Values the codec must round-trip: everything fc.anything makes with Map,
 * Set, Date, BigInt, boxed values, null prototypes, sparse and typed arrays,
 * plus raw bytes, huge BigInts and errors with causes.
 */
export function values(opts: { maxDepth?: number } = {}): fc.Arbitrary<unknown> {
  const leaf = fc.oneof(...extraLeaves)
  const any = fc.anything({
    maxDepth: opts.maxDepth ?? 3,
    maxKeys: 5,
    // Now and then a key every object inherits, or the one the codec must refuse.
    key: fc.oneof({ weight: 20, arbitrary: fc.string() }, { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'toString', 'prototype', 'hasOwnProperty') }),
    values: [fc.boolean(), fc.integer(), fc.double(), fc.string(), fc.oneof(...extraLeaves)],
    withBoxedValues: true,
    withMap: true,
    withSet: true,
    withNullPrototype: true,
    withBigInt: true,
    withDate: true,
    withTypedArray: true,
    withSparseArray: true,
    stringUnit: 'grapheme',
  })
  return fc.oneof({ weight: 6, arbitrary: any }, { weight: 1, arbitrary: errors(any) }, { weight: 1, arbitrary: fc.array(errors(leaf), { maxLength: 3 }) })
}

/** Values JSON carries (the item writer packs runs of them). */
export const jsonValues = fc.jsonValue({ maxDepth: 3 })

/** True when `v` holds an own `__proto__` key somewhere (the codec refuses those). */
export function hasProtoKey(v: unknown, seen = new Set<unknown>()): boolean {
  if (typeof v !== 'object' || v === null || seen.has(v)) return false
  seen.add(v)
  // An error is always sent: a part of it that cannot be is replaced by a note (see sameErrorPart).
  if (v instanceof Error) return false
  if (v instanceof Map) return [...v].some(([k, x]) => hasProtoKey(k, seen) || hasProtoKey(x, seen))
  if (v instanceof Set) return [...v].some((x) => hasProtoKey(x, seen))
  if (ArrayBuffer.isView(v)) return false
  if (Object.hasOwn(v, '__proto__') && !Array.isArray(v)) return true
  return Object.keys(v).some((k) => hasProtoKey((v as Record<string, unknown>)[k], seen))
}

/** The classes a decoded value may be built from: anything else was constructed because a peer named it. */
export const allowedClasses = new Set<unknown>([
  Object, Array, Map, Set, Date, RegExp, ArrayBuffer, DataView, Number, String, Boolean, BigInt, URL, URLSearchParams,
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array,
  Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError, AggregateError,
  FarpipeError, TransportError, ProtocolError, SerializeError, TimeoutError, CancelError,
])

/** Fails when a decoded value holds an object whose class is not in {@link allowedClasses}. */
export function assertAllowedClasses(v: unknown, seen = new Set<unknown>()): void {
  if (typeof v !== 'object' || v === null || seen.has(v)) return
  seen.add(v)
  const proto = Object.getPrototypeOf(v) as object | null
  // Every allowed class's prototype has its own `constructor`; anything else is a prototype someone made up.
  if (proto !== null && !(Object.hasOwn(proto, 'constructor') && allowedClasses.has((proto as { constructor: unknown }).constructor))) {
    throw new Error(`decoded an object of a class not allowed: ${Object.prototype.toString.call(v)}`)
  }
  if (v instanceof Map) for (const [k, x] of v) (assertAllowedClasses(k, seen), assertAllowedClasses(x, seen))
  else if (v instanceof Set) for (const x of v) assertAllowedClasses(x, seen)
  else if (!ArrayBuffer.isView(v)) for (const k of Reflect.ownKeys(v)) assertAllowedClasses((v as Record<PropertyKey, unknown>)[k], seen)
}

/**
 * Throws unless `b` is `a` as the codec must rebuild it: same primitives
 * (NaN, -0 and BigInts included), same classes, same own keys, same bytes,
 * entries in the same order, errors with the same name, message, stack,
 * properties, cause and errors. Follows cycles.
 */
export function assertSame(a: unknown, b: unknown, path = 'v', seen = new Map<unknown, unknown>()): void {
  const fail = (what: string): never => {
    throw new Error(`${path}: ${what}`)
  }
  if (typeof a !== typeof b) fail(`${typeof a} came back as ${typeof b}`)
  if (typeof a !== 'object' || a === null) {
    if (!Object.is(a, b)) fail(`${String(a)} came back as ${String(b)}`)
    return
  }
  if (b === null) return fail('came back as null')
  const y = b as object
  if (seen.has(a)) {
    if (seen.get(a) !== b) fail('a shared reference came back as a copy')
    return
  }
  seen.set(a, b)
  const proto = Object.getPrototypeOf(a)
  if (Object.getPrototypeOf(y) !== proto) fail(`class ${proto?.constructor?.name} came back as ${Object.getPrototypeOf(y)?.constructor?.name}`)
  if (a instanceof Error) {
    const e = y as Error
    if (e.name !== a.name) fail(`error name ${a.name} came back as ${e.name}`)
    if (e.message !== a.message) fail('error message differs')
    if (e.stack !== String(a.stack ?? '')) fail('error stack differs')
    if (Object.hasOwn(a, 'cause') !== Object.hasOwn(e, 'cause')) fail('error cause lost or added')
    if (Object.hasOwn(a, 'cause')) sameErrorPart(a.cause, e.cause, `${path}.cause`, seen)
    if (a instanceof AggregateError) {
      const [xs, ys] = [a.errors, (e as AggregateError).errors]
      if (xs.length !== ys.length) fail('errors differ in number')
      xs.forEach((x, i) => sameErrorPart(x, ys[i], `${path}.errors[${i}]`, seen))
    }
    for (const k of Object.keys(a)) {
      if (k !== '__proto__' && k !== 'name') sameErrorPart((a as unknown as Record<string, unknown>)[k], (e as unknown as Record<string, unknown>)[k], `${path}.${k}`, seen)
    }
    return
  }
  if (a instanceof Date) return assertSame(a.getTime(), (y as Date).getTime(), `${path}.getTime()`, seen)
  if (a instanceof RegExp) return assertSame(String(a), String(y), path, seen)
  if (a instanceof ArrayBuffer) return assertBytes(new Uint8Array(a), new Uint8Array(y as ArrayBuffer), path)
  if (ArrayBuffer.isView(a)) {
    const v = y as ArrayBufferView
    return assertBytes(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), new Uint8Array(v.buffer, v.byteOffset, v.byteLength), path)
  }
  if (a instanceof Map || a instanceof Set) {
    const xs = [...a]
    const ys = [...(y as Map<unknown, unknown> | Set<unknown>)]
    if (xs.length !== ys.length) fail(`size ${xs.length} came back as ${ys.length}`)
    xs.forEach((x, i) => assertSame(x, ys[i], `${path}[entry ${i}]`, seen))
    return
  }
  if (a instanceof Number || a instanceof String || a instanceof Boolean || a instanceof BigInt) {
    return assertSame(a.valueOf(), (y as { valueOf(): unknown }).valueOf(), `${path}.valueOf()`, seen)
  }
  const ka = Object.keys(a).sort()
  const kb = Object.keys(y).sort()
  if (ka.join('\0') !== kb.join('\0')) fail(`keys [${ka}] came back as [${kb}]`)
  if (Array.isArray(a) && a.length !== (y as unknown[]).length) fail(`length ${a.length} came back as ${(y as unknown[]).length}`)
  for (const k of ka) assertSame((a as Record<string, unknown>)[k], (y as Record<string, unknown>)[k], `${path}.${k}`, seen)
}

/** A part of an error (property, cause, one of its errors) came back as itself, or as a note when it cannot be sent. */
function sameErrorPart(a: unknown, b: unknown, path: string, seen: Map<unknown, unknown>): void {
  if (hasProtoKey(a)) {
    if (typeof b !== 'string' || !b.startsWith('[unsendable: ') || !b.includes('"__proto__" key')) throw new Error(`${path}: expected a note for an unsendable part, got ${String(b)}`)
    return
  }
  assertSame(a, b, path, seen)
}

function assertBytes(a: Uint8Array, b: Uint8Array, path: string): void {
  if (a.byteLength !== b.byteLength || !Buffer.from(a).equals(Buffer.from(b))) throw new Error(`${path}: bytes differ`)
}
