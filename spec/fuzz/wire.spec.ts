// Properties of the frame decoder and writer, checked on generated input.
import { suite } from 'uvu'
import fc from 'fast-check'
import '../helpers.ts'
import { ProtocolError } from '../../lib/errors.ts'
import { encodeFrame, FrameDecoder, HEADER_BYTES, type Frame } from '../../lib/wire/frame.ts'
import { FrameWriter } from '../../lib/wire/frame-writer.ts'
import { payloads } from '../../lib/wire/payloads.ts'
import { onlyProtocolErrors, property, RUNS, thrown } from './arbitraries.ts'
import { allocations } from '../helpers.ts'

interface Spec {
  kind: number
  call: number
  stream: number
  payload: Uint8Array
}

const frameSpec: fc.Arbitrary<Spec> = fc.record({
  kind: fc.integer({ min: 0, max: 255 }),
  call: fc.integer({ min: 0, max: 0xffffffff }),
  stream: fc.integer({ min: 0, max: 0xffff }),
  payload: fc.oneof(
    { weight: 10, arbitrary: fc.uint8Array({ maxLength: 40 }) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 2000 }) },
    { weight: 1, arbitrary: fc.integer({ min: 30_000, max: 70_000 }).map((n) => new Uint8Array(n).map((_, i) => i * 7)) },
  ),
})

/** A stream of frames and where each frame ends in it. */
function encodeAll(frames: Spec[]): { bytes: Buffer; ends: number[] } {
  const bytes = Buffer.concat(frames.map((f) => encodeFrame(f.kind, f.call, f.stream, f.payload)))
  const ends: number[] = []
  let at = 0
  for (const f of frames) ends.push((at += HEADER_BYTES + f.payload.byteLength))
  return { bytes, ends }
}

/** Cuts `bytes` at `cuts` (taken modulo its length, sorted, duplicates giving empty chunks). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const at = cuts.map((c) => (bytes.byteLength ? c % (bytes.byteLength + 1) : 0)).sort((a, b) => a - b)
  const chunks: Uint8Array[] = []
  let prev = 0
  for (const c of [...at, bytes.byteLength]) {
    chunks.push(bytes.subarray(prev, c))
    prev = c
  }
  return chunks
}

/** Decodes `chunks`, copying each payload (views are valid only until the next decode). */
function decodeAll(d: FrameDecoder, chunks: Uint8Array[]): Frame[] {
  const out: Frame[] = []
  for (const c of chunks) for (const f of d.decode(c)) out.push({ ...f, payload: Buffer.from(f.payload) })
  return out
}

function sameFrames(got: Frame[], want: Spec[]): boolean {
  return got.length === want.length && got.every((f, i) => {
    const w = want[i]!
    return f.kind === w.kind && f.call === w.call && f.stream === w.stream && Buffer.from(w.payload).equals(f.payload as Buffer)
  })
}

const cuts = fc.array(fc.nat(), { maxLength: 12 })

const decoder = suite('fuzz: frame decoder')

property(decoder, 'any split of a frame sequence decodes to the same frames', fc.property(fc.array(frameSpec, { maxLength: 6 }), cuts, (frames, at) => {
  const { bytes } = encodeAll(frames)
  const d = new FrameDecoder()
  const got = decodeAll(d, split(bytes, at))
  d.end()
  return sameFrames(got, frames) && d.buffered === 0
}))

property(decoder, 'a frame sequence fed one byte at a time decodes to the same frames', fc.property(fc.array(frameSpec.filter((f) => f.payload.byteLength < 3000), { maxLength: 4 }), (frames) => {
  const { bytes } = encodeAll(frames)
  const d = new FrameDecoder()
  const chunks: Uint8Array[] = []
  for (let i = 0; i < bytes.byteLength; i++) chunks.push(bytes.subarray(i, i + 1))
  const got = decodeAll(d, chunks)
  d.end()
  return sameFrames(got, frames)
}), RUNS / 4)

/** Bytes a peer could send: garbage, or a valid stream with bytes flipped, dropped, inserted or a length rewritten. */
const hostileBytes = fc.oneof(
  fc.uint8Array({ maxLength: 600 }),
  fc.tuple(fc.array(frameSpec.filter((f) => f.payload.byteLength < 3000), { minLength: 1, maxLength: 5 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('flip', 'drop', 'insert', 'length')), { minLength: 1, maxLength: 6 }))
    .map(([frames, edits]) => {
      const b = [...encodeAll(frames).bytes]
      for (const [at, byte, how] of edits) {
        const i = b.length ? at % b.length : 0
        if (how === 'flip') b[i] = byte
        else if (how === 'drop') b.splice(i, 1 + (byte % 16))
        else if (how === 'insert') b.splice(i, 0, ...new Array(1 + (byte % 8)).fill(byte))
        else for (let k = 0; k < 4 && i + k < b.length; k++) b[i + k] = (at >>> (8 * k)) & 0xff
      }
      return Uint8Array.from(b)
    }),
)

property(decoder, 'hostile bytes yield frames within the limit or a ProtocolError, allocating no more than the limit', fc.property(hostileBytes, cuts, fc.integer({ min: HEADER_BYTES, max: 5000 }), (bytes, at, max) => {
  const d = new FrameDecoder(max)
  let err: unknown
  const sizes = allocations(() => {
    err = thrown(() => {
      for (const c of split(bytes, at)) {
        for (const f of d.decode(c)) {
          if (HEADER_BYTES + f.payload.byteLength > max) throw new Error(`a frame of ${HEADER_BYTES + f.payload.byteLength} bytes passed maxFrameBytes ${max}`)
          if (f.kind > 255 || f.stream > 0xffff) throw new Error('a header field out of range')
        }
        if (d.buffered > max) throw new Error(`${d.buffered} bytes buffered with maxFrameBytes ${max}`)
      }
      d.end()
    })
  })
  onlyProtocolErrors(err)
  const most = Math.max(0, ...sizes)
  if (most > max) throw new Error(`allocated ${most} bytes at once with maxFrameBytes ${max}`)
}))

property(decoder, 'an oversized length is refused as soon as its four bytes are in, before any of its frame is buffered', fc.property(
  fc.array(frameSpec.filter((f) => f.payload.byteLength < 500), { maxLength: 3 }),
  fc.integer({ min: HEADER_BYTES, max: 1 << 20 }),
  fc.nat(),
  cuts,
  (before, max, over, at) => {
    const length = Math.min(0xffffffff, max - 4 + 1 + (over % (0xffffffff - max + 4)))
    const head = Buffer.alloc(4)
    head.writeUInt32LE(length, 0)
    const prefix = encodeAll(before.filter((f) => HEADER_BYTES + f.payload.byteLength <= max)).bytes
    const lengthEnds = prefix.byteLength + 4
    const bytes = Buffer.concat([prefix, head, new Uint8Array(64)])
    const d = new FrameDecoder(max)
    let fed = 0
    let err: unknown
    const sizes = allocations(() => {
      err = thrown(() => {
        for (const c of split(bytes, at)) {
          d.decode(c)
          fed += c.byteLength
        }
      })
    })
    if (!(err instanceof ProtocolError) || !err.message.includes('exceeds maxFrameBytes')) throw new Error(`expected a refusal, got ${String(err)}`)
    // The chunk that completed the length is the one that threw: nothing after it was taken.
    if (fed >= lengthEnds) throw new Error(`fed ${fed} bytes past the length ending at ${lengthEnds} before refusing`)
    if (Math.max(0, ...sizes) > max) throw new Error(`allocated ${Math.max(...sizes)} bytes with maxFrameBytes ${max}`)
  },
))

property(decoder, 'end() after a partial frame throws a ProtocolError; end() on a frame boundary does not', fc.property(fc.array(frameSpec, { minLength: 1, maxLength: 4 }), fc.nat(), cuts, (frames, stop, at) => {
  const { bytes, ends } = encodeAll(frames)
  const n = stop % (bytes.byteLength + 1)
  const d = new FrameDecoder()
  decodeAll(d, split(bytes.subarray(0, n), at))
  const err = thrown(() => d.end())
  const boundary = n === 0 || ends.includes(n)
  if (boundary ? err !== undefined : !(err instanceof ProtocolError)) throw new Error(`cut at ${n} (boundary: ${boundary}) ended with ${String(err)}`)
  return d.buffered === 0
}))

const writer = suite('fuzz: frame writer')

/** What to write: whole frames, frames built field by field, frames with a separate body, and take() between them. */
const writeOp = fc.oneof(
  frameSpec.map((f) => ({ op: 'frame' as const, f })),
  frameSpec.map((f) => ({ op: 'fields' as const, f })),
  frameSpec.map((f) => ({ op: 'body' as const, f })),
  fc.constant({ op: 'take' as const }),
)

property(writer, 'what the FrameWriter writes decodes to the frames written, across take() and buffer growth', fc.property(fc.array(writeOp, { maxLength: 40 }), cuts, (ops, at) => {
  const w = new FrameWriter()
  const want: Spec[] = []
  const out: Uint8Array[] = []
  for (const o of ops) {
    if (o.op === 'take') {
      out.push(...w.takeParts())
      continue
    }
    const f = o.f
    want.push(f)
    if (o.op === 'frame') w.frame(f.kind, f.call, f.stream, f.payload)
    else if (o.op === 'body') w.frameWithBody(f.kind, f.call, f.stream, f.payload.subarray(0, 3), f.payload.subarray(3))
    else {
      w.begin(f.kind, f.call, f.stream)
      const at = w.reserveU32()
      w.bytes(f.payload)
      w.patchLength(at)
      w.end()
      // The reserved length is part of the payload.
      const len = Buffer.alloc(4)
      len.writeUInt32LE(f.payload.byteLength, 0)
      want[want.length - 1] = { ...f, payload: Buffer.concat([len, f.payload]) }
    }
  }
  out.push(...w.takeParts())
  const d = new FrameDecoder()
  const got = decodeAll(d, split(Buffer.concat(out), at))
  d.end()
  return sameFrames(got, want)
}), RUNS / 2)

const fixed = suite('fuzz: fixed payloads')

property(fixed, 'credit, log, bundle and JSON payload readers return a value or throw a ProtocolError on any bytes', fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
  for (const read of [payloads.readCredit, payloads.readLog, payloads.readBundle, payloads.readJson]) onlyProtocolErrors(thrown(() => read(bytes)))
  return ({} as { polluted?: unknown }).polluted === undefined
}))

decoder.run()
writer.run()
fixed.run()
