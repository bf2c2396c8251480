// Sessions over the in-memory transport: what happens when the channel is
// slow, cut or corrupted, without processes in the way.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { collect, rejection, tempDir, thrown } from './helpers.ts'
import { MemoryTransport, pool, ProtocolError, SerializeError, TransportError, type Pool } from 'farpipe'
import { encodeFrame, Kind } from '../lib/wire/frame.ts'
import { payloads } from '../lib/wire/payloads.ts'
import { helloSession } from './session.ts'
import * as t from './fixtures/tasks.ts'

const s = suite('session over memory')

async function open(transport: MemoryTransport): Promise<Pool> {
  return pool({ transports: [transport], cacheDir: tempDir() })
}

s('runs calls in this process over an in-memory channel', async () => {
  const p = await open(new MemoryTransport())
  try {
    assert.equal(await collect(p.run(t.countAsync, 3)), [0, 1, 2])
    assert.is(await p.run(t.add, 1, 2), 3)
    const ctx = await p.run(t.whereAmI)
    assert.is(ctx.host, 'memory')
  } finally {
    await p.close()
  }
})

s('works when every chunk is delayed', async () => {
  const p = await open(new MemoryTransport({ delay: 5 }))
  try {
    assert.is(await p.run(t.sum, [1, 2, 3].values()), 6)
  } finally {
    await p.close()
  }
})

s('a cut channel fails in-flight calls with TransportError, and the next call reconnects', async () => {
  const transport = new MemoryTransport()
  const p = await open(transport)
  try {
    const call = p.run(t.slowItems, 100, 20)
    const it = call[Symbol.asyncIterator]()
    assert.equal(await it.next(), { done: false, value: 0 })
    transport.cut('cable pulled')
    const err = await rejection(call.result)
    assert.instance(err, TransportError)
    assert.match(err.message, 'cable pulled')
    assert.instance(await rejection(it.next()), TransportError)
    assert.is(await p.run(t.add, 2, 2), 4)
  } finally {
    await p.close()
  }
})

s('a channel cut after some bytes fails the call mid-stream, never ends it normally', async () => {
  const transport = new MemoryTransport({ cutAfterBytes: 64 * 1024 })
  const p = await open(transport)
  try {
    const call = p.run(t.echoBytes, Array.from({ length: 10 }, () => new Uint8Array(20_000)).values())
    const err = await rejection(collect(call))
    assert.instance(err, TransportError)
    assert.match(err.message, 'cut after')
  } finally {
    await p.close()
  }
})

s('a corrupted frame closes the session with a ProtocolError as the cause', async () => {
  const transport = new MemoryTransport()
  const p = await open(transport)
  try {
    const call = p.run(t.slowItems, 5, 50)
    transport.corrupt()
    const err = await rejection(call.result)
    assert.instance(err, TransportError)
    assert.instance(err.cause, ProtocolError)
    assert.is(await p.run(t.add, 1, 1), 2)
  } finally {
    await p.close()
  }
})

s('an argument that cannot be sent sends nothing at all', async () => {
  const transport = new MemoryTransport()
  const p = await open(transport)
  try {
    await p.run(t.add, 1, 1)
    const before = transport.bytes
    assert.instance(thrown(() => p.run(t.echo, { f: () => 1 })), SerializeError)
    await new Promise((r) => setTimeout(r, 50))
    assert.is(transport.bytes, before)
  } finally {
    await p.close()
  }
})

const logs = suite('session: log lines from the worker')

logs('regression: a log line for a call that was never started cuts the worker off', () => {
  const { session, died } = helloSession()
  session.data(encodeFrame(Kind.log, 4000, 0, payloads.log(1, 'x'.repeat(60_000))))
  assert.is(died()?.name, 'TransportError')
  assert.match(died()!.message, 'log line for call 4000, which was never started')
})

logs('regression: a log line for a file descriptor other than 1 and 2 cuts the worker off', () => {
  const { session, died } = helloSession()
  session.data(encodeFrame(Kind.log, 0, 0, payloads.log(7, 'x\n')))
  assert.match(died()?.message ?? '', 'file descriptor 7')
})

s.run()
logs.run()
