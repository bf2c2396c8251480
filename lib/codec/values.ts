/**
 * Values: how a value becomes bytes in a frame and back (call arguments,
 * return values, errors, and the items that need more than JSON; see
 * items.ts for the items of a stream).
 *
 * Values go through devalue (Map, Set, Date, BigInt, undefined, cycles, ...)
 * with reducers for errors (name, message, stack, own properties, `cause`,
 * AggregateError's `errors`) and for binary data: every `ArrayBuffer` and
 * view travels as a raw attachment after the text, holding exactly the
 * view's bytes (never its whole backing buffer, never base64). Streams in a
 * value are numbered through {@link StreamHooks}.
 *
 * @module
 */
import * as devalue from 'devalue'
import { ProtocolError, SerializeError, wireErrorClasses, wireFarpipeErrors } from '../errors.ts'
import { asBuffer } from '../wire/frame.ts'
import type { FrameWriter } from '../wire/frame-writer.ts'

/** Hooks that turn streamed arguments into ids (sender) and ids into streams (receiver). */
export interface StreamHooks {
  /** Returns an id for a value that must be streamed, or undefined to send it whole. */
  toId?: (value: unknown) => number | undefined
  /** Builds the receiving side of streamed argument `id`. */
  fromId?: (id: number) => unknown
}

/** A value turned into devalue text plus its binary attachments. */
export interface EncodedValue {
  text: string
  attachments: Uint8Array[]
  /** Bytes this value takes in a frame. */
  bytes: number
}

const typedArrays: Record<string, new (buffer: ArrayBuffer) => ArrayBufferView> = {
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array,
  Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView,
}

/**
 * Decimal BigInts longer than this are refused on receipt. farpipe itself
 * sends BigInts as hex, which parses in linear time; devalue's decimal form
 * can only come from another implementation, and its parse time grows faster
 * than its length (a million digits: about 100 ms), so a frame full of it
 * could stall the receiver for many seconds.
 */
const MAX_DECIMAL_BIGINT_DIGITS = 10_000

/**
 * `table[name]` when `name` is an own key of `table`. A plain `table[name]`
 * would also find what every object inherits (`constructor`, `toString`,
 * `__proto__`, ...), and a peer must never pick what gets constructed.
 */
function own<T>(table: Readonly<Record<string, T>>, name: unknown): T | undefined {
  return typeof name === 'string' && Object.hasOwn(table, name) ? table[name] : undefined
}

/** What the error reducer records: [name, message, stack, own props, has cause, cause, errors, class]. */
type ErrorRecord = [string, string, string, Record<string, unknown>, ...unknown[]]

/**
 * Every class an error may be rebuilt as, by the name it travels under
 * (see {@link wireErrorClasses}): an error is rebuilt as the nearest of
 * these on its prototype chain, and keeps its own name.
 */
const wireClasses: Readonly<Record<string, new (message: string) => Error>> = {
  ...wireErrorClasses,
  AggregateError: AggregateError as unknown as new (message: string) => Error,
  ...(wireFarpipeErrors as unknown as Record<string, new (message: string) => Error>),
}
const wireClassNames = new Map<unknown, string>(Object.entries(wireClasses).map(([name, c]) => [c, name]))

/** The name of the nearest class on `e`'s prototype chain that the receiver rebuilds. */
function wireClass(e: Error): string {
  for (let p = Object.getPrototypeOf(e) as object | null; p; p = Object.getPrototypeOf(p) as object | null) {
    const name = Object.hasOwn(p, 'constructor') ? wireClassNames.get((p as { constructor: unknown }).constructor) : undefined
    if (name) return name
  }
  return 'Error'
}

function reducers(attachments: Uint8Array[], hooks: StreamHooks | undefined): Record<string, (v: any) => unknown> {
  const r: Record<string, (v: any) => unknown> = {}
  const toId = hooks?.toId
  if (toId) r.Stream = (v) => (typeof v === 'object' && v !== null ? toId(v) : undefined)
  r.Bytes = (v) => {
    if (typeof v !== 'object' || v === null) return undefined
    if (v instanceof ArrayBuffer) {
      attachments.push(new Uint8Array(v))
      return [attachments.length - 1, 'ArrayBuffer']
    }
    if (!ArrayBuffer.isView(v)) return undefined
    const kind = v instanceof Uint8Array ? 'Uint8Array' : v instanceof DataView ? 'DataView' : Object.prototype.toString.call(v).slice(8, -1)
    if (!typedArrays[kind]) return undefined
    attachments.push(new Uint8Array(v.buffer, v.byteOffset, v.byteLength))
    return [attachments.length - 1, kind]
  }
  r.Error = (v) => (v instanceof Error ? errorRecord(v, hooks) : undefined)
  // Hex, not devalue's decimal text: writing and parsing decimal takes time
  // that grows faster than the number of digits; hex takes linear time.
  // Named `BigInt` so that its reviver also receives devalue's own form.
  r.BigInt = (v) => (typeof v === 'bigint' ? (v < 0n ? '-0x' + (-v).toString(16) : '0x' + v.toString(16)) : undefined)
  return r
}

function errorName(e: Error): string {
  const name = typeof e.name === 'string' ? e.name : 'Error'
  // An inherited "Error" says little (`class MyError extends Error {}`): the class name says more. An own one was meant.
  if (name !== 'Error' || Object.hasOwn(e, 'name')) return name
  const ctor = (e as { constructor?: { name?: unknown } }).constructor?.name
  return typeof ctor === 'string' && ctor ? ctor : 'Error'
}

/**
 * An error's parts. Own properties that cannot be sent are replaced by a
 * description rather than failing the whole error: an error must always be
 * able to say what went wrong.
 */
function errorRecord(e: Error, hooks: StreamHooks | undefined): ErrorRecord {
  const props: Record<string, unknown> = {}
  for (const key of Object.keys(e)) {
    // An own `__proto__` key cannot cross (devalue refuses it both ways, and
    // assigning it here would replace `props`' prototype): it is left out.
    if (key === 'message' || key === 'stack' || key === 'cause' || key === 'errors' || key === '__proto__') continue
    props[key] = sendable((e as unknown as Record<string, unknown>)[key], key, hooks)
  }
  const record: ErrorRecord = [errorName(e), String(e.message), String(e.stack ?? ''), props]
  const hasCause = Object.hasOwn(e, 'cause')
  // A cause chain that loops back (err.cause === err) cannot be rebuilt through a reviver: say so instead.
  const cause = hasCause && causeLoops(e) ? `[circular cause: ${errorName(e)}: ${e.message}]` : e.cause
  record.push(hasCause ? 1 : 0, hasCause ? sendable(cause, 'cause', hooks) : undefined)
  record.push(e instanceof AggregateError && Array.isArray(e.errors) ? e.errors.map((x, i) => sendable(x, `errors[${i}]`, hooks)) : undefined)
  record.push(wireClass(e))
  return record
}

function causeLoops(e: Error): boolean {
  let c: unknown = e.cause
  for (let depth = 0; c instanceof Error && depth < 100; depth++) {
    if (c === e) return true
    c = c.cause
  }
  return false
}

/** `v` if it can be sent, else a note saying where (from `path`) and why it cannot. */
function sendable(v: unknown, path: string, hooks: StreamHooks | undefined): unknown {
  if (v instanceof Error) return v
  try {
    devalue.stringify(v, reducers([], hooks))
    return v
  } catch (err) {
    return `[unsendable: ${serializeError(err, path).message}]`
  }
}

/** What a value that devalue refused is, for messages. */
function describe(v: unknown): string {
  if (typeof v === 'function') return 'function'
  if (typeof v === 'symbol') return 'symbol'
  if (typeof v === 'object' && v !== null) {
    if (typeof (v as { then?: unknown }).then === 'function') return 'promise'
    const proto: unknown = Object.getPrototypeOf(v)
    if (proto === Object.prototype || proto === null) {
      return Object.getOwnPropertySymbols(v).length > 0 ? 'object with symbol keys' : 'object'
    }
    const name = (proto as { constructor?: { name?: unknown } }).constructor?.name
    if (typeof name === 'string' && name && name !== 'Object') return `instance of ${name}`
    return 'object with a prototype other than Object.prototype or null'
  }
  return typeof v
}

function revivers(attachments: Uint8Array[], hooks: StreamHooks | undefined): Record<string, (v: any) => unknown> {
  const r: Record<string, (v: any) => unknown> = {}
  const fromId = hooks?.fromId
  r.Stream = (id: unknown) => {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 1 || id > 0xffff) {
      throw new ProtocolError(`a streamed value names stream ${typeof id === 'number' ? id : typeof id}, not a stream id (1 to 65535)`)
    }
    if (!fromId) throw new ProtocolError(`a streamed value (stream ${id}) arrived where none may be`)
    return fromId(id)
  }
  // The sender writes one attachment per view; a payload naming one twice
  // would make the receiver copy it again and again (a small frame asking
  // for gigabytes), so each may be used once.
  const used = new Set<number>()
  r.Bytes = (v: unknown) => {
    const [index, kind] = Array.isArray(v) ? (v as unknown[]) : []
    const att = typeof index === 'number' && Number.isInteger(index) ? attachments[index] : undefined
    const Ctor = own(typedArrays, kind)
    if (!att || (!Ctor && kind !== 'ArrayBuffer')) {
      throw new ProtocolError(`bad binary attachment ${typeof index === 'number' ? index : typeof index} (${typeof kind === 'string' ? kind : typeof kind}) of ${attachments.length}`)
    }
    if (used.has(index as number)) throw new ProtocolError(`binary attachment ${index} is used twice`)
    used.add(index as number)
    const copy = new Uint8Array(att.byteLength)
    copy.set(att)
    if (kind === 'ArrayBuffer') return copy.buffer
    if (kind === 'Uint8Array') return copy
    return new Ctor!(copy.buffer)
  }
  r.Error = (record: unknown) => reviveError(record)
  r.BigInt = (text: unknown) => {
    if (typeof text !== 'string') throw new ProtocolError(`a BigInt arrived as ${typeof text}, not as text`)
    const negative = text.startsWith('-')
    const digits = negative ? text.slice(1) : text
    if (digits.startsWith('0x')) {
      const n = BigInt(digits)
      return negative ? -n : n
    }
    if (digits.length > MAX_DECIMAL_BIGINT_DIGITS) {
      throw new ProtocolError(`a BigInt of ${digits.length} decimal digits exceeds the limit of ${MAX_DECIMAL_BIGINT_DIGITS} (farpipe sends BigInts as hex)`)
    }
    return BigInt(text)
  }
  return r
}

/** Rebuilds an error from its record, constructing only allow-listed classes. */
function reviveError(record: unknown): Error {
  const [name, message, stack, props, hasCause, cause, errors, base] = Array.isArray(record) ? (record as unknown[]) : []
  if (typeof name !== 'string' || typeof message !== 'string' || typeof stack !== 'string' || !isRecord(props) || (errors !== undefined && !Array.isArray(errors))) {
    throw new ProtocolError('an error arrived as a malformed record (expected name, message, stack, properties)')
  }
  // The class the sender found on the error's prototype chain; from a peer that did not say, the one its name names.
  const cls = own(wireClasses, base) ? (base as string) : own(wireClasses, name) ? name : 'Error'
  let e: Error
  if (cls === 'AggregateError') e = new AggregateError(errors ?? [], message)
  else if (cls === 'SerializeError') e = new wireFarpipeErrors.SerializeError(message, typeof props.path === 'string' ? props.path : '')
  else e = new wireClasses[cls]!(message)
  if (e.name !== name) Object.defineProperty(e, 'name', { value: name, writable: true, configurable: true, enumerable: false })
  Object.defineProperty(e, 'stack', { value: stack, writable: true, configurable: true, enumerable: false })
  for (const [k, v] of Object.entries(props)) {
    if (k === '__proto__') continue // devalue refuses the key already; never assign it
    try { (e as unknown as Record<string, unknown>)[k] = v } catch { /* a read-only property of the class */ }
  }
  if (hasCause) Object.defineProperty(e, 'cause', { value: cause, writable: true, configurable: true, enumerable: false })
  return e
}

/** True for an object devalue builds from `{...}` (its prototype is Object.prototype or null). */
function isRecord(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null) return false
  const proto: unknown = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/**
 * Turns devalue's complaint into a SerializeError that names the path from
 * `root` (`args[0].bad: function`).
 */
function serializeError(err: unknown, root: string): SerializeError {
  if (err instanceof SerializeError) return err
  if (err instanceof devalue.DevalueError) {
    const path = root + err.path
    const v: unknown = err.value
    if (typeof v === 'object' && v !== null && Object.hasOwn(v, '__proto__')) {
      const at = `${path}.__proto__`
      return new SerializeError(
        `${at}: an own "__proto__" key cannot be sent (the receiving side would take it for the object's prototype, so devalue refuses it); rename the key or send a Map`,
        at,
        { cause: err },
      )
    }
    return new SerializeError(`${path}: ${describe(v)} cannot be sent`, path, { cause: err })
  }
  const message = err instanceof Error ? err.message : String(err)
  return new SerializeError(`${root}: cannot be sent (${message})`, root, { cause: err })
}

/**
 * Encodes a value with devalue. Throws {@link SerializeError} naming the
 * path (from `root`) to the first part that cannot be sent.
 */
export function encodeValue(value: unknown, root: string, hooks?: StreamHooks): EncodedValue {
  const attachments: Uint8Array[] = []
  hooks = onceEach(hooks)
  let text: string
  try {
    text = devalue.stringify(value, reducers(attachments, hooks))
  } catch (err) {
    throw serializeError(err, root)
  }
  let bytes = 8 + Buffer.byteLength(text, 'utf8')
  for (const a of attachments) bytes += 4 + a.byteLength
  return { text, attachments, bytes }
}

/**
 * Hooks whose `toId` gives a stream the same id each time it is asked.
 * Error properties are encoded once on trial (to replace what cannot be
 * sent) before the real encoding, and `toId` starts pumping the stream it
 * numbers: asked twice, it would start two.
 */
function onceEach(hooks: StreamHooks | undefined): StreamHooks | undefined {
  const toId = hooks?.toId
  if (!toId) return hooks
  let ids: Map<unknown, number> | undefined // made at the first stream: most values hold none
  return {
    ...hooks,
    toId(v) {
      let id = ids?.get(v)
      if (id === undefined) {
        id = toId(v)
        if (id !== undefined) (ids ??= new Map()).set(v, id)
      }
      return id
    },
  }
}

/** Writes an encoded value: `u32 text length | text | u32 count | (u32 length | bytes)*`. */
export function writeValue(w: FrameWriter, v: EncodedValue): void {
  const at = w.reserveU32()
  w.utf8(v.text)
  w.patchLength(at)
  w.u32(v.attachments.length)
  for (const a of v.attachments) {
    w.u32(a.byteLength)
    w.bytes(a)
  }
}

/** Encodes a value into a buffer of its own (for call arguments, return values, errors). */
export function valueBytes(value: unknown, root: string, hooks?: StreamHooks): Buffer {
  const v = encodeValue(value, root, hooks)
  const text = Buffer.from(v.text, 'utf8')
  const out = Buffer.allocUnsafe(v.bytes)
  let o = out.writeUInt32LE(text.byteLength, 0)
  o += text.copy(out, o)
  o = out.writeUInt32LE(v.attachments.length, o)
  for (const a of v.attachments) {
    o = out.writeUInt32LE(a.byteLength, o)
    out.set(a, o)
    o += a.byteLength
  }
  return out
}

/** Reads a value written by {@link writeValue} or {@link valueBytes}. */
export function readValue(payload: Uint8Array, hooks?: StreamHooks): unknown {
  const b = asBuffer(payload)
  return readValueAt(b, 0, b.byteLength, hooks)
}

/** Reads a value written by {@link writeValue} from `b`, between `start` and `end` (an item inside a data frame). */
export function readValueAt(b: Buffer, start: number, end: number, hooks?: StreamHooks): unknown {
  let o = start
  const need = (n: number) => {
    if (o + n > end) throw new ProtocolError(`value truncated: needs ${o + n - start} bytes, has ${end - start}`)
  }
  need(4)
  const textBytes = b.readUInt32LE(o)
  o += 4
  need(textBytes + 4)
  const text = b.toString('utf8', o, o + textBytes)
  o += textBytes
  const count = b.readUInt32LE(o)
  o += 4
  const attachments: Uint8Array[] = []
  for (let i = 0; i < count; i++) {
    need(4)
    const n = b.readUInt32LE(o)
    o += 4
    need(n)
    attachments.push(b.subarray(o, o + n))
    o += n
  }
  try {
    return devalue.parse(text, revivers(attachments, hooks))
  } catch (err) {
    // Whatever a malformed payload makes devalue, JSON or a constructor
    // throw (including a stack overflow on deep nesting) is the peer's fault.
    if (err instanceof ProtocolError) throw err
    throw new ProtocolError(`a value could not be decoded: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
}
