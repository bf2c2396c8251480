/**
 * The codec: how values become bytes in a frame and back.
 *
 * Values go through devalue (Map, Set, Date, BigInt, undefined, cycles, ...)
 * with reducers for errors (name, message, stack, own properties, `cause`,
 * AggregateError's `errors`) and for binary data: every `ArrayBuffer` and
 * view travels as a raw attachment after the text, holding exactly the
 * view's bytes (never its whole backing buffer, never base64).
 *
 * Items of a stream take shortcuts where they can: a number is 8 bytes, a
 * string or a `Uint8Array` is its bytes, a JSON-safe plain value is JSON text;
 * only the rest pays for devalue.
 *
 * @module
 */
import * as devalue from 'devalue'
import { ProtocolError, SerializeError, wireErrorClasses, wireFarpipeErrors } from './errors.ts'
import { asBuffer, HEADER_BYTES, type FrameWriter } from './wire.ts'

/** How an item is encoded inside a data frame: `u8 tag | u32 length | bytes`. */
const Tag = { number: 1, string: 2, bytes: 3, arrayBuffer: 4, json: 5, value: 6 } as const

/** Bytes of an item's own header (tag and length). */
const ITEM_HEADER = 5

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

/** What the error reducer records: [name, message, stack, own props, cause?, errors?]. */
type ErrorRecord = [string, string, string, Record<string, unknown>, ...unknown[]]

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
  r.Error = (v) => (v instanceof Error ? errorRecord(v, attachments, hooks) : undefined)
  return r
}

function errorName(e: Error): string {
  const name = typeof e.name === 'string' ? e.name : 'Error'
  if (name !== 'Error') return name
  const ctor = (e as { constructor?: { name?: unknown } }).constructor?.name
  return typeof ctor === 'string' && ctor ? ctor : 'Error'
}

/**
 * An error's parts. Own properties that cannot be sent are replaced by a
 * description rather than failing the whole error: an error must always be
 * able to say what went wrong.
 */
function errorRecord(e: Error, attachments: Uint8Array[], hooks: StreamHooks | undefined): ErrorRecord {
  const props: Record<string, unknown> = {}
  for (const key of Object.keys(e)) {
    if (key === 'message' || key === 'stack' || key === 'cause' || key === 'errors') continue
    props[key] = sendable((e as unknown as Record<string, unknown>)[key], attachments, hooks)
  }
  const record: ErrorRecord = [errorName(e), String(e.message), String(e.stack ?? ''), props]
  const hasCause = Object.hasOwn(e, 'cause')
  // A cause chain that loops back (err.cause === err) cannot be rebuilt through a reviver: say so instead.
  const cause = hasCause && causeLoops(e) ? `[circular cause: ${errorName(e)}: ${e.message}]` : e.cause
  record.push(hasCause ? 1 : 0, hasCause ? sendable(cause, attachments, hooks) : undefined)
  if (e instanceof AggregateError && Array.isArray(e.errors)) record.push(e.errors.map((x) => sendable(x, attachments, hooks)))
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

function sendable(v: unknown, attachments: Uint8Array[], hooks: StreamHooks | undefined): unknown {
  if (v instanceof Error) return v
  try {
    devalue.stringify(v, reducers([], hooks))
    return v
  } catch {
    return `[unsendable ${describe(v)}]`
  }
}

function describe(v: unknown): string {
  if (typeof v === 'function') return 'function'
  if (typeof v === 'symbol') return 'symbol'
  if (typeof v === 'object' && v !== null) {
    const proto = Object.getPrototypeOf(v)
    const name = proto?.constructor?.name
    if (typeof (v as { then?: unknown }).then === 'function') return 'promise'
    return name && name !== 'Object' ? `instance of ${name}` : 'object with symbol keys'
  }
  return typeof v
}

function revivers(attachments: Uint8Array[], hooks: StreamHooks | undefined): Record<string, (v: any) => unknown> {
  const r: Record<string, (v: any) => unknown> = {}
  const fromId = hooks?.fromId
  r.Stream = (id: number) => {
    if (!fromId) throw new ProtocolError(`a streamed value (stream ${id}) arrived where none may be`)
    return fromId(id)
  }
  r.Bytes = ([index, kind]: [number, string]) => {
    const att = attachments[index]
    const Ctor = typedArrays[kind]
    if (!att || (!Ctor && kind !== 'ArrayBuffer')) throw new ProtocolError(`bad binary attachment ${index} (${kind})`)
    const copy = new Uint8Array(att.byteLength)
    copy.set(att)
    if (kind === 'ArrayBuffer') return copy.buffer
    if (kind === 'Uint8Array') return copy
    return new Ctor!(copy.buffer)
  }
  r.Error = (record: unknown[]) => reviveError(record)
  return r
}

/** Rebuilds an error from its record, constructing only allow-listed classes. */
function reviveError(record: unknown[]): Error {
  const [name, message, stack, props, hasCause, cause, errors] = record as [string, string, string, Record<string, unknown>, number, unknown, unknown[] | undefined]
  let e: Error
  const farpipe = (wireFarpipeErrors as Record<string, unknown>)[name]
  if (name === 'AggregateError') e = new AggregateError(errors ?? [], message)
  else if (name === 'SerializeError') e = new wireFarpipeErrors.SerializeError(message, String(props.path ?? ''))
  else if (farpipe) e = new (farpipe as new (m: string) => Error)(message)
  else e = new (wireErrorClasses[name] ?? Error)(message)
  if (e.name !== name) Object.defineProperty(e, 'name', { value: name, writable: true, configurable: true, enumerable: false })
  Object.defineProperty(e, 'stack', { value: stack, writable: true, configurable: true, enumerable: false })
  for (const [k, v] of Object.entries(props)) {
    try { (e as unknown as Record<string, unknown>)[k] = v } catch { /* a read-only property of the class */ }
  }
  if (hasCause) Object.defineProperty(e, 'cause', { value: cause, writable: true, configurable: true, enumerable: false })
  return e
}

/**
 * Turns devalue's complaint into a SerializeError that names the path from
 * `root` (`args[0].bad: function`).
 */
function serializeError(err: unknown, root: string): SerializeError {
  if (err instanceof SerializeError) return err
  if (err instanceof devalue.DevalueError) {
    const path = root + err.path
    return new SerializeError(`${path}: ${describe(err.value)} cannot be sent`, path, { cause: err })
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

function readValueAt(b: Buffer, start: number, end: number, hooks?: StreamHooks): unknown {
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
    if (err instanceof ProtocolError) throw err
    throw new ProtocolError(`a value could not be decoded: ${(err as Error).message}`, { cause: err })
  }
}

/**
 * True for values JSON carries exactly: finite numbers (not -0), strings,
 * booleans, null, and arrays and plain objects of those. Cycles and deep
 * nesting give up (devalue takes them).
 */
function isJson(v: unknown, depth: number): boolean {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(v) && (v !== 0 || 1 / v > 0)
    case 'object': {
      if (v === null) return true
      if (depth > 20) return false
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!isJson(v[i], depth + 1)) return false
        return true
      }
      if (Object.getPrototypeOf(v) !== Object.prototype) return false
      for (const k in v) {
        if (k === '__proto__' || !isJson((v as Record<string, unknown>)[k], depth + 1)) return false
      }
      return Object.getOwnPropertySymbols(v).length === 0
    }
    default:
      return false
  }
}

/** Limits an item writer works within. */
export interface ItemLimits {
  /** Start a new frame rather than grow one past this many bytes. */
  softFrameBytes: number
  /** No frame may exceed this; a larger item is refused. */
  maxFrameBytes: number
}

/**
 * Appends one item to the data frame open in `w`, starting a new frame first
 * when this item would take it past the soft limit. Returns the item's size
 * in bytes (what it costs against the receiver's byte credit). Throws
 * {@link SerializeError} (nothing written) when the item cannot be sent or
 * exceeds `maxFrameBytes`; `path` names it in the message.
 */
export function writeItem(w: FrameWriter, v: unknown, limits: ItemLimits, path: () => string): number {
  if (typeof v === 'number') {
    if (w.frameBytes + 13 > limits.softFrameBytes) split(w)
    w.u8(Tag.number)
    w.u32(8)
    w.f64(v)
    return 13
  }
  let tag: number
  let text: string | undefined
  let bytes: Uint8Array | undefined
  let value: EncodedValue | undefined
  if (typeof v === 'string') { tag = Tag.string; text = v }
  else if (v instanceof Uint8Array) { tag = Tag.bytes; bytes = v }
  else if (v instanceof ArrayBuffer) { tag = Tag.arrayBuffer; bytes = new Uint8Array(v) }
  else if (isJson(v, 0)) { tag = Tag.json; text = JSON.stringify(v) }
  else { tag = Tag.value; value = encodeValue(v, path()) }

  // Size before writing: exact for bytes and values, an upper bound for text.
  let size = bytes ? bytes.byteLength : value ? value.bytes : text!.length * 3
  const maxItem = limits.maxFrameBytes - HEADER_BYTES - ITEM_HEADER
  if (size > maxItem && text !== undefined) size = Buffer.byteLength(text, 'utf8')
  if (size > maxItem) {
    const p = path()
    throw new SerializeError(`${p}: item of ${size + ITEM_HEADER} bytes exceeds maxFrameBytes ${limits.maxFrameBytes}`, p)
  }
  if (w.frameBytes > HEADER_BYTES && w.frameBytes + ITEM_HEADER + size > limits.softFrameBytes) split(w)

  const before = w.frameBytes
  w.u8(tag)
  const at = w.reserveU32()
  if (bytes) w.bytes(bytes)
  else if (value) writeValue(w, value)
  else w.utf8(text!)
  w.patchLength(at)
  return w.frameBytes - before
}

function split(w: FrameWriter): void {
  if (w.frameBytes > HEADER_BYTES) w.split()
}

/** Reads every item of a data frame's payload into `out`. */
export function readItems(payload: Uint8Array, out: unknown[]): void {
  const b = asBuffer(payload)
  const end = b.byteLength
  let o = 0
  while (o < end) {
    if (o + ITEM_HEADER > end) throw new ProtocolError(`item header truncated at byte ${o} of ${end}`)
    const tag = b[o]!
    const n = b.readUInt32LE(o + 1)
    o += ITEM_HEADER
    if (o + n > end) throw new ProtocolError(`item of ${n} bytes overruns its frame (${end - o} left)`)
    switch (tag) {
      case Tag.number:
        out.push(b.readDoubleLE(o))
        break
      case Tag.string:
        out.push(b.toString('utf8', o, o + n))
        break
      case Tag.bytes: {
        const copy = new Uint8Array(n)
        copy.set(b.subarray(o, o + n))
        out.push(copy)
        break
      }
      case Tag.arrayBuffer: {
        const copy = new Uint8Array(n)
        copy.set(b.subarray(o, o + n))
        out.push(copy.buffer)
        break
      }
      case Tag.json:
        out.push(JSON.parse(b.toString('utf8', o, o + n)))
        break
      case Tag.value:
        out.push(readValueAt(b, o, o + n))
        break
      default:
        throw new ProtocolError(`unknown item tag ${tag}`)
    }
    o += n
  }
}
