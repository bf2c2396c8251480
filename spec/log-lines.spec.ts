// Log lines over a session fed by hand: partial lines, and their bounds.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { encodeFrame, Kind } from '../lib/wire/frame.ts'
import { payloads } from '../lib/wire/payloads.ts'
import { helloSession } from './session.ts'

const logs = suite('log lines from the worker')

logs('regression: what an ended call prints without a newline is passed on at once, not kept', () => {
  const { session, entries, call } = helloSession()
  const id = session.register(call)
  session.release(id)
  for (let i = 0; i < 100; i++) session.data(encodeFrame(Kind.log, id, 0, payloads.log(1, 'y'.repeat(1000))))
  // Before: kept as one partial line per ended call, for ever (4,000 frames of 60 KiB: +233 MiB).
  assert.is(entries.length, 100)
  assert.ok(entries.every((e) => e.callId === id && e.line.length === 1000))
})

logs('partial lines of many live calls are bounded together, then passed on as they are', () => {
  const { session, entries, call } = helloSession()
  const ids = Array.from({ length: 40 }, () => session.register(call))
  // 40 calls x 60,000 characters without a newline: more than the 1 MiB kept for all.
  for (const id of ids) session.data(encodeFrame(Kind.log, id, 0, payloads.log(1, 'z'.repeat(60_000))))
  assert.ok(entries.length > 0, 'nothing was passed on')
  const kept = ids.length * 60_000 - entries.reduce((n, e) => n + e.line.length, 0)
  assert.ok(kept <= 1024 * 1024, `${kept} characters kept`)
  // A live call's line that ends normally is still whole.
  session.data(encodeFrame(Kind.log, ids[0]!, 0, payloads.log(1, 'end\n')))
  assert.ok(entries.some((e) => e.line.endsWith('end')))
})

logs.run()
