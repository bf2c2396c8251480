/**
 * The payloads of frames, as both sides read them: the shapes of the JSON
 * ones (the two hellos, a call's header) and of an error frame's value, and
 * the small fixed payloads (credit, log lines, bundles, a call's end flags,
 * JSON), read and written here without the codec, which is for values.
 *
 * @module
 */
import { ProtocolError } from '../errors.ts'
import type { Limits } from '../options.ts'
import { asBuffer } from './frame.ts'

/** What the caller says in its hello. */
export interface CallerHello {
  v: number
  host: string
  worker: number
  workers: number
  /** Where to cache bundles; the worker's default when absent. */
  cacheDir?: string
  /** Frame limits; both sides use the caller's. */
  limits: Limits
  /**
   * Asks for a resumable session (see lib/replay.ts): the worker outlives a
   * dropped channel for `window` ms, waiting for a channel that presents
   * `token` (128 random bits, hex).
   */
  resume?: { token: string; window: number }
}

/** What the worker answers. */
export interface WorkerHello {
  v: number
  node: string
  pid: number
  platform: string
  arch: string
  cacheDir: string
  /** Present when the session is resumable: where a new channel reaches this worker (a unix socket path on its host). */
  resume?: { address: string }
}

/** The first frame on a channel that resumes a session (caller → worker). */
export interface ResumeRequest {
  token: string
  /** Bytes of frames the caller received on the session so far. */
  received: number
}

/** The worker's answer to a {@link ResumeRequest}. */
export interface ResumeAnswer {
  /** Bytes of frames the worker received on the session so far. */
  received: number
}

/** The header of a call frame (JSON), followed in the payload by the encoded arguments. */
export interface CallHeader {
  /** Bundle hash. */
  bundle: string
  /** Export name of the function in the bundle. */
  fn: string
  /** The module's name, for messages. */
  module: string
  /** Credit the caller grants for the output at the start. */
  out: { items: number; bytes: number }
  /** Streamed arguments: their ids and the high-water marks of their queues here. */
  streams: { id: number; items: number; bytes: number }[]
  /**
   * High-water marks of the queues of streams nested in values, on either
   * side (a file's body in a yielded item, a stream inside an input's item);
   * such a stream starts with `nestedInitial` (lib/flow.ts) of them.
   */
  nested: { items: number; bytes: number }
  /** Send a `streams` frame when the function returns a generator (the caller's call is awaitable and must know). */
  tell?: boolean
}

/** The payload of an error frame. */
export interface ErrorPayload {
  error: unknown
  /** Items yielded before the error. */
  index: number
  /** True when farpipe itself failed (a value that cannot be sent), not the user's code. */
  runtime: boolean
}

/** Reads and writes the small fixed payloads (credit, log, bundle) without a codec. */
export const payloads = {
  credit(items: number, bytes: number): Buffer {
    const b = Buffer.allocUnsafe(8)
    b.writeUInt32LE(items, 0)
    b.writeUInt32LE(Math.min(bytes, 0xffffffff), 4)
    return b
  },
  readCredit(p: Uint8Array): { items: number; bytes: number } {
    const b = asBuffer(p)
    if (b.byteLength !== 8) throw new ProtocolError(`credit payload of ${b.byteLength} bytes, expected 8`)
    return { items: b.readUInt32LE(0), bytes: b.readUInt32LE(4) }
  },
  log(fd: number, text: string): Buffer {
    const t = Buffer.from(text, 'utf8')
    const b = Buffer.allocUnsafe(1 + t.byteLength)
    b[0] = fd
    t.copy(b, 1)
    return b
  },
  readLog(p: Uint8Array): { fd: number; text: string } {
    const b = asBuffer(p)
    return { fd: b[0] ?? 1, text: b.toString('utf8', 1) }
  },
  bundle(hash: string, code: Uint8Array): Buffer {
    const h = Buffer.from(hash, 'utf8')
    const b = Buffer.allocUnsafe(2 + h.byteLength + code.byteLength)
    b.writeUInt16LE(h.byteLength, 0)
    h.copy(b, 2)
    b.set(code, 2 + h.byteLength)
    return b
  },
  readBundle(p: Uint8Array): { hash: string; code: Buffer } {
    const b = asBuffer(p)
    const n = b.byteLength >= 2 ? b.readUInt16LE(0) : -1
    if (n < 0 || 2 + n > b.byteLength) throw new ProtocolError(`bundle payload of ${b.byteLength} bytes is shorter than its hash`)
    return { hash: b.toString('utf8', 2, 2 + n), code: b.subarray(2 + n) }
  },
  /**
   * The payload of a call's end frame: `u8 flags` (1: the function returned
   * a generator, so its call streamed) then the encoded return value.
   */
  end(streamed: boolean, value: Uint8Array): Buffer {
    const b = Buffer.allocUnsafe(1 + value.byteLength)
    b[0] = streamed ? 1 : 0
    b.set(value, 1)
    return b
  },
  readEnd<T>(p: Uint8Array, read: (value: Uint8Array) => T): { streamed: boolean; value: T } {
    if (p.byteLength < 1) throw new ProtocolError('end frame without its flags byte')
    const flags = p[0]!
    if (flags > 1) throw new ProtocolError(`end frame with unknown flags ${flags}`)
    return { streamed: flags === 1, value: read(p.subarray(1)) }
  },
  ack(received: number): Buffer {
    const b = Buffer.allocUnsafe(8)
    b.writeDoubleLE(received, 0)
    return b
  },
  readAck(p: Uint8Array): number {
    const b = asBuffer(p)
    if (b.byteLength !== 8) throw new ProtocolError(`ack payload of ${b.byteLength} bytes, expected 8`)
    const n = b.readDoubleLE(0)
    if (!Number.isSafeInteger(n) || n < 0) throw new ProtocolError(`ack of ${n} bytes`)
    return n
  },
  json(value: unknown): Buffer {
    return Buffer.from(JSON.stringify(value), 'utf8')
  },
  readJson<T>(p: Uint8Array): T {
    try {
      return JSON.parse(asBuffer(p).toString('utf8')) as T
    } catch (err) {
      throw new ProtocolError(`JSON payload of ${p.byteLength} bytes does not parse: ${(err as Error).message}`, { cause: err })
    }
  },
}
