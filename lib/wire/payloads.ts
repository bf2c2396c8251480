/**
 * The small fixed payloads of frames: credit, log lines, bundles, a call's
 * end flags, and JSON (the hellos, a call's header). They are read and
 * written here without the codec, which is for values.
 *
 * @module
 */
import { ProtocolError } from '../errors.ts'
import { asBuffer } from './frame.ts'

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
