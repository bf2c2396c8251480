/**
 * What one call on the worker sends: the items of its output and of the
 * streams nested in what it yields or returns (a file's body in an item),
 * and those nested streams themselves, each pumped from its source within
 * the credit the caller grants it (see lib/nested.ts and lib/pump.ts).
 *
 * @module
 */
import type { StreamHooks } from '../codec/values.ts'
import { CancelError, ProtocolError } from '../errors.ts'
import { NestedBudget, nestedInitial, type Credit } from '../flow.ts'
import { isStreamSource } from '../input.ts'
import { LAST_STREAM, WORKER_STREAMS } from '../nested.ts'
import { checkUnsent, PendingPumps, StreamPump, type PumpOwner } from '../pump.ts'
import { Kind } from '../wire/frame.ts'
import type { CallRuntime } from './call-runtime.ts'
import { errorPayload } from './error-payload.ts'

/** The sending side of one call running on this worker. */
export class CallSenders implements PumpOwner {
  /** Sending ends of the streams nested in what the function yields or returns, while they run. */
  private readonly senders = new Map<number, StreamPump>()
  private nextSender = WORKER_STREAMS
  /** Senders numbered by the value being encoded: started once it is sent, let go if it cannot be. */
  private readonly pending = new PendingPumps()
  /** Every source this call has sent as a stream: each may be sent once. */
  private readonly sentSources = new WeakSet<object>()
  /** What the senders' sources still have to do after a stop (their cleanup), awaited before the call counts as settled. */
  private readonly cleanups: Promise<void>[] = []
  /** Hooks that number the streams nested in a value this call sends. */
  readonly hooks: StreamHooks = { toId: (v) => this.openSender(v) }
  /** First windows of the streams this side sends nested in what it yields or returns (see {@link NestedBudget}). */
  private readonly senderBudget: NestedBudget

  constructor(
    private readonly rt: Pick<CallRuntime, 'send' | 'sendItem' | 'maxPayload'>,
    private readonly callId: number,
    /** The marks of nested streams (see RunningCall's `nestedMarks`). */
    private readonly nestedMarks: { items: number; bytes: number },
    /** Called when a nested stream ends, fails or is stopped: the call may be done. */
    private readonly checkDone: () => void,
  ) {
    this.senderBudget = new NestedBudget(nestedMarks)
  }

  /** True when no nested stream runs, and none waits for the value that names it to be sent. */
  get idle(): boolean {
    return this.senders.size === 0 && this.pending.size === 0
  }

  /** Resolves once the sources of the streams stopped so far have cleaned up. */
  cleanedUp(): Promise<unknown> {
    return Promise.allSettled(this.cleanups)
  }

  /** The caller granted credit for the nested stream `stream`. */
  credit(stream: number, c: Credit): void {
    this.sender(stream, 'credit')?.credit(c)
  }

  /** The caller cancelled the nested stream `stream`: its source's `cancel()` runs, with the caller's reason. */
  cancel(stream: number, reason: unknown): void {
    const pump = this.sender(stream, 'cancel')
    if (!pump) return
    // The answer (its first window comes back to this side's budget now, to the caller's when this arrives: see NestedBudget).
    this.rt.send(Kind.end, this.callId, stream)
    this.stopSender(pump, reason ?? new CancelError(`the caller cancelled the stream at ${pump.path()}`))
  }

  /** The session is gone: every nested stream stops. */
  stopAll(reason: unknown): void {
    for (const pump of [...this.senders.values()]) this.stopSender(pump, reason)
  }

  /** A running sender, or undefined for one that ended already; an id never opened is a protocol error. */
  private sender(stream: number, kind: string): StreamPump | undefined {
    const pump = this.senders.get(stream)
    if (!pump && (stream < WORKER_STREAMS || stream >= this.nextSender)) {
      throw new ProtocolError(`the caller sent a ${kind} frame for stream ${stream} of call ${this.callId}, which this side never opened`)
    }
    return pump
  }

  /**
   * Writes one item of stream `stream` (the output, or a nested stream),
   * numbering the streams inside it; they start once the item is written
   * (their frames must follow it), and are let go if it cannot be.
   */
  sendItem(stream: number, value: unknown, path: () => string): number {
    let bytes: number
    try {
      bytes = this.rt.sendItem(this.callId, stream, value, path, this.hooks)
    } catch (err) {
      // The streams numbered in it were never named: their first windows come back.
      this.abandon(err)
      throw err
    }
    this.start(path, value)
    return bytes
  }

  /** A value encoded with {@link hooks} was sent: the streams numbered in it start. */
  start(path: () => string, value: unknown): void {
    this.pending.start(path, value, this.senders)
  }

  /** A value encoded with {@link hooks} cannot be sent: the streams numbered in it are let go, and their first windows come back. */
  abandon(err: unknown): void {
    this.pending.abandon(err, (pump) => this.senderBudget.give(pump.id))
  }

  /** Numbers a stream found in a value being sent (the value's encoding calls this). */
  private openSender(v: unknown): number | undefined {
    if (!isStreamSource(v)) return undefined
    checkUnsent(v, this.sentSources)
    if (this.nextSender > LAST_STREAM) throw new RangeError(`a call may send at most ${LAST_STREAM - WORKER_STREAMS + 1} nested streams`)
    const id = this.nextSender++
    const marks = this.nestedMarks
    const pump = new StreamPump(this, id, v, { initial: this.senderBudget.take(id, nestedInitial(marks)), max: marks }, () => `stream ${id}`)
    this.pending.add(pump)
    return id
  }

  pumpEnded(pump: StreamPump): void {
    if (!this.senders.delete(pump.id)) return
    this.senderBudget.give(pump.id)
    this.rt.send(Kind.end, this.callId, pump.id)
    this.checkDone()
  }

  pumpFailed(pump: StreamPump, error: unknown): void {
    if (!this.senders.delete(pump.id)) return
    this.senderBudget.give(pump.id)
    this.rt.send(Kind.error, this.callId, pump.id, errorPayload(error, pump.sent, false, this.rt.maxPayload))
    this.checkDone()
  }

  pumpBroke(pump: StreamPump, error: unknown): void {
    if (!this.senders.has(pump.id)) return
    this.rt.send(Kind.error, this.callId, pump.id, errorPayload(error, pump.sent, true, this.rt.maxPayload))
    this.stopSender(pump, error)
  }

  private stopSender(pump: StreamPump, reason: unknown): void {
    if (!this.senders.delete(pump.id)) return
    this.senderBudget.give(pump.id)
    pump.stop(reason)
    this.cleanups.push(pump.done)
    this.checkDone()
  }
}
