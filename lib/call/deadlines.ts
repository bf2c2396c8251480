/**
 * A call's deadlines: its `timeout`, its `idleTimeout`, and its `signal`.
 * Each fails the call from this side when it runs out (the call then tells
 * the worker to stop); all are cleared when the call settles.
 *
 * @module
 */
import { TimeoutError } from '../errors.ts'
import type { ResolvedCallOptions } from '../options.ts'

/** What the deadlines need from their call. */
export interface DeadlineOwner {
  /** The function's name, for messages. */
  readonly label: string
  /** True once the call frame is sent and until the outcome is decided. */
  readonly running: boolean
  /** True once the outcome is decided. */
  readonly settled: boolean
  /**
   * True while this side holds the call up (the consumer has not made room,
   * or a local source has not used the credit it has): not remote silence.
   */
  waitingHere(): boolean
  /** Fails the call from this side (`drop`: items not yet read are discarded). */
  fail(error: unknown, drop?: boolean): void
}

/** The timers and the abort listener of one call. */
export class Deadlines {
  private timer: NodeJS.Timeout | undefined
  private idleTimer: NodeJS.Timeout | undefined
  private lastActivity = 0
  private abortListener: (() => void) | undefined

  constructor(
    private readonly owner: DeadlineOwner,
    private readonly options: Pick<ResolvedCallOptions, 'signal' | 'timeout' | 'idleTimeout'>,
  ) {}

  /** Starts the clocks; false when the signal had aborted already (the call failed with its reason). */
  start(): boolean {
    const { signal, timeout, idleTimeout } = this.options
    if (signal?.aborted) {
      this.owner.fail(signal.reason, true)
      return false
    }
    if (signal) {
      this.abortListener = () => this.owner.fail(signal.reason, true)
      signal.addEventListener('abort', this.abortListener, { once: true })
    }
    this.activity()
    if (timeout !== undefined) this.timer = setTimeout(() => this.owner.fail(new TimeoutError(`${this.owner.label} did not finish within ${timeout} ms`)), timeout)
    if (idleTimeout !== undefined) this.watchIdle(idleTimeout)
    return true
  }

  /** Something moved on the wire for this call (an item or a credit, either way). */
  activity(): void {
    // Only idleTimeout reads it: a clock read per item sent or received is not free.
    if (this.options.idleTimeout !== undefined) this.lastActivity = performance.now()
  }

  /** The call settled: every clock stops. */
  clear(): void {
    clearTimeout(this.timer)
    clearTimeout(this.idleTimer)
    if (this.abortListener) this.options.signal?.removeEventListener('abort', this.abortListener)
  }

  private watchIdle(ms: number): void {
    const check = () => {
      if (this.owner.settled) return
      if (this.owner.running && this.owner.waitingHere()) this.activity()
      const idle = performance.now() - this.lastActivity
      if (idle >= ms) this.owner.fail(new TimeoutError(`${this.owner.label} saw nothing move in either direction for ${ms} ms while ready for more`))
      else this.idleTimer = setTimeout(check, Math.max(1, Math.min(ms - idle, ms / 4)))
    }
    this.idleTimer = setTimeout(check, Math.max(1, ms / 4))
  }
}
