/**
 * Writing frames: {@link FrameWriter} builds a batch of frames from many
 * calls in one growing buffer, so that it leaves in one write, and lets
 * large byte items go out from their own buffers without a copy.
 *
 * @module
 */
import { HEADER_BYTES, writeHeader } from './frame.ts'

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
