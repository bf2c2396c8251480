/**
 * Items: how the items of a stream are written into data frames and read
 * back. They take shortcuts where they can: runs of numbers are 8 bytes
 * each, runs of JSON-safe values (strings, plain objects, arrays) are one
 * JSON array, a `Uint8Array` is its bytes; only the rest pays for devalue
 * (values.ts).
 *
 * @module
 */
import { ProtocolError, SerializeError } from '../errors.ts'
import { asBuffer, HEADER_BYTES } from '../wire/frame.ts'
import type { FrameWriter } from '../wire/frame-writer.ts'
import { encodeValue, readValueAt, writeValue, type EncodedValue, type StreamHooks } from './values.ts'

/**
 * How items are encoded inside a data frame. Runs: `u8 numbers | u32 count | f64 × count` and
 * `u8 json | u32 count | u32 length | JSON array text`. Single items: `u8 tag | u32 length | bytes`.
 */
const Tag = { bytes: 3, arrayBuffer: 4, value: 6, numbers: 7, json: 8 } as const

/** Bytes of an item's own header (tag and length). */
const ITEM_HEADER = 5

/** Bytes of a run of numbers before its first item: tag and count. */
const NUMBERS_RUN_HEADER = 5

/** Bytes of a JSON run besides its items' text and separators: tag, count, length, and the closing `]`. */
const JSON_RUN_HEADER = 10

/** Byte items at least this large are sent from the caller's own buffer, not copied into the batch. */
const OWN_FRAME_BYTES = 16 * 1024

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

/** True where a Float64Array holds numbers as the wire does (little-endian): all but a few platforms. */
const LITTLE_ENDIAN = new Uint8Array(new Float64Array([1]).buffer)[7] === 0x3f

/** Limits an item writer works within. */
export interface ItemLimits {
  /** Start a new frame rather than grow one past this many bytes. */
  softFrameBytes: number
  /** No frame may exceed this; a larger item is refused. */
  maxFrameBytes: number
}

/**
 * Writes the items of data frames. Consecutive numbers are packed as one run
 * of 8-byte floats, and consecutive JSON-safe values as one JSON array, so
 * the receiver decodes a run with one `JSON.parse` rather than one per item
 * (most of the cost of small objects). Strings and values that need devalue
 * travel one by one, and so do `Uint8Array`s and `ArrayBuffer`s, as raw bytes.
 *
 * A run is open until {@link close} (called before the frame ends or another
 * frame is written); the writer keeps where its counts go.
 */
export class ItemWriter {
  /** The kind of run open in the current frame (0 for none). */
  private run = 0
  private runCount = 0
  private countAt = 0
  private lengthAt = 0

  constructor(private readonly w: FrameWriter, private readonly limits: ItemLimits) {}

  /**
   * Appends one item to the data frame open in the FrameWriter, starting a
   * new frame first when this item would take it past the soft limit.
   * Returns the bytes it counts for against the receiver's byte credit.
   * Throws {@link SerializeError} (nothing written) when the item cannot be
   * sent or exceeds `maxFrameBytes`; `path` names it in the message. `hooks`
   * number the streams nested in it (a value with a stream inside is never
   * JSON-safe, so only devalue items meet them).
   */
  write(v: unknown, path: () => string, hooks?: StreamHooks): number {
    const w = this.w
    if (typeof v === 'number') {
      // The first item of a run also counts for the run's header, so the items
      // of a frame count for exactly its payload: the receiver checks byte
      // credit against payload sizes, and both sides must agree to the byte.
      let header = 0
      if (this.run !== Tag.numbers || w.frameBytes + 8 > this.limits.softFrameBytes) {
        this.startRun(Tag.numbers, 13)
        header = NUMBERS_RUN_HEADER
      }
      w.f64(v)
      this.runCount++
      return header + 8
    }
    let text: string | undefined
    let bytes: Uint8Array | undefined
    let value: EncodedValue | undefined
    let tag: number
    if (v instanceof Uint8Array) {
      tag = Tag.bytes
      bytes = v
    } else if (v instanceof ArrayBuffer) {
      tag = Tag.arrayBuffer
      bytes = new Uint8Array(v)
    } else if (isJson(v, 0)) {
      tag = Tag.json
      text = JSON.stringify(v)
    } else {
      tag = Tag.value
      value = encodeValue(v, path(), hooks)
    }
    // Size before writing: exact for bytes and values, an upper bound for text.
    let size = bytes ? bytes.byteLength : value ? value.bytes : text!.length * 3
    const maxItem = this.limits.maxFrameBytes - HEADER_BYTES - ITEM_HEADER - 8
    if (size > maxItem && text !== undefined) size = Buffer.byteLength(text, 'utf8')
    if (size > maxItem) {
      const p = path()
      throw new SerializeError(`${p}: item of ${size + ITEM_HEADER} bytes exceeds maxFrameBytes ${this.limits.maxFrameBytes}`, p)
    }
    if (text !== undefined) {
      let header = 0
      if (this.run !== Tag.json || w.frameBytes + size + 1 > this.limits.softFrameBytes) {
        this.startRun(Tag.json, size + 10)
        w.u8(0x5b) // [
        header = JSON_RUN_HEADER
      } else {
        w.u8(0x2c) // ,
      }
      this.runCount++
      return header + 1 + w.utf8(text)
    }
    this.close()
    if (bytes && bytes.byteLength >= OWN_FRAME_BYTES) {
      // A large chunk gets a frame of its own and is not copied: yielding it
      // hands it over, as enqueueing a chunk in any stream does.
      const head = Buffer.allocUnsafe(ITEM_HEADER)
      head[0] = tag
      head.writeUInt32LE(bytes.byteLength, 1)
      w.splitAround((kind, call, stream) => w.frameWithBody(kind, call, stream, head, bytes!))
      return ITEM_HEADER + bytes.byteLength
    }
    if (w.frameBytes > HEADER_BYTES && w.frameBytes + ITEM_HEADER + size > this.limits.softFrameBytes) w.split()
    const before = w.frameBytes
    w.u8(tag)
    const at = w.reserveU32()
    if (bytes) w.bytes(bytes)
    else writeValue(w, value!)
    w.patchLength(at)
    return w.frameBytes - before
  }

  /** Closes the open run (fills in its count and length). Call before the frame ends. */
  close(): void {
    const w = this.w
    if (this.run === Tag.numbers) w.patchU32(this.countAt, this.runCount)
    else if (this.run === Tag.json) {
      w.u8(0x5d) // ]
      w.patchU32(this.countAt, this.runCount)
      w.patchLength(this.lengthAt)
    }
    this.run = 0
  }

  /** Opens a run of `kind`, in a new frame if this one cannot take `room` more bytes. */
  private startRun(kind: number, room: number): void {
    const w = this.w
    this.close()
    if (w.frameBytes > HEADER_BYTES && w.frameBytes + room > this.limits.softFrameBytes) w.split()
    w.u8(kind)
    this.countAt = w.reserveU32()
    if (kind === Tag.json) this.lengthAt = w.reserveU32()
    this.run = kind
    this.runCount = 0
  }
}

/**
 * Reads every item of a data frame's payload. Bytes items are copied out of
 * the payload unless `owned` (the payload's buffer belongs to this frame
 * alone): then they are views of it, saving a copy of every bulk chunk.
 */
export function readItems(payload: Uint8Array, owned = false, fromId?: (id: number, item: number) => unknown): unknown[] {
  return walkItems(payload, owned, fromId, false)
}

/**
 * Reads only what a dropped data frame must not lose: the streams nested in
 * its items (each named to `fromId`, so that the receiver can cancel it).
 * Numbers, JSON runs and bytes are skipped without being decoded.
 */
export function streamsInItems(payload: Uint8Array, fromId: (id: number, item: number) => unknown): void {
  walkItems(payload, false, fromId, true)
}

function walkItems(payload: Uint8Array, owned: boolean, fromId: ((id: number, item: number) => unknown) | undefined, skip: boolean): unknown[] {
  const b = asBuffer(payload)
  const end = b.byteLength
  let out: unknown[] | undefined
  let o = 0
  while (o < end) {
    if (o + 5 > end) throw new ProtocolError(`item header truncated at byte ${o} of ${end}`)
    const tag = b[o]!
    const n = b.readUInt32LE(o + 1)
    o += 5
    if (tag === Tag.numbers) {
      if (o + n * 8 > end) throw new ProtocolError(`run of ${n} numbers overruns its frame (${end - o} bytes left)`)
      if (skip) {
        o += n * 8
        continue
      }
      out ??= []
      if (!LITTLE_ENDIAN) {
        for (let k = 0; k < n; k++, o += 8) out.push(b.readDoubleLE(o))
        continue
      }
      // One copy into an aligned array, then plain reads: readDoubleLE per number costs several times more.
      const run = new Float64Array(n)
      new Uint8Array(run.buffer).set(b.subarray(o, o + n * 8))
      o += n * 8
      for (let k = 0; k < n; k++) out.push(run[k])
      continue
    }
    if (tag === Tag.json) {
      if (o + 4 > end) throw new ProtocolError(`JSON run header truncated at byte ${o}`)
      const len = b.readUInt32LE(o)
      o += 4
      if (o + len > end) throw new ProtocolError(`JSON run of ${len} bytes overruns its frame (${end - o} left)`)
      if (skip) {
        o += len
        continue
      }
      let run: unknown
      try {
        run = JSON.parse(b.toString('utf8', o, o + len))
      } catch (err) {
        throw new ProtocolError(`JSON run of ${len} bytes does not parse: ${(err as Error).message}`, { cause: err })
      }
      if (!Array.isArray(run) || run.length !== n) throw new ProtocolError(`JSON run declares ${n} items, holds ${Array.isArray(run) ? run.length : 'no array'}`)
      o += len
      // The usual frame is one run: its array is the batch, no copy.
      if (!out && o === end) return run
      out ??= []
      for (const x of run) out.push(x)
      continue
    }
    if (o + n > end) throw new ProtocolError(`item of ${n} bytes overruns its frame (${end - o} left)`)
    out ??= []
    if (skip && tag !== Tag.value) {
      if (tag !== Tag.bytes && tag !== Tag.arrayBuffer) throw new ProtocolError(`unknown item tag ${tag}`)
      o += n
      continue
    }
    switch (tag) {
      case Tag.bytes: {
        if (owned) {
          out.push(new Uint8Array(b.buffer, b.byteOffset + o, n))
          break
        }
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
      case Tag.value: {
        const item = out.length
        out.push(readValueAt(b, o, o + n, fromId && { fromId: (id) => fromId(id, item) }))
        break
      }
      default:
        throw new ProtocolError(`unknown item tag ${tag}`)
    }
    o += n
  }
  return out ?? []
}
