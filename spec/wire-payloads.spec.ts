import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { ProtocolError } from '../lib/errors.ts'
import { payloads } from '../lib/wire/payloads.ts'
import { assertThrows } from './wire.ts'

const fixed = suite('payloads')

fixed('round-trip credit, log, bundle and JSON', () => {
  assert.equal(payloads.readCredit(payloads.credit(3, 4096)), { items: 3, bytes: 4096 })
  assert.equal(payloads.readLog(payloads.log(2, 'héllo')), { fd: 2, text: 'héllo' })
  const b = payloads.readBundle(payloads.bundle('abc', Uint8Array.of(1, 2)))
  assert.is(b.hash, 'abc')
  assert.equal([...b.code], [1, 2])
  assert.equal(payloads.readJson(payloads.json({ v: 1 })), { v: 1 })
})

fixed('regression: a bundle payload shorter than it says is a protocol error (escaped as a RangeError or read short)', () => {
  for (const bad of [new Uint8Array(0), Uint8Array.of(5), Uint8Array.of(5, 0, 97)]) {
    const err = assertThrows(() => payloads.readBundle(bad))
    assert.instance(err, ProtocolError)
  }
})

fixed('regression: a JSON payload that does not parse is a protocol error (escaped as a SyntaxError)', () => {
  for (const text of ['', '{', 'hello', '{"v":1']) {
    const err = assertThrows(() => payloads.readJson(Buffer.from(text)))
    assert.instance(err, ProtocolError)
  }
})

fixed('a JSON payload with a __proto__ key leaves Object.prototype alone', () => {
  const h = payloads.readJson<Record<string, unknown>>(Buffer.from('{"__proto__":{"polluted":true},"v":1}'))
  assert.is(h.v, 1)
  assert.is(({} as { polluted?: unknown }).polluted, undefined)
})

fixed.run()
