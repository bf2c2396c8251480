/**
 * `context()`: what a remote function knows about the call it is running in.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks'

/** What a running remote function can learn about its call. */
export interface CallContext {
  /** Aborted when the caller cancels the call, breaks out of it, times out, or aborts its signal. */
  readonly signal: AbortSignal
  /** The host the call runs on, as the pool names it (`local` for the embedded pool). */
  readonly host: string
  /** The index of this worker process on its host, from 0. */
  readonly worker: number
  /** How many worker processes the host runs. */
  readonly workers: number
  /** The call's id, unique within its worker process. */
  readonly callId: number
}

const storage = new AsyncLocalStorage<CallContext>()

/** The context of a function called directly, not through a pool: never aborted. */
const direct: CallContext = Object.freeze({
  signal: new AbortController().signal,
  host: 'local',
  worker: 0,
  workers: 1,
  callId: 0,
})

/**
 * The context of the remote call running now. Inside a function started by
 * `Pool.run` it describes that call; in a function called directly (not
 * through a pool) it returns a context whose signal never aborts, so the
 * same code runs both ways.
 *
 * ```ts
 * export const count = remote(async function* () {
 *   const { signal } = context()
 *   for (let i = 0; !signal.aborted; i++) yield i
 * })
 * ```
 */
export function context(): CallContext {
  return storage.getStore() ?? direct
}

/** Calls running inside {@link runInContext} now. */
let inContext = 0

/**
 * Runs `fn` with `ctx` as what {@link context} returns (for the worker
 * runtime), until the promise it returns settles.
 *
 * Once entered, AsyncLocalStorage keeps promise hooks on in the whole
 * process, and every `await` of every call pays for them (an async
 * generator yields about a third as fast). So when the last call that
 * entered it ends, it is left (`disable()`, about a microsecond to enter
 * again), and calls of functions that never ask for their context, which
 * the runtime starts outside it, run at full speed. Work a call leaves
 * running after it ended sees the direct context.
 */
export async function runInContext<T>(ctx: CallContext, fn: () => Promise<T>): Promise<T> {
  inContext++
  try {
    return await storage.run(ctx, fn)
  } finally {
    if (--inContext === 0) storage.disable()
  }
}
