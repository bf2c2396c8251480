/**
 * The gRPC anchor of the benchmarks: the same streams farpipe runs (server,
 * client and bidirectional streaming of numbers and small objects, a tiny
 * round trip, time to first item, how far a producer runs ahead of a stalled
 * reader) over @grpc/grpc-js, measured in the same run as farpipe.
 *
 * The server runs in a child process (grpc-server.ts), as farpipe's worker
 * does; the client channel lives in this process. Both talk over loopback
 * with insecure credentials, and the client channel is configured at its
 * best (see {@link CHANNEL_OPTIONS}).
 *
 * Items are proto3 messages (items.proto): objects as `Item { int64 i;
 * string name; bool ok }`, loaded with `longs: Number` so they arrive as
 * `{ i: number, name: string, ok: boolean }`; numbers as `Num { double v }`.
 * The conversion to plain JS objects happens in the deserializer, inside the
 * timed work, since farpipe also delivers real JS values.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import * as grpc from '@grpc/grpc-js'
import { loadPeerService, makeItem, type Count, type Empty, type Item, type ItemKind, type Num } from './grpc-proto.ts'

export type { ItemKind } from './grpc-proto.ts'

/** The gRPC anchor: one server process and one warm client channel to it. */
export interface GrpcPeer {
  /** Server streaming: the server sends n items, the client counts them. Items/s for one run (wall time from the call to the last item). */
  serverStream(n: number, kind: ItemKind): Promise<number>
  /** Client streaming: the client writes n items (waiting for 'drain' when `write()` returns false), the server counts them and replies with the count. Items/s. */
  clientStream(n: number, kind: ItemKind): Promise<number>
  /** Bidirectional: the client writes n items, the server echoes each back, the client counts n echoes. Items/s. */
  bidi(n: number, kind: ItemKind): Promise<number>
  /** Round trip of a tiny unary call on the warm channel, `calls` times sequentially: p50 and p99 in microseconds. */
  unary(calls: number): Promise<{ p50: number; p99: number }>
  /**
   * Time to the first message of a server-streaming call on the warm channel
   * (start the call, await the first message), `calls` times: p50/p99 µs.
   * The call asks for a single item and so ends without a cancel (see the
   * implementation for why).
   */
  firstMessage(calls: number): Promise<{ p50: number; p99: number }>
  /**
   * A server stream of numbers whose client reads 3 messages and then stalls
   * for `stallMs`: how many items the server handler has written by then
   * (it writes as fast as `call.write()` lets it, awaiting 'drain' when write
   * returns false). The "producer lead".
   */
  stalledLead(stallMs: number): Promise<number>
  /** Stops the server process and closes the channel. */
  close(): Promise<void>
}

/**
 * The client channel's options: gRPC at its best for these benchmarks.
 *
 * - `grpc.per_rpc_retry_buffer_size: 0`: without it, grpc-js keeps every
 *   message a call writes (up to 256 KiB a call) for a possible retry,
 *   acknowledges writes before they reach the socket, and trims that buffer
 *   with an array copy per message; client and bidi streaming run many times
 *   slower (see the check script's numbers).
 * - `grpc.enable_retries: 0`: no retry bookkeeping at all.
 * - message length limits lifted (items are tiny, so this only rules them out).
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.per_rpc_retry_buffer_size': 0,
  'grpc.enable_retries': 0,
  'grpc.max_receive_message_length': -1,
  'grpc.max_send_message_length': -1,
}

/** How long the server process may take to start listening. */
const START_TIMEOUT_MS = 30_000

const SERVER_FILE = fileURLToPath(new URL('./grpc-server.ts', import.meta.url))

type Message = Item | Num

/** The checksum of a run: the sum of the item indexes, n(n-1)/2 when all arrived intact. */
const indexOf: Record<ItemKind, (item: Message) => number> = {
  numbers: (item) => (item as Num).v,
  objects: (item) => (item as Item).i,
}

/** Starts the server process on a free loopback port and a warm client channel to it. */
export async function startGrpc(): Promise<GrpcPeer> {
  return startGrpcWith(CHANNEL_OPTIONS)
}

/**
 * {@link startGrpc} with other channel options, to measure what an option
 * is worth (the check script runs without the retry-buffer option once).
 */
export async function startGrpcWith(channelOptions: grpc.ChannelOptions): Promise<GrpcPeer> {
  const service = loadPeerService()
  const methods = {
    serverObjects: service.method<Count, Item>('ServerObjects'),
    serverNumbers: service.method<Count, Num>('ServerNumbers'),
    clientObjects: service.method<Item, Count>('ClientObjects'),
    clientNumbers: service.method<Num, Count>('ClientNumbers'),
    bidiObjects: service.method<Item, Item>('BidiObjects'),
    bidiNumbers: service.method<Num, Num>('BidiNumbers'),
    unary: service.method<Empty, Empty>('Unary'),
    produce: service.method<Empty, Num>('Produce'),
  }
  // Each kind's methods, typed as carrying either kind of message.
  const serverMethod = (kind: ItemKind) => (kind === 'numbers' ? methods.serverNumbers : methods.serverObjects) as grpc.MethodDefinition<Count, Message>
  const clientMethod = (kind: ItemKind) => (kind === 'numbers' ? methods.clientNumbers : methods.clientObjects) as grpc.MethodDefinition<Message, Count>
  const bidiMethod = (kind: ItemKind) => (kind === 'numbers' ? methods.bidiNumbers : methods.bidiObjects) as grpc.MethodDefinition<Message, Message>

  const server = await startServer()
  const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), channelOptions)
  try {
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + START_TIMEOUT_MS, (err) => (err ? reject(err) : resolve())),
    )
  } catch (err) {
    client.close()
    await server.stop()
    throw err
  }

  function unaryOnce(): Promise<void> {
    const m = methods.unary
    return new Promise((resolve, reject) =>
      client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, {}, (err) => (err ? reject(err) : resolve())),
    )
  }

  const peer: GrpcPeer = {
    async serverStream(n, kind) {
      const m = serverMethod(kind)
      const index = indexOf[kind]
      const t0 = performance.now()
      const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, { n })
      let count = 0
      let sum = 0
      let tLast = t0
      await new Promise<void>((resolve, reject) => {
        call.on('data', (item: Message) => {
          sum += index(item)
          if (++count === n) tLast = performance.now()
        })
        call.on('end', resolve)
        call.on('error', reject)
      })
      verify('serverStream', kind, n, count, sum)
      return rate(n, tLast - t0)
    },

    async clientStream(n, kind) {
      const m = clientMethod(kind)
      const t0 = performance.now()
      let settle!: grpc.requestCallback<Count>
      const reply = new Promise<Count>((resolve, reject) => {
        settle = (err, value) => (err ? reject(err) : value ? resolve(value) : reject(new Error('clientStream: no reply')))
      })
      // Awaited below; a failure while still writing also rejects 'drain' below.
      reply.catch(() => {})
      const call = client.makeClientStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, settle)
      for (let i = 0; i < n; i++) {
        if (!call.write(makeItem(kind, i))) await once(call, 'drain')
      }
      call.end()
      const { n: counted } = await reply
      const elapsed = performance.now() - t0
      if (counted !== n) throw new Error(`clientStream(${kind}): the server counted ${counted} items, expected ${n}`)
      return rate(n, elapsed)
    },

    async bidi(n, kind) {
      const m = bidiMethod(kind)
      const index = indexOf[kind]
      const t0 = performance.now()
      const call = client.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize)
      let count = 0
      let sum = 0
      let tLast = t0
      const ended = new Promise<void>((resolve, reject) => {
        call.on('data', (item: Message) => {
          sum += index(item)
          if (++count === n) tLast = performance.now()
        })
        call.on('end', resolve)
        call.on('error', reject)
      })
      ended.catch(() => {})
      for (let i = 0; i < n; i++) {
        if (!call.write(makeItem(kind, i))) await once(call, 'drain')
      }
      call.end()
      await ended
      verify('bidi', kind, n, count, sum)
      return rate(n, tLast - t0)
    },

    async unary(calls) {
      const samples = new Float64Array(calls)
      for (let k = 0; k < calls; k++) {
        const t0 = performance.now()
        await unaryOnce()
        samples[k] = (performance.now() - t0) * 1000
      }
      return percentiles(samples)
    },

    async firstMessage(calls) {
      // The call asks for one item, so the server ends it and no cancel is
      // needed: cancelling is an HTTP/2 RST_STREAM, and the server's
      // nghttp2 answers more than ~1000 of them in a burst (then 33/s) with
      // GOAWAY, failing the channel (grpc/grpc-node#2872, CVE-2023-44487
      // mitigation). The first message of a longer stream leaves no sooner.
      const m = serverMethod('numbers')
      const samples = new Float64Array(calls)
      for (let k = 0; k < calls; k++) {
        const t0 = performance.now()
        const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, { n: 1 })
        const status = ended(call)
        await new Promise((resolve, reject) => {
          call.once('data', resolve)
          call.once('error', reject)
        })
        samples[k] = (performance.now() - t0) * 1000
        await status
      }
      return percentiles(samples)
    },

    async stalledLead(stallMs) {
      const m = methods.produce
      const call = client.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, {})
      call.on('error', () => {}) // the CANCELLED status cancel() causes
      const status = ended(call)
      const items = call[Symbol.asyncIterator]()
      for (let k = 0; k < 3; k++) await items.next()
      await sleep(stallMs)
      const lead = await server.produced()
      call.cancel()
      await status
      return lead
    },

    async close() {
      client.close()
      await server.stop()
    },
  }

  // Warm the channel and the code paths (JIT, lazily built protobuf coders)
  // so that the first measured run is not the first run.
  try {
    for (const kind of ['numbers', 'objects'] as const) {
      await peer.serverStream(2000, kind)
      await peer.clientStream(2000, kind)
      await peer.bidi(2000, kind)
    }
    await peer.unary(100)
    await peer.firstMessage(20)
  } catch (err) {
    await peer.close()
    throw err
  }
  return peer
}

/** The server process, as the client sees it. */
interface ServerProcess {
  port: number
  /** Items the latest Produce call has written so far. */
  produced(): Promise<number>
  /** Kills the process and waits for its exit. */
  stop(): Promise<void>
}

/**
 * Starts grpc-server.ts with this `node` and tsx, and waits for the port it
 * listens on. The process is killed on stop() and when this process exits;
 * if this process dies without exiting, the server sees its IPC channel close
 * and exits on its own.
 */
async function startServer(): Promise<ServerProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), SERVER_FILE], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const kill = () => child.kill()
  process.on('exit', kill)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))

  const stop = async () => {
    process.off('exit', kill)
    if (child.exitCode === null && child.signalCode === null) child.kill()
    await exited
  }

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => fail(`did not listen within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS)
    const onMessage = (message: unknown) => {
      if (isRecord(message) && typeof message.port === 'number') {
        clearTimeout(timer)
        child.off('exit', onExit)
        child.off('message', onMessage)
        resolve(message.port)
      }
    }
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(signal ? `was killed by ${signal}` : `exited with code ${code}`)
    function fail(how: string) {
      clearTimeout(timer)
      child.off('message', onMessage)
      stop().then(
        () => reject(new Error(`gRPC server process ${SERVER_FILE} (pid ${child.pid ?? '?'}) ${how} before listening`)),
        reject,
      )
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
    child.once('error', (err) => fail(`could not start: ${err.message}`))
  })

  return {
    port,
    produced: () =>
      new Promise<number>((resolve, reject) => {
        const onMessage = (message: unknown) => {
          if (isRecord(message) && typeof message.produced === 'number') {
            child.off('message', onMessage)
            child.off('exit', onExit)
            resolve(message.produced)
          }
        }
        const onExit = () => reject(new Error('the gRPC server process exited before telling how many items it produced'))
        child.on('message', onMessage)
        child.once('exit', onExit)
        child.send('produced')
      }),
    stop,
  }
}

/** Resolves when a call has its status, whatever it is (events.once would reject on the 'error' a cancellation emits). */
function ended(call: grpc.ClientReadableStream<unknown>): Promise<void> {
  return new Promise((resolve) => call.once('status', () => resolve()))
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null
}

/** Throws unless all n items arrived, intact and in JS form (an index that stayed a Long would spoil the sum). */
function verify(what: string, kind: ItemKind, n: number, count: number, sum: number): void {
  const expected = (n * (n - 1)) / 2
  if (count !== n || sum !== expected) {
    throw new Error(`${what}(${kind}): received ${count} items with index sum ${sum}, expected ${n} items with sum ${expected}`)
  }
}

/** Items per second. */
function rate(n: number, ms: number): number {
  return n / (ms / 1000)
}

/** Nearest-rank p50 and p99 of samples in µs. */
function percentiles(samples: Float64Array): { p50: number; p99: number } {
  if (samples.length === 0) throw new RangeError('percentiles of no samples: calls must be at least 1')
  const sorted = samples.slice().sort()
  const at = (p: number) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!
  return { p50: at(0.5), p99: at(0.99) }
}
