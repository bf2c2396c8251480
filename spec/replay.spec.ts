// The replay log of a resumable session (lib/replay.ts): what it keeps until
// acknowledged, what it gives to send again, and the counts it refuses.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { ProtocolError } from '../lib/errors.ts'
import { ReplayLog } from '../lib/replay.ts'

const s = suite('replay log')
const bytes = (...parts: Uint8Array[]) => Buffer.concat(parts).toString('hex')
const part = (n: number, fill: number) => new Uint8Array(n).fill(fill)

s('keeps what was sent until it is acknowledged, part by part and inside a part', () => {
  const log = new ReplayLog()
  log.record([part(10, 1), part(20, 2)])
  log.record([part(5, 3)])
  assert.is(log.sent, 35)
  assert.is(log.kept, 35)
  log.acked(15)
  assert.is(log.kept, 20)
  assert.is(bytes(...log.since(15)), bytes(part(15, 2), part(5, 3)))
  log.acked(35)
  assert.is(log.kept, 0)
  assert.equal(log.since(35), [])
  assert.is(log.peak, 35)
})

s('gives what a side that received n bytes missed, from a point inside a part', () => {
  const log = new ReplayLog()
  log.record([part(8, 1), part(8, 2)])
  assert.is(bytes(...log.since(3)), bytes(part(5, 1), part(8, 2)))
  // Giving from 3 let go of what lies before it.
  assert.is(log.kept, 13)
})

s('refuses an ack past what was sent, and a resume from before what was let go', () => {
  const log = new ReplayLog()
  log.record([part(10, 1)])
  assert.throws(() => log.acked(11), (e: unknown) => e instanceof ProtocolError && /acknowledged 11 bytes, but only 10/.test(e.message))
  log.acked(6)
  assert.not.ok(log.canResumeFrom(5))
  assert.not.ok(log.canResumeFrom(11))
  assert.not.ok(log.canResumeFrom(Number.NaN))
  assert.ok(log.canResumeFrom(6) && log.canResumeFrom(10))
  assert.throws(() => log.since(5), (e: unknown) => e instanceof ProtocolError && /cannot resume from byte 5/.test(e.message))
})

s('counts what arrived and what is yet to be acknowledged', () => {
  const log = new ReplayLog()
  log.receivedFrame(11)
  log.receivedFrame(30)
  assert.is(log.unacked, 41)
  assert.is(log.takeAck(), 41)
  assert.is(log.unacked, 0)
  log.receivedFrame(5)
  assert.is(log.unacked, 5)
})

s.run()
