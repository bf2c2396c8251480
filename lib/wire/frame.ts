/**
 * The wire: length-prefixed binary frames, and a pure decoder.
 *
 * Every frame is an 11-byte header followed by its payload:
 *
 * ```
 * u32 length (of everything after these 4 bytes) | u8 kind | u32 call | u16 stream | payload
 * ```
 *
 * `call` is the call id (0 for frames about the session itself); `stream` is
 * 0 for a call's output and 1..n for its streamed arguments. Integers are
 * little-endian. Nothing here does I/O: {@link FrameDecoder.decode} takes
 * bytes and returns frames, so it can be fed any split of the input.
 *
 * @module
 */
import { ProtocolError } from '../errors.ts'

/** The protocol version both sides announce in their hello frames. */
export const PROTOCOL_VERSION = 4

/** Bytes before a frame's payload. */
export const HEADER_BYTES = 11

/** Default upper bound of one frame (64 MiB), checked before anything is allocated. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024

/** The kinds of frame. Numbers on the wire; names everywhere else. */
export const Kind = {
  /** Both directions, once: version and facts about each side (JSON). */
  hello: 0,
  /** Caller → worker: start a call (JSON header + encoded arguments). */
  call: 1,
  /** Either way: one or several items of a stream. */
  data: 2,
  /** Either way: a stream ended; on the output stream it carries the return value. */
  end: 3,
  /** Either way: a stream or the whole call failed. */
  error: 4,
  /** Caller → worker: stop the call. Worker → caller: stop feeding an input stream. */
  cancel: 5,
  /** Either way: room for more items (u32 items, u32 bytes). */
  credit: 6,
  /** Worker → caller: a line the remote code printed (u8 fd + UTF-8 text). */
  log: 7,
  /** Worker → caller: send me this bundle, I do not have it (UTF-8 hash). */
  need: 8,
  /** Caller → worker: a bundle (u16 hash length, hash, code). */
  bundle: 9,
  /** Worker → caller: the call stopped after a cancel; its `finally` blocks have run. */
  cancelled: 10,
  /** Caller → worker: are you there? Answered at once with `pong` (a worker stuck in a loop or stopped cannot). */
  ping: 11,
  /** Worker → caller: the answer to `ping`. */
  pong: 12,
  /**
   * Worker → caller, when the call header asks (`tell`): the function
   * returned a generator, so the call streams. Sent before its first item,
   * for a caller that must know before any item comes (see RemoteCall's `then`).
   */
  streams: 13,
} as const

/** The name of a frame kind. */
export type KindName = keyof typeof Kind
const kindNames: string[] = []
for (const [name, n] of Object.entries(Kind)) kindNames[n] = name

/** A decoded frame. `payload` is a view of the received bytes: copy what you keep. */
export interface Frame {
  kind: number
  call: number
  stream: number
  payload: Uint8Array
  /**
   * True when the payload sits in a buffer of its own (a frame that arrived
   * in pieces and was assembled): a receiver may keep views of it instead of
   * copying. False when it shares the input chunk with other frames.
   */
  owned: boolean
}

/** The name of a frame kind number, for messages. */
export function kindName(kind: number): string {
  return kindNames[kind] ?? `unknown(${kind})`
}

/**
 * Encodes one frame's header into `target` at `offset` for a payload of
 * `payloadBytes`; the payload itself is written by the caller (or sent as a
 * separate buffer, so large byte items are never copied into a frame).
 */
export function writeHeader(target: Buffer, offset: number, kind: number, call: number, stream: number, payloadBytes: number): void {
  target.writeUInt32LE(HEADER_BYTES - 4 + payloadBytes, offset)
  target[offset + 4] = kind
  target.writeUInt32LE(call, offset + 5)
  target.writeUInt16LE(stream, offset + 9)
}

/** Encodes a whole frame into one new buffer. */
export function encodeFrame(kind: number, call: number, stream: number, payload: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.byteLength)
  writeHeader(out, 0, kind, call, stream, payload.byteLength)
  out.set(payload, HEADER_BYTES)
  return out
}

const EMPTY = new Uint8Array(0)
const EMPTY_BUFFER = Buffer.alloc(0)

/**
 * Splits a byte stream into frames. Partial input is kept until the rest
 * arrives; a frame longer than `maxFrameBytes` is refused as soon as its
 * length is known, before its bytes are allocated or buffered.
 */
export class FrameDecoder {
  /** Frames longer than this are refused. */
  maxFrameBytes: number
  /** The start of a header (fewer than {@link HEADER_BYTES} bytes) whose rest has not arrived. */
  private pending: Buffer = EMPTY_BUFFER
  /** A frame whose length is known and whose bytes are still arriving. */
  private partial: Buffer | undefined
  private partialFilled = 0

  constructor(maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {
    this.maxFrameBytes = maxFrameBytes
  }

  /** How many bytes are held waiting for the rest of a frame. */
  get buffered(): number {
    return this.pending.byteLength + this.partialFilled
  }

  /** Feeds bytes; returns every frame they complete, in order. */
  decode(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = []
    let input = asBuffer(chunk)
    if (this.pending.byteLength > 0) {
      // A header began in an earlier chunk: complete it from this one,
      // copying at most a header's bytes (never the whole chunk), then read
      // the frame's length and go on as for any frame begun in pieces.
      const take = Math.min(HEADER_BYTES - this.pending.byteLength, input.byteLength)
      const head = Buffer.concat([this.pending, input.subarray(0, take)])
      input = input.subarray(take)
      if (head.byteLength >= 4) this.check(head.readUInt32LE(0) + 4)
      if (head.byteLength < HEADER_BYTES) {
        this.pending = head
        return frames
      }
      this.pending = EMPTY_BUFFER
      this.partial = Buffer.allocUnsafe(head.readUInt32LE(0) + 4)
      this.partialFilled = head.copy(this.partial, 0)
    }
    if (this.partial) {
      // The frame's length was known: copy straight into its own buffer, so
      // a large frame arriving in many chunks is copied once, not re-joined.
      const want = this.partial.byteLength - this.partialFilled
      const take = Math.min(want, input.byteLength)
      input.copy(this.partial, this.partialFilled, 0, take)
      this.partialFilled += take
      if (take < want) return frames
      frames.push(this.frameOf(this.partial, 0, this.partial.byteLength, true))
      this.partial = undefined
      this.partialFilled = 0
      input = input.subarray(take)
    }
    let offset = 0
    while (input.byteLength - offset >= 4) {
      const total = 4 + input.readUInt32LE(offset)
      this.check(total)
      if (input.byteLength - offset < total) {
        if (input.byteLength - offset >= HEADER_BYTES) {
          this.partial = Buffer.allocUnsafe(total)
          this.partialFilled = input.copy(this.partial, 0, offset)
          return frames
        }
        break
      }
      frames.push(this.frameOf(input, offset, total))
      offset += total
    }
    if (offset < input.byteLength) this.pending = Buffer.from(input.subarray(offset))
    return frames
  }

  /** Refuses a frame length before anything of the frame is allocated. */
  private check(total: number): void {
    if (total > this.maxFrameBytes) {
      throw new ProtocolError(`frame of ${total} bytes exceeds maxFrameBytes ${this.maxFrameBytes}`)
    }
    if (total < HEADER_BYTES) {
      throw new ProtocolError(`frame of ${total} bytes is shorter than its ${HEADER_BYTES}-byte header`)
    }
  }

  /**
   * Declares the input finished. Bytes left over are a truncated frame: the
   * peer stopped mid-frame, which is never a normal end.
   */
  end(): void {
    const left = this.buffered
    if (left > 0) {
      const expected = this.partial ? ` of a ${this.partial.byteLength}-byte frame` : ''
      this.pending = EMPTY_BUFFER
      this.partial = undefined
      this.partialFilled = 0
      throw new ProtocolError(`input ended with ${left} bytes${expected} left over`)
    }
  }

  private frameOf(buf: Buffer, offset: number, total: number, owned = false): Frame {
    return {
      owned,
      kind: buf[offset + 4]!,
      call: buf.readUInt32LE(offset + 5),
      stream: buf.readUInt16LE(offset + 9),
      payload: buf.subarray(offset + HEADER_BYTES, offset + total),
    }
  }
}

/** A Buffer view of any Uint8Array, without copying. */
export function asBuffer(p: Uint8Array): Buffer {
  return Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength)
}

/** The size of a fresh write buffer: several batches of 64 KiB items fit in one, so batches rarely straddle two. */
const SEGMENT_BYTES = 1024 * 1024

/**
 * Builds frames straight into one growing buffer, so a batch of frames from
 * many calls leaves as a single write. A frame is opened with
 * {@link FrameWriter.begin}, filled with the typed writers, and closed with
 * {@link FrameWriter.end}, which fills in its length; an open frame always
 * sits whole in the current buffer. {@link FrameWriter.take} hands out
 * everything written so far and goes on writing after it in the same buffer
 * (the transport owns the bytes it was given; nothing writes there again).
 */
export class FrameWriter {
  private buf: Buffer = Buffer.allocUnsafe(SEGMENT_BYTES)
  /** A view of `buf` for numbers: `setFloat64` is compiled inline, `Buffer.writeDoubleLE` copies byte by byte. */
  private view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength)
  private pos = 0
  /** Where the not-yet-taken bytes of `buf` start. */
  private start = 0
  /** Earlier buffers of this batch, when it outgrew one. */
  private parts: Buffer[] = []
  private partsBytes = 0
  /** The open frame's offset in `buf`, or -1. */
  private frameAt = -1

  /** Bytes written and not yet taken, including an open frame. */
  get pending(): number {
    return this.partsBytes + this.pos - this.start
  }

  /** Bytes in the open frame so far (header included), or 0. */
  get frameBytes(): number {
    return this.frameAt < 0 ? 0 : this.pos - this.frameAt
  }

  /** True while a frame is open. */
  get open(): boolean {
    return this.frameAt >= 0
  }

  /** Opens a frame; its length is written by {@link end}. */
  begin(kind: number, call: number, stream: number): void {
    if (this.frameAt >= 0) throw new Error('FrameWriter.begin: a frame is already open')
    this.kind = kind
    this.call = call
    this.stream = stream
    this.ensure(HEADER_BYTES)
    this.frameAt = this.pos
    this.buf[this.pos + 4] = kind
    this.buf.writeUInt32LE(call, this.pos + 5)
    this.buf.writeUInt16LE(stream, this.pos + 9)
    this.pos += HEADER_BYTES
  }

  /** Closes the open frame. */
  end(): void {
    this.buf.writeUInt32LE(this.pos - this.frameAt - 4, this.frameAt)
    this.frameAt = -1
  }

  /** Closes the open frame and opens another with the same kind, call and stream. */
  split(): void {
    this.end()
    this.begin(this.kind, this.call, this.stream)
  }

  /**
   * Closes the open frame (dropping it if empty), lets `write` add whole
   * frames for the same kind, call and stream, then opens a new one.
   */
  splitAround(write: (kind: number, call: number, stream: number) => void): void {
    const { kind, call, stream } = this
    if (this.frameBytes <= HEADER_BYTES) this.abandon()
    else this.end()
    write(kind, call, stream)
    this.begin(kind, call, stream)
  }

  private kind = 0
  private call = 0
  private stream = 0

  /** Drops the open frame and everything written into it. */
  abandon(): void {
    if (this.frameAt < 0) return
    this.pos = this.frameAt
    this.frameAt = -1
  }

  /**
   * Writes a whole frame whose payload is `head` (copied) followed by `body`,
   * which is not copied: it goes out as a part of its own, so a large chunk
   * of bytes reaches the channel without passing through this buffer. The
   * body must not change until it has been written (as with any stream).
   */
  frameWithBody(kind: number, call: number, stream: number, head: Uint8Array, body: Uint8Array): void {
    if (this.frameAt >= 0) throw new Error('FrameWriter.frameWithBody: a frame is open')
    this.ensure(HEADER_BYTES + head.byteLength)
    writeHeader(this.buf, this.pos, kind, call, stream, head.byteLength + body.byteLength)
    this.pos += HEADER_BYTES
    this.buf.set(head, this.pos)
    this.pos += head.byteLength
    const before = this.buf.subarray(this.start, this.pos)
    this.parts.push(before, Buffer.from(body.buffer, body.byteOffset, body.byteLength))
    this.partsBytes += before.byteLength + body.byteLength
    this.start = this.pos
  }

  /** Writes a whole frame with the given payload. */
  frame(kind: number, call: number, stream: number, payload?: Uint8Array): void {
    this.begin(kind, call, stream)
    if (payload) this.bytes(payload)
    this.end()
  }

  u8(n: number): void {
    this.ensure(1)
    this.buf[this.pos++] = n
  }

  u32(n: number): void {
    this.ensure(4)
    this.buf.writeUInt32LE(n, this.pos)
    this.pos += 4
  }

  f64(n: number): void {
    this.ensure(8)
    this.view.setFloat64(this.pos, n, true)
    this.pos += 8
  }

  /** Writes a string as UTF-8; returns the bytes written. */
  utf8(s: string): number {
    // Short strings in one pass: room for the worst case, 3 bytes a UTF-16 unit.
    const n = s.length <= 16384 ? s.length * 3 : Buffer.byteLength(s, 'utf8')
    this.ensure(n)
    const written = this.buf.write(s, this.pos, n, 'utf8')
    this.pos += written
    return written
  }

  /** Copies bytes in. */
  bytes(b: Uint8Array): void {
    this.ensure(b.byteLength)
    this.buf.set(b, this.pos)
    this.pos += b.byteLength
  }

  /** Reserves 4 bytes for a u32 to be filled in by {@link patchU32}; returns its offset. */
  reserveU32(): number {
    this.ensure(4)
    this.pos += 4
    return this.pos - 4 + this.moved
  }

  /**
   * Fills in a u32 reserved by {@link reserveU32} with the number of bytes
   * written since it. Only valid inside the open frame that reserved it; the
   * offset survives the frame being carried over to a larger buffer.
   */
  patchLength(at: number): void {
    const offset = at - this.moved
    this.buf.writeUInt32LE(this.pos - offset - 4, offset)
  }

  /** Fills in a u32 reserved by {@link reserveU32} with a value. */
  patchU32(at: number, n: number): void {
    this.buf.writeUInt32LE(n, at - this.moved)
  }

  /** How far the open frame has moved since this batch began (offsets from reserveU32 are relative to that). */
  private moved = 0

  /** Hands out every closed frame written so far, as one buffer. */
  take(): Buffer | undefined {
    const parts = this.takeParts()
    return parts.length <= 1 ? parts[0] : Buffer.concat(parts)
  }

  /**
   * Hands out every closed frame written so far, as the buffers it was
   * written in (usually one; several when the batch outgrew a buffer), to be
   * written one after the other without joining them first.
   */
  takeParts(): Buffer[] {
    if (this.frameAt >= 0) throw new Error('FrameWriter.take: a frame is still open')
    if (this.pending === 0) return []
    const tail = this.buf.subarray(this.start, this.pos)
    this.start = this.pos
    this.moved = 0
    if (this.buf.byteLength - this.pos < 4096) this.fresh(SEGMENT_BYTES)
    const parts = this.parts
    if (tail.byteLength > 0) parts.push(tail)
    this.parts = []
    this.partsBytes = 0
    return parts
  }

  private ensure(n: number): void {
    if (this.buf.byteLength - this.pos >= n) return
    // Keep the closed frames of this batch; carry the open frame over whole.
    const keepEnd = this.frameAt >= 0 ? this.frameAt : this.pos
    if (keepEnd > this.start) {
      this.parts.push(this.buf.subarray(this.start, keepEnd))
      this.partsBytes += keepEnd - this.start
    }
    const open = this.frameAt >= 0 ? this.buf.subarray(this.frameAt, this.pos) : undefined
    const old = this.frameAt
    this.fresh(Math.max(SEGMENT_BYTES, n + (open?.byteLength ?? 0)))
    if (open) {
      open.copy(this.buf, 0)
      this.moved += old
      this.frameAt = 0
      this.pos = open.byteLength
    }
  }

  private fresh(size: number): void {
    this.buf = Buffer.allocUnsafe(size)
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength)
    this.pos = 0
    this.start = 0
  }
}
