/**
 * What a call running on the worker needs from the runtime it runs in:
 * sending frames and items in the runtime's batch, a turn of the event loop
 * for a producer that never waits, its function from a bundle, and being
 * forgotten once it has finished. `WorkerRuntime` (runtime.ts) implements
 * it; the call depends only on this, so the runtime can import the call
 * without a circle.
 *
 * @module
 */
import type { StreamHooks } from '../codec/values.ts'

/** The runtime as a running call sees it. */
export interface CallRuntime {
  /** Appends a whole frame to the batch (`urgent`: and writes the batch out now); see `Link.send`. */
  send(kind: number, call: number, stream: number, payload?: Uint8Array, urgent?: boolean): void
  /** Appends one item to the data frame of (`call`, `stream`) and returns the bytes it counts for; see `Link.sendItem`. */
  sendItem(call: number, stream: number, value: unknown, path: () => string, hooks?: StreamHooks): number
  /** Writes the batch out now. */
  flush(): void
  /** Lets the event loop turn once, for a producer that never waits for anything; see `Link.breathe`. */
  breathe(): Promise<void>
  /** The largest payload a frame may carry. */
  readonly maxPayload: number
  /** Bundles whose calls run without AsyncLocalStorage (see bundle.ts `needsContext`). */
  readonly contextFree: ReadonlySet<string>
  /** The remote function `name` of bundle `hash`, loading the bundle if needed. */
  load(hash: string, name: string, moduleName: string): Promise<Function>
  /** Forgets a finished call. */
  ended(id: number): void
}
