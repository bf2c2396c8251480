/**
 * How a call ends: its state (not yet sent, running, settled), its
 * `result`, the failure or cancel decided on this side (told to the worker,
 * whose confirmation is awaited within `cancelGrace`), the worker's final
 * frame, and the session forgetting the call once none of its streams is
 * open either way.
 *
 * @module
 */
import { valueBytes } from '../codec/values.ts'
import { CancelError } from '../errors.ts'
import type { ItemQueue } from '../queue.ts'
import type { Session, SessionCall } from '../session.ts'
import { Kind } from '../wire/frame.ts'

/** What settling needs from its call. */
export interface SettlingOwner {
  /** The function's name, for messages. */
  readonly label: string
  /** The call's session while it has one, and its id there. */
  readonly session: Session | undefined
  readonly callId: number
  /** The call as the session knows it (a lingering call's frames still reach it). */
  readonly call: SessionCall
  /** True while a stream of the call is open either way. */
  readonly openStreams: boolean
  /** The output queue: it ends or fails with the call. */
  readonly output: ItemQueue<unknown>
  /** The outcome is decided: the clocks stop, and unless the function returned (`success`), the streams this side sends stop. */
  decided(success: boolean): void
  /** The call settled before it was sent: it leaves the pool's queue and lets its arguments go. */
  withdraw(): void
}

const enum State {
  /** Not yet sent to a worker. */
  Starting,
  /** Sent; waiting for its outcome. */
  Running,
  /** The outcome is decided (result settled); the worker may still owe its final frame. */
  Settled,
}

/** A cancel's reason as a frame payload, if it can be sent (a cancel is sent without one otherwise). */
export function reasonBytes(reason: unknown): Buffer | undefined {
  if (reason === undefined) return undefined
  try {
    return valueBytes(reason, 'reason')
  } catch {
    return undefined
  }
}

/** The lifecycle of one call. */
export class Settling {
  readonly result: Promise<unknown>
  private resolveResult!: (v: unknown) => void
  private rejectResult!: (e: unknown) => void
  private state = State.Starting
  /** True once the worker's final frame (end, error, cancelled) arrived or can no longer come. */
  private final = false
  private finalResolve!: () => void
  /** Resolves once the worker's last frame for this call arrived, or never will. */
  readonly finalPromise: Promise<void>
  /** Runs out when the worker has not confirmed a cancel in time (see {@link fail}). */
  private graceTimer: NodeJS.Timeout | undefined
  /** True once the call ended with nested streams still open: the session routes their frames here until they end. */
  private lingering = false
  /** Resolves once the call frame is sent (or the call settled before it could be). */
  readonly started: Promise<void>
  private startedResolve!: () => void

  constructor(
    private readonly owner: SettlingOwner,
    private readonly cancelGrace: number,
  ) {
    this.result = new Promise((resolve, reject) => {
      this.resolveResult = resolve
      this.rejectResult = reject
    })
    // Reading only the stream must not leave an unhandled rejection behind.
    this.result.catch(() => {})
    this.finalPromise = new Promise((r) => (this.finalResolve = r))
    this.started = new Promise((r) => (this.startedResolve = r))
  }

  /** True once the call frame was sent (whatever happened since). */
  get sent(): boolean {
    return this.state !== State.Starting
  }

  /** True once the call frame was sent and until the outcome is decided. */
  get running(): boolean {
    return this.state === State.Running
  }

  /** True once the outcome is decided. */
  get settled(): boolean {
    return this.state === State.Settled
  }

  /** The call frame went out. */
  sentNow(): void {
    this.state = State.Running
    this.startedResolve()
  }

  /** The function returned `value`: the output ends after what is queued. */
  returned(value: unknown): boolean {
    if (!this.settle(true)) return false
    this.owner.output.end()
    this.resolveResult(value)
    return true
  }

  /** The function failed (its error frame arrived). */
  failed(error: unknown): void {
    if (!this.settle()) return
    this.owner.output.fail(error)
    this.rejectResult(error)
  }

  /** The worker confirmed a cancel: the finally blocks have run. */
  confirmedCancel(): void {
    if (!this.settle()) return
    const err = new CancelError(`${this.owner.label} was cancelled on its worker`)
    this.owner.output.fail(err, true)
    this.rejectResult(err)
  }

  /** Cancels the call; resolves when the worker confirms (its `finally` blocks have run). */
  cancel(reason?: unknown): Promise<void> {
    const err = reason instanceof CancelError ? reason : new CancelError(`${this.owner.label} was cancelled`, reason === undefined ? undefined : { cause: reason })
    // The worker is sent the caller's own reason, if any: encoding an error
    // formats its stack, which costs more than the rest of a cancel (a
    // `break` sends none, and the remote sees its own CancelError).
    this.fail(err, true, { sent: reason })
    return this.finalPromise
  }

  /**
   * Fails the call from this side (timeout, abort, a value that cannot be
   * sent, a lost worker): the result rejects, the stream errors, and the
   * worker is told to stop. With `drop`, items not yet read are discarded.
   * `reason.sent` is what the worker is told (the error, unless said otherwise).
   */
  fail(error: unknown, drop = false, reason?: { sent: unknown }): void {
    const wasRunning = this.state === State.Running
    if (!this.settle()) return
    const session = this.owner.session
    if (wasRunning && session && !(error instanceof CancelError)) session.counters.errors++
    this.owner.output.fail(error, drop)
    this.rejectResult(error)
    if (wasRunning && session && !this.final) {
      session.send(Kind.cancel, this.owner.callId, 0, reasonBytes(reason ? reason.sent : error))
      this.awaitConfirmation(session)
    } else {
      this.finished()
    }
  }

  /**
   * Bounds the wait for the worker's confirmation of a cancel. A remote
   * stuck between yields (awaiting something that never settles, or
   * computing) cannot reach its `finally` blocks; after the grace the call
   * is given up on this side, and its worker, which may still be running
   * it, is retired: it takes no new calls and is ended once its other calls
   * are done (the pool starts a fresh one in its place). Not while its
   * connection is down: the call is given up on this side all the same.
   */
  private awaitConfirmation(session: Session): void {
    if (this.graceTimer) return
    this.graceTimer = setTimeout(() => {
      this.graceTimer = undefined
      if (this.final) return
      const detached = session.detached
      this.finished()
      // The connection is down: the cancel waits to be sent again when the session resumes (the remote `finally`
      // runs then); the worker is not stuck for all anyone knows, so it is not replaced, and this side goes on.
      if (!detached) session.stuck(`${this.owner.label} (call ${this.owner.callId}) did not confirm its cancellation within ${this.cancelGrace} ms`)
    }, this.cancelGrace)
  }

  /**
   * Marks the outcome decided; false if it already was. The call's parts
   * stop what they do (see {@link SettlingOwner.decided}).
   */
  private settle(success = false): boolean {
    if (this.state === State.Settled) return false
    if (this.state === State.Starting) this.owner.withdraw()
    this.state = State.Settled
    this.startedResolve()
    this.owner.decided(success)
    if (!success) this.checkForget()
    return true
  }

  /**
   * The worker's last frame for this call arrived (or never will): release
   * the id. While streams of the call are open either way, the session
   * still routes their frames here (see {@link checkForget}).
   */
  finished(): void {
    if (this.final) return
    this.final = true
    clearTimeout(this.graceTimer)
    this.graceTimer = undefined
    this.lingering = this.owner.openStreams
    const session = this.owner.session
    if (session && this.owner.callId) session.release(this.owner.callId, this.lingering ? this.owner.call : undefined)
    this.finalResolve()
  }

  /** Once a call that ended has no stream open, the session forgets it. */
  checkForget(): void {
    if (!this.lingering || this.owner.openStreams) return
    this.lingering = false
    this.owner.session?.forget(this.owner.callId)
  }
}
