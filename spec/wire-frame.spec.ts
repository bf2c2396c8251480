import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { allocations } from './helpers.ts'
import { ProtocolError } from '../lib/errors.ts'
import { encodeFrame, FrameDecoder, HEADER_BYTES, Kind, type Frame } from '../lib/wire/frame.ts'
import { assertThrows, feed, fixtures, stream } from './wire.ts'

function check(frames: Frame[]): void {
  assert.is(frames.length, fixtures.length)
  frames.forEach((f, i) => {
    const want = fixtures[i]!
    assert.is(f.kind, want.kind, want.name)
    assert.is(f.call, want.call, want.name)
    assert.is(f.stream, want.stream, want.name)
    assert.equal(Buffer.from(f.payload), Buffer.from(want.payload), want.name)
  })
}

const decode = suite('decode')

decode('decodes frames fed whole', () => {
  check(feed(new FrameDecoder(), [stream]))
})

decode('decodes frames fed one byte at a time', () => {
  const chunks: Uint8Array[] = []
  for (let i = 0; i < stream.byteLength; i++) chunks.push(stream.subarray(i, i + 1))
  const d = new FrameDecoder()
  check(feed(d, chunks))
  d.end()
})

decode('decodes frames fed in random splits', () => {
  let seed = 42
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
  for (let round = 0; round < 50; round++) {
    const chunks: Uint8Array[] = []
    for (let at = 0; at < stream.byteLength; ) {
      const n = 1 + Math.floor(rand() * (rand() < 0.5 ? 20 : 70000))
      chunks.push(stream.subarray(at, at + n))
      at += n
    }
    const d = new FrameDecoder()
    check(feed(d, chunks))
    d.end()
  }
})

decode('buffers a frame split across chunks and returns nothing until it is whole', () => {
  const f = encodeFrame(Kind.data, 1, 0, new Uint8Array(10))
  const d = new FrameDecoder()
  assert.equal(d.decode(f.subarray(0, 3)), [])
  assert.equal(d.decode(f.subarray(3, 15)), [])
  assert.is(d.buffered, 15)
  assert.is(d.decode(f.subarray(15)).length, 1)
  assert.is(d.buffered, 0)
})

decode('refuses a frame over the limit as soon as its length is known, before its bytes arrive', () => {
  const d = new FrameDecoder(1024)
  const header = Buffer.alloc(4)
  header.writeUInt32LE(70_000_000, 0)
  const err = assertThrows(() => d.decode(header))
  assert.instance(err, ProtocolError)
  assert.match(err.message, 'frame of 70000004 bytes exceeds maxFrameBytes 1024')
})

decode('refuses a length shorter than the header', () => {
  const bad = Buffer.alloc(8)
  bad.writeUInt32LE(2, 0)
  const err = assertThrows(() => new FrameDecoder().decode(bad))
  assert.instance(err, ProtocolError)
  assert.match(err.message, 'shorter than its 11-byte header')
})

decode('treats bytes left over at the end as a truncated frame', () => {
  const f = encodeFrame(Kind.data, 1, 0, new Uint8Array(100))
  for (const cut of [2, 8, 50]) {
    const d = new FrameDecoder()
    d.decode(f.subarray(0, cut))
    const err = assertThrows(() => d.end())
    assert.instance(err, ProtocolError)
    assert.match(err.message, `input ended with ${cut} bytes`)
  }
})

decode('ends cleanly on a frame boundary', () => {
  const d = new FrameDecoder()
  d.decode(encodeFrame(Kind.end, 1, 0))
  d.end()
})

decode('regression: a header split across chunks copies only the header, not the whole next chunk', () => {
  // Many small frames in one large chunk, the first header begun in the previous chunk.
  const small = encodeFrame(Kind.data, 1, 0, new Uint8Array(20))
  const many = Buffer.concat(Array.from({ length: 20_000 }, () => small))
  const d = new FrameDecoder(1024)
  assert.is(d.decode(many.subarray(0, 5)).length, 0)
  const sizes = allocations(() => assert.is(d.decode(many.subarray(5)).length, 20_000))
  assert.ok(Math.max(0, ...sizes) <= 1024, `allocated ${Math.max(...sizes)} bytes at once with maxFrameBytes 1024`)
  d.end()
})

decode('refuses an oversized length whose bytes straddle two chunks before buffering anything more', () => {
  const header = Buffer.alloc(HEADER_BYTES)
  header.writeUInt32LE(5000, 0)
  for (let cut = 1; cut < 4; cut++) {
    const d = new FrameDecoder(1024)
    assert.equal(d.decode(header.subarray(0, cut)), [])
    const err = assertThrows(() => allocations(() => d.decode(Buffer.concat([header.subarray(cut), new Uint8Array(100_000)]))))
    assert.instance(err, ProtocolError)
    assert.match(err.message, 'frame of 5004 bytes exceeds maxFrameBytes 1024')
  }
})

decode.run()
