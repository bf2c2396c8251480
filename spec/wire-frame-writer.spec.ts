import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { FrameDecoder, HEADER_BYTES, Kind } from '../lib/wire/frame.ts'
import { FrameWriter } from '../lib/wire/frame-writer.ts'
import { assertThrows, feed, fixtures, stream } from './wire.ts'

const writer = suite('FrameWriter')

writer('writes frames that decode to what was written, in one buffer per batch', () => {
  const w = new FrameWriter()
  for (const f of fixtures) w.frame(f.kind, f.call, f.stream, f.payload)
  const batch = w.take()!
  assert.equal(Buffer.from(batch), stream)
  assert.is(w.take(), undefined)
})

writer('keeps an open frame whole when it outgrows the buffer', () => {
  const w = new FrameWriter()
  w.frame(Kind.end, 1, 0)
  w.begin(Kind.data, 2, 0)
  const big = new Uint8Array(600 * 1024).fill(9)
  w.u8(1)
  w.bytes(big)
  w.end()
  w.frame(Kind.end, 3, 0)
  const frames = feed(new FrameDecoder(), [w.take()!])
  assert.equal(frames.map((f) => f.call), [1, 2, 3])
  assert.is(frames[1]!.payload.byteLength, 1 + big.byteLength)
})

writer('fills in lengths reserved before the frame moved to a larger buffer', () => {
  const w = new FrameWriter()
  w.bytes(new Uint8Array(250 * 1024)) // leave little room in the first buffer
  w.take()
  w.begin(Kind.data, 1, 0)
  const at = w.reserveU32()
  w.bytes(new Uint8Array(20 * 1024).fill(1))
  w.patchLength(at)
  w.end()
  const [f] = feed(new FrameDecoder(), [w.take()!])
  assert.is(Buffer.from(f!.payload).readUInt32LE(0), 20 * 1024)
})

writer('split() closes a frame and opens another for the same call and stream', () => {
  const w = new FrameWriter()
  w.begin(Kind.data, 7, 2)
  w.u8(1)
  w.split()
  w.u8(2)
  w.end()
  const frames = feed(new FrameDecoder(), [w.take()!])
  assert.equal(frames.map((f) => [f.kind, f.call, f.stream, [...f.payload]]), [
    [Kind.data, 7, 2, [1]],
    [Kind.data, 7, 2, [2]],
  ])
})

writer('abandon() drops the open frame', () => {
  const w = new FrameWriter()
  w.frame(Kind.end, 1, 0)
  w.begin(Kind.data, 2, 0)
  w.u32(5)
  w.abandon()
  assert.is(w.pending, HEADER_BYTES)
  assert.is(feed(new FrameDecoder(), [w.take()!]).length, 1)
})

writer('take() refuses while a frame is open, so no half frame leaves', () => {
  const w = new FrameWriter()
  w.begin(Kind.data, 1, 0)
  assertThrows(() => w.take())
})

writer.run()
