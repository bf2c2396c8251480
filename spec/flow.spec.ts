import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { ProtocolError } from '../lib/errors.ts'
import { CreditLedger, nestedInitial, CreditWindow, FlushPolicy, NestedBudget } from '../lib/flow.ts'

const ledger = suite('CreditLedger')

ledger('starts with the whole window granted', () => {
  const l = new CreditLedger({ items: 8, bytes: 1000 })
  assert.equal(l.initial, { items: 8, bytes: 1000 })
  assert.is(l.grant(), undefined)
})

ledger('grants nothing until half the window is free, then all the room', () => {
  const l = new CreditLedger({ items: 8, bytes: 1_000_000 })
  l.received(8, 80)
  assert.is(l.consumed(1, 10), undefined)
  assert.is(l.consumed(1, 10), undefined)
  assert.is(l.consumed(1, 10), undefined)
  assert.equal(l.consumed(1, 10), { items: 4, bytes: 40 })
})

ledger('does not grant item by item while small items leave the byte window unused', () => {
  const l = new CreditLedger({ items: 100, bytes: 1_000_000 })
  l.received(100, 100)
  for (let i = 0; i < 49; i++) assert.is(l.consumed(1, 1), undefined)
  assert.equal(l.consumed(1, 1), { items: 50, bytes: 50 })
})

ledger('refuses more items than were granted: the sender ignored flow control', () => {
  const l = new CreditLedger({ items: 4, bytes: 1000 })
  try {
    l.received(5, 10)
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, ProtocolError)
    assert.match((err as Error).message, 'sender sent 5 items with credit for 4')
  }
})

// Regression: byte credit was not checked on receipt, so a worker that
// ignored it made the caller hold 196 MiB against an 8 MiB window.
ledger('refuses a frame sent with no byte credit left: the sender ignored flow control', () => {
  const l = new CreditLedger({ items: 1000, bytes: 100 })
  l.received(1, 60)
  l.received(1, 70) // overdraws by 30: allowed, the sender had credit when it began
  try {
    l.received(1, 10)
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, ProtocolError)
    assert.match((err as Error).message, 'sender sent 10 bytes with no byte credit left (-30 of a 100-byte window)')
  }
})

ledger('is bounded in bytes: large items use up the byte window before the item window', () => {
  const l = new CreditLedger({ items: 1000, bytes: 100 })
  l.received(2, 120) // the last item took the sender's byte credit below zero, as allowed
  assert.is(l.grant(), undefined)
  // The sender is dry in bytes (owes -20): the room freed by one item is granted at once.
  assert.equal(l.consumed(1, 60), { items: 1, bytes: 60 })
  assert.ok(l.queuedBytes + 60 - 20 <= 100)
})

ledger('never lets queued plus granted exceed the high-water marks', () => {
  const l = new CreditLedger({ items: 10, bytes: 10_000 })
  let owed = 10
  let queued = 0
  for (let step = 0; step < 200; step++) {
    if (owed > 0 && step % 3 !== 0) {
      const n = Math.min(owed, 1 + (step % 4))
      l.received(n, n * 10)
      owed -= n
      queued += n
    } else if (queued > 0) {
      const c = l.consumed(1, 10)
      queued--
      if (c) owed += c.items
    }
    assert.ok(queued + owed <= 10, `step ${step}: queued ${queued} + owed ${owed}`)
  }
})

ledger('refuses a high-water mark below 1', () => {
  try {
    new CreditLedger({ items: 0, bytes: 10 })
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, RangeError)
  }
})

const window = suite('CreditWindow')

window('is open while there is credit for an item and a byte', () => {
  const w = new CreditWindow({ items: 2, bytes: 100 })
  assert.ok(w.open)
  w.spend(150) // one item may take the byte credit below zero
  assert.not.ok(w.open)
  w.add({ items: 0, bytes: 50 })
  assert.not.ok(w.open)
  w.add({ items: 0, bytes: 1 })
  assert.ok(w.open)
  w.spend(1)
  assert.not.ok(w.open)
})

window('regression: credit beyond the window the receiver announced is a protocol error', () => {
  const w = new CreditWindow({ items: 10, bytes: 1000 }, { items: 10, bytes: 1000 })
  w.spend(400)
  w.add({ items: 1, bytes: 400 })
  assert.throws(() => w.add({ items: 0xffffffff, bytes: 0xffffffff }), (e: Error) => e instanceof ProtocolError && /beyond the window it announced \(10 items, 1000 bytes\)/.test(e.message))
  const small = new CreditWindow({ items: 1, bytes: 10 }, { items: 10, bytes: 1000 })
  small.add({ items: 9, bytes: 990 })
  assert.throws(() => small.add({ items: 0, bytes: 1 }), (e: Error) => e instanceof ProtocolError)
})

const budget = suite('NestedBudget')

budget('first windows come out of the call\'s window, and come back when their streams close', () => {
  const b = new NestedBudget({ items: 100, bytes: 200 })
  assert.equal(b.take(1, { items: 32, bytes: 64 }), { items: 32, bytes: 64 })
  assert.equal(b.take(2, { items: 32, bytes: 64 }), { items: 32, bytes: 64 })
  assert.equal(b.take(3, { items: 32, bytes: 64 }), { items: 32, bytes: 64 })
  // Spent in bytes (8 left) and nearly in items (4 left): the next gets what is left, then nothing.
  assert.equal(b.take(4, { items: 32, bytes: 64 }), { items: 4, bytes: 8 })
  assert.equal(b.take(5, { items: 32, bytes: 64 }), { items: 0, bytes: 0 })
  b.give(2)
  b.give(2) // once only
  b.give(5) // given nothing
  assert.equal(b.take(6, { items: 32, bytes: 64 }), { items: 32, bytes: 64 })
  assert.equal(b.take(7, { items: 32, bytes: 64 }), { items: 0, bytes: 0 })
})

budget('regression: 4,096 streams named at once get first windows that add up to the call\'s window', () => {
  const marks = { items: 4096, bytes: 8 * 1024 * 1024 }
  const b = new NestedBudget(marks)
  let items = 0
  let bytes = 0
  for (let id = 0x8000; id < 0x8000 + 4096; id++) {
    const got = b.take(id, nestedInitial(marks))
    items += got.items
    bytes += got.bytes
  }
  assert.is(bytes, marks.bytes)
  assert.ok(items <= marks.items)
})

const flush = suite('FlushPolicy')

flush('holds a batch for the end of the turn while items come fast', () => {
  let now = 0
  const p = new FlushPolicy({ maxBytes: 1000, maxItems: 1000, maxDelayMs: 2 }, () => now)
  assert.is(p.added(10), true) // the first item of a fresh link: nothing to wait for
  p.flushed()
  now += 0.001
  assert.is(p.added(20), false)
  now += 0.001
  assert.is(p.added(30), false)
})

flush('writes at once when the batch is large', () => {
  let now = 0
  const p = new FlushPolicy({ maxBytes: 1000, maxItems: 1000, maxDelayMs: 2 }, () => now)
  p.added(1)
  p.flushed()
  assert.is(p.added(999), false)
  assert.is(p.added(1000), true)
})

flush('writes at once an item that was slow to come (time to first item is time to first yield)', () => {
  let now = 0
  const p = new FlushPolicy({ maxBytes: 1000, maxItems: 1000, maxDelayMs: 2 }, () => now)
  p.added(1)
  p.flushed()
  now += 1
  assert.is(p.added(2), false)
  now += 500 // a producer that computed for half a second without yielding to the event loop
  assert.is(p.added(3), true)
})

flush('a fast producer is timed every 8th item only, and seen within 8 items once it turns slow', () => {
  let now = 0
  let readings = 0
  const p = new FlushPolicy({ maxBytes: 1_000_000, maxItems: 1_000_000, maxDelayMs: 2 }, () => (readings++, now))
  p.added(1)
  p.flushed()
  for (let i = 0; i < 800; i++) {
    now += 0.0003
    assert.is(p.added(1), false)
  }
  assert.ok(readings <= 101, `the clock was read ${readings} times for 801 items`)
  let at = 0
  for (let i = 1; i <= 8 && !at; i++) {
    now += 500
    if (p.added(1)) at = i
  }
  assert.ok(at >= 1 && at <= 8, 'the slow producer is seen within 8 items')
})

flush('writes a batch that has waited too long even if items keep coming fast', () => {
  let now = 0
  const p = new FlushPolicy({ maxBytes: 1_000_000, maxItems: 1000, maxDelayMs: 2 }, () => now)
  p.added(1)
  p.flushed()
  let flushed = false
  for (let i = 0; i < 100 && !flushed; i++) {
    now += 0.1
    flushed = p.added(i)
  }
  assert.ok(flushed)
  assert.ok(now <= 2.2, `flushed at ${now} ms`)
})

ledger('a nested stream starts with a small first window, never more than its marks', () => {
  assert.equal(nestedInitial({ items: 4096, bytes: 8 * 1024 * 1024 }), { items: 32, bytes: 64 * 1024 })
  assert.equal(nestedInitial({ items: 2, bytes: 100 }), { items: 2, bytes: 100 })
  const l = new CreditLedger({ items: 4096, bytes: 8 * 1024 * 1024 }, nestedInitial({ items: 4096, bytes: 8 * 1024 * 1024 }))
  assert.ok(l.owes)
  l.received(1, 70_000) // one item may overdraw the first window
  assert.not.ok(l.owes)
  assert.throws(() => l.received(1, 10), /no byte credit left/)
})

ledger.run()

window.run()
budget.run()
flush.run()
