/**
 * The gRPC anchor's server, run in its own process by grpc.ts (with
 * `node --import tsx`), so its work does not share the client's event loop,
 * as farpipe's worker does not.
 *
 * Protocol with the parent, over the IPC channel:
 * - sends `{ port }` once the server listens on 127.0.0.1;
 * - answers `'produced'` with `{ produced }`: the items the latest Produce
 *   call has written so far;
 * - exits when the parent disconnects (closes or dies).
 *
 * @module
 */
import * as grpc from '@grpc/grpc-js'
import { loadPeerService, makeItem, type Count, type Empty, type Item, type ItemKind, type Num } from './grpc-proto.ts'

type Message = Item | Num

if (!process.send) throw new Error('grpc-server.ts must be started by grpc.ts, with an IPC channel')
const send = process.send.bind(process)

/** Items the latest Produce call has written; read by the parent over IPC. */
let produced = 0

/**
 * Resolves when the call can take more writes, or will never again: after
 * 'drain', or when the client cancels or the call fails.
 */
function writable(call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done)
      call.off('cancelled', done)
      call.off('close', done)
      resolve()
    }
    call.on('drain', done)
    call.on('cancelled', done)
    call.on('close', done)
  })
}

/**
 * A server stream of n items, written as fast as `write()` takes them:
 * synchronously while it returns true, then waiting for 'drain'.
 */
function serverStream(kind: ItemKind) {
  return async (call: grpc.ServerWritableStream<Count, Message>) => {
    const n = call.request.n
    for (let i = 0; i < n; i++) {
      if (call.cancelled) return
      if (!call.write(makeItem(kind, i))) await writable(call)
    }
    call.end()
  }
}

/** Counts the items the client streams and replies with the count. */
function clientStream(call: grpc.ServerReadableStream<Message, Count>, callback: grpc.sendUnaryData<Count>) {
  let n = 0
  call.on('data', () => n++)
  call.on('end', () => callback(null, { n }))
  call.on('error', (err: grpc.ServiceError) => callback(err))
}

/**
 * Echoes each item back. 'data' events rather than `for await`, which would
 * cost a promise per item; reading pauses while the response side is full.
 */
function bidi(call: grpc.ServerDuplexStream<Message, Message>) {
  let paused = false
  const resume = () => {
    paused = false
    call.resume()
  }
  call.on('data', (item: Message) => {
    if (!call.write(item) && !paused) {
      paused = true
      call.pause()
      call.once('drain', resume)
    }
  })
  call.on('end', () => call.end())
  call.on('error', () => {})
}

/** Numbers without end, counted in `produced`, until the client cancels. */
async function produce(call: grpc.ServerWritableStream<Empty, Num>) {
  produced = 0
  for (let i = 0; !call.cancelled; i++) {
    const more = call.write({ v: i })
    produced++
    if (!more) await writable(call)
  }
}

const service = loadPeerService()
const server = new grpc.Server()
server.addService(service.definition, {
  ServerObjects: serverStream('objects'),
  ServerNumbers: serverStream('numbers'),
  ClientObjects: clientStream,
  ClientNumbers: clientStream,
  BidiObjects: bidi,
  BidiNumbers: bidi,
  Unary: (_call: grpc.ServerUnaryCall<Empty, Empty>, callback: grpc.sendUnaryData<Empty>) => callback(null, {}),
  Produce: produce,
})

server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`grpc-server: cannot listen on 127.0.0.1: ${err.message}`)
    process.exit(1)
  }
  send({ port })
})

process.on('message', (message) => {
  if (message === 'produced') send({ produced })
})
// The parent closed the channel or died: nothing is left to serve.
process.on('disconnect', () => {
  server.forceShutdown()
  process.exit(0)
})
