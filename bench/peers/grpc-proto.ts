/**
 * The gRPC anchor's schema, shared by the client (grpc.ts) and the server
 * process (grpc-server.ts): items.proto loaded with @grpc/proto-loader, the
 * message shapes as they arrive in JS, and the items both sides make.
 *
 * @module
 */
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadSync, type MethodDefinition, type ServiceDefinition } from '@grpc/proto-loader'

/** An object item as it arrives: `i` is an int64 on the wire, a number here. */
export interface Item {
  i: number
  name: string
  ok: boolean
}
/** A number item. */
export interface Num {
  v: number
}
/** A count of items, asked for or received. */
export interface Count {
  n: number
}
/** The empty message. */
export type Empty = Record<string, never>

/** Which items a streaming call carries. */
export type ItemKind = 'numbers' | 'objects'

/**
 * The `i`-th item of a kind, as both sides make it: the integer itself
 * wrapped in `Num`, or `{ i, name: 'item' + i, ok: true }` like bench/tasks.ts.
 */
export function makeItem(kind: ItemKind, i: number): Item | Num {
  return kind === 'numbers' ? { v: i } : { i, name: 'item' + i, ok: true }
}

/**
 * Loader options: `longs: Number` turns the int64 `i` into a JS number and
 * `defaults: true` fills fields proto3 leaves off the wire at their default
 * (`i: 0`, `v: 0`), so every item arrives as a complete plain object. The
 * conversion runs inside the deserializer, hence inside the timed work.
 */
const LOADER_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true }

/** items.proto, next to this file. */
export const PROTO_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'items.proto')

/**
 * The Peer service. `method()` gives one method's definition typed with its
 * request and response shapes (the loader only knows them as `object`).
 */
export interface PeerService {
  definition: ServiceDefinition
  method<Req, Res>(name: string): MethodDefinition<Req, Res>
}

/** Loads items.proto and returns its Peer service. */
export function loadPeerService(): PeerService {
  const pkg = loadSync(PROTO_FILE, LOADER_OPTIONS)
  const definition = pkg['farpipe.bench.Peer'] as ServiceDefinition | undefined
  if (!definition) throw new Error(`${PROTO_FILE} defines no service farpipe.bench.Peer`)
  return {
    definition,
    method<Req, Res>(name: string) {
      const m = definition[name]
      if (!m) throw new Error(`service farpipe.bench.Peer has no method ${name}; it has ${Object.keys(definition).join(', ')}`)
      return m as unknown as MethodDefinition<Req, Res>
    },
  }
}
