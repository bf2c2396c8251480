/**
 * The wire's frames: the protocol version, the kinds of frame, the header,
 * and a pure decoder. The payloads of the fixed kinds are in `payloads.ts`;
 * batches of frames are written with `frame-writer.ts`.
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
export const PROTOCOL_VERSION = 6

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
  /**
   * Either way, on a resumable session: the bytes of frames received so far
   * (f64), so the other side can let go of what it kept to replay.
   */
  ack: 14,
  /**
   * Caller → worker, the first frame on a new channel to a worker whose
   * session lost its channel: its token and the bytes received (JSON). Not
   * counted (see lib/replay.ts).
   */
  resume: 15,
  /** Worker → caller, the answer to `resume`: the bytes it received (JSON). Not counted. */
  resumed: 16,
  /** Caller → worker: the session ends here on purpose (the end of input that follows is not a dropped connection). */
  bye: 17,
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
