// What the wire specs share: the frames the decoder and writer suites are fed,
// and how they feed a decoder and catch a throw.
import * as assert from 'uvu/assert'
import { encodeFrame, FrameDecoder, Kind, type Frame } from '../lib/wire/frame.ts'
import { payloads } from '../lib/wire/payloads.ts'

/** Frames every decoder suite is fed, in several splits. */
export const fixtures: { name: string; kind: number; call: number; stream: number; payload: Uint8Array }[] = [
  { name: 'empty payload', kind: Kind.end, call: 1, stream: 0, payload: new Uint8Array(0) },
  { name: 'one byte', kind: Kind.data, call: 2, stream: 3, payload: Uint8Array.of(7) },
  { name: 'max ids', kind: Kind.credit, call: 0xffffffff, stream: 0xffff, payload: payloads.credit(5, 1000) },
  { name: 'text', kind: Kind.log, call: 9, stream: 0, payload: payloads.log(2, 'héllo ✓\n') },
  { name: '100 KiB', kind: Kind.data, call: 4, stream: 1, payload: new Uint8Array(100 * 1024).map((_, i) => i * 31) },
]

export const stream = Buffer.concat(fixtures.map((f) => encodeFrame(f.kind, f.call, f.stream, f.payload)))

/** Feeds `chunks` and copies each frame's payload (views are only valid until the next decode). */
export function feed(d: FrameDecoder, chunks: Uint8Array[]): Frame[] {
  const out: Frame[] = []
  for (const c of chunks) for (const f of d.decode(c)) out.push({ ...f, payload: Buffer.from(f.payload) })
  return out
}

export function assertThrows(fn: () => unknown): any {
  try {
    fn()
  } catch (err) {
    return err
  }
  assert.unreachable('expected a throw')
}
