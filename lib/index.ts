/**
 * farpipe: run TypeScript functions on other machines and stream their
 * results back as WHATWG streams.
 *
 * @module
 */

// The declarations use Node's types (Buffer, web streams, EventTarget), which
// Node, Deno and Bun callers all have; so index.d.ts, the one entry point, loads them:
// a consumer's tsconfig needs no `types: ["node"]` (TypeScript 6+ no longer
// loads every @types package by itself). `preserve` keeps it in the .d.ts.
/// <reference types="node" preserve="true" />

// What users write.
export { remote, type Remote } from './remote.ts'
export {
  pool,
  Pool,
  type PoolOptions,
  type Runner,
  type MapOptions,
  type MapItem,
  type HostStatus,
  type PoolStats,
  type HostStats,
  type WorkerStats,
  type HostEventDetail,
  type WorkerExitDetail,
  type PoolEventMap,
} from './pool.ts'
export { MapStream, type MapProgress } from './map.ts'
export { input, type Input, type StreamSource } from './input.ts'
export { context, type CallContext } from './context.ts'
export {
  RemoteCall,
  type ThenableCall,
  type CallOf,
  type CallArgs,
  type CallArg,
  type InputOf,
  type YieldOf,
  type ResultOf,
  type IsGenerator,
  type AnyFunction,
} from './call.ts'
export type { CallOptions, Limits } from './options.ts'
export type { HostOptions, KnownHostsPolicy } from './ssh/config.ts'
export type { CommandHost } from './transports/command.ts'
export type { LogEntry, WorkerCounters } from './session.ts'
export {
  FarpipeError,
  RemoteError,
  TransportError,
  type TransportFailure,
  type TransportErrorOptions,
  ProtocolError,
  SerializeError,
  TimeoutError,
  CancelError,
  HostKeyError,
  MapError,
  type FarpipeErrorCode,
  type FarpipeErrorOptions,
  type RemoteErrorOrigin,
} from './errors.ts'

// For transport authors.
export type { Transport, TransportEvents } from './transports/transport.ts'
export type { Channel, ChannelEvents } from './link.ts'
export { LocalTransport, type LocalOptions } from './transports/local.ts'
export { MemoryTransport, type MemoryOptions } from './transports/memory.ts'
export { SshTransport, type SshTransportOptions } from './transports/ssh.ts'
export { CommandTransport, type CommandTransportOptions } from './transports/command.ts'
export type { ResolvedHost } from './ssh/config.ts'
