/**
 * One call running on a worker: it runs the function in its context, feeds
 * the streams the caller sends to it, pumps what a generator yields within
 * the caller's credit, and sends the streams nested in what it yields or
 * returns (see lib/nested.ts).
 *
 * @module
 */
import { valueBytes, type StreamHooks } from '../codec.ts'
import { runInContext, type CallContext } from '../context.ts'
import { CancelError, ProtocolError, SerializeError } from '../errors.ts'
import { CreditWindow, NestedBudget, nestedInitial } from '../flow.ts'
import { isStreamSource } from '../input.ts'
import { LAST_STREAM, WORKER_STREAMS } from '../nested.ts'
import { checkUnsent, PendingPumps, StreamPump, type PumpOwner } from '../pump.ts'
import { HEADER_BYTES, Kind } from '../wire/frame.ts'
import { payloads, type CallerHello, type CallHeader } from '../wire/payloads.ts'
import { CallInputs } from './call-inputs.ts'
import type { CallRuntime } from './call-runtime.ts'
import { errorPayload } from './error-payload.ts'

/**
 * How long (ms) a generator that never waits for anything runs before the
 * event loop gets a turn to read what the caller sent (a cancel, credit):
 * bounds how late a cancel is seen, at the cost of one turn of the loop
 * (a few microseconds) per slice.
 */
const SLICE_MS = 0.1

/** One call running on this worker. */
export class RunningCall implements PumpOwner {
  private readonly abort = new AbortController()
  private readonly window: CreditWindow
  /** The streams the caller sends to it: streamed arguments, and streams nested in values it sent. */
  readonly inputs: CallInputs
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
  private readonly hooks: StreamHooks = { toId: (v) => this.openSender(v) }
  /** Wakes the generator's pump (lib/worker/call.ts `pump`), its one waiter, when credit or a cancel arrives. */
  private creditWake: (() => void) | undefined
  /** The caller cancelled (or the link closed): stop, run `finally`, answer `cancelled`. */
  private stopping = false
  /** A terminal frame went out. */
  private done = false
  /** The function returned normally: its inputs stay open while its nested streams run (they may be made from them). */
  private succeeded = false
  /** Items yielded so far. */
  private index = 0
  private settle!: () => void
  /** Resolves when the call has sent its terminal frame and its nested streams have ended. */
  readonly settled = new Promise<void>((r) => (this.settle = r))
  private forgotten = false
  private readonly ctx: CallContext
  /** First windows of the streams this side sends nested in what it yields or returns (see {@link NestedBudget}). */
  private readonly senderBudget: NestedBudget

  constructor(private readonly rt: CallRuntime, readonly id: number, private readonly header: CallHeader, hello: CallerHello) {
    this.window = new CreditWindow(header.out)
    this.inputs = new CallInputs(rt, id, header.streams, this.nestedMarks, () => this.checkDone())
    this.ctx = Object.freeze({ signal: this.abort.signal, host: hello.host, worker: hello.worker, workers: hello.workers, callId: id })
    this.senderBudget = new NestedBudget(this.nestedMarks)
  }

  /** The marks of nested streams: the caller's, or (from an older header) those of the output. */
  private get nestedMarks(): { items: number; bytes: number } {
    return this.header.nested ?? this.header.out
  }

  credit(stream: number, c: { items: number; bytes: number }): void {
    if (stream === 0) {
      this.window.add(c)
      this.wake()
      return
    }
    this.sender(stream, 'credit')?.credit(c)
  }

  /** The caller cancelled the nested stream `stream`: its source's `cancel()` runs, with the caller's reason. */
  cancelSender(stream: number, reason: unknown): void {
    const pump = this.sender(stream, 'cancel')
    if (!pump) return
    this.stopSender(pump, reason ?? new CancelError(`the caller cancelled the stream at ${pump.path()}`))
  }

  /** A running sender, or undefined for one that ended already; an id never opened is a protocol error. */
  private sender(stream: number, kind: string): StreamPump | undefined {
    const pump = this.senders.get(stream)
    if (!pump && (stream < WORKER_STREAMS || stream >= this.nextSender)) {
      throw new ProtocolError(`the caller sent a ${kind} frame for stream ${stream} of call ${this.id}, which this side never opened`)
    }
    return pump
  }

  cancel(reason: unknown): void {
    if (this.stopping || this.done) return
    this.stopping = true
    const err = reason instanceof CancelError ? reason : new CancelError('the call was cancelled by the caller', { cause: reason })
    this.abort.abort(err)
    this.inputs.release(err, false)
    this.wake()
  }

  /** The session is gone: the call stops, and so does every stream it has open either way. */
  close(reason: unknown): void {
    this.cancel(reason)
    this.inputs.release(reason, false)
    for (const pump of [...this.senders.values()]) this.stopSender(pump, reason)
    this.checkDone()
  }

  async run(args: unknown[]): Promise<void> {
    try {
      const fn = await this.rt.load(this.header.bundle, this.header.fn, this.header.module)
      if (this.stopping) return this.cancelled()
      const body = async () => {
        const ret = fn(...args)
        const tag = Object.prototype.toString.call(ret)
        if (tag === '[object AsyncGenerator]' || tag === '[object Generator]') {
          if (this.header.tell) this.rt.send(Kind.streams, this.id, 0)
          await this.pump(ret as AsyncGenerator<unknown, unknown> | Generator<unknown, unknown>, tag === '[object AsyncGenerator]')
        } else {
          const value = await ret
          if (this.stopping) this.cancelled()
          else this.end(value)
        }
      }
      // Entering AsyncLocalStorage turns on promise hooks, which slow every
      // await in the process: only calls that may ask for their context pay.
      await (this.rt.contextFree.has(this.header.bundle) ? body() : runInContext(this.ctx, body))
    } catch (err) {
      if (this.stopping) this.cancelled()
      else this.fail(err, false)
    }
  }

  private async pump(gen: AsyncGenerator<unknown, unknown> | Generator<unknown, unknown>, isAsync: boolean): Promise<void> {
    const path = () => `yield[${this.index}]`
    let turned = performance.now()
    /** When the clock was last read, and how many items go by before it is read again: one while items are slow, up to 32 while they are fast. */
    let readAt = turned
    let stride = 1
    let untilRead = 1
    for (;;) {
      if (this.stopping) return this.stop(gen)
      if (!this.window.open) {
        await new Promise<void>((r) => (this.creditWake = r))
        turned = readAt = performance.now()
        continue
      }
      // A producer that never waits for anything (a loop of yields, sync or
      // async) would keep the event loop from reading the caller's frames
      // until its credit ran out: a cancel would reach it thousands of items
      // late. Every SLICE_MS of producing, the loop turns once (the batch
      // stays open: see Link.breathe). The clock is read every item while
      // items take long to make (20 ms each: a cancel must not wait for 32 of
      // them), and every 32nd while they come fast (a read costs about as
      // much as a small item).
      if (--untilRead === 0) {
        const now = performance.now()
        // Enough items to fill about a quarter of a slice at the pace of the last ones.
        const each = (now - readAt) / stride
        stride = each > 0 ? Math.max(1, Math.min(32, Math.floor(SLICE_MS / 4 / each))) : 32
        untilRead = stride
        readAt = now
        if (now - turned >= SLICE_MS) {
          await this.rt.breathe()
          turned = readAt = performance.now()
          continue
        }
      }
      const r = (isAsync ? await gen.next() : gen.next()) as IteratorResult<unknown, unknown>
      if (this.stopping) return this.stop(gen)
      if (r.done) return this.end(r.value, true)
      let bytes: number
      try {
        bytes = this.sendItem(0, r.value, path)
      } catch (err) {
        // The value cannot be sent: the call fails, and the generator still gets to clean up.
        await Promise.resolve(gen.return(undefined)).catch(() => {})
        return this.fail(err, true)
      }
      this.window.spend(bytes)
      // The first item leaves at once: a function that yields and then
      // computes without returning to the event loop must not hold back its
      // first result (time to first item is time to first yield).
      if (this.index++ === 0) this.rt.flush()
    }
  }

  // -- nested streams this side sends -----------------------------------------

  /**
   * Writes one item of stream `stream` (the output, or a nested stream),
   * numbering the streams inside it; they start once the item is written
   * (their frames must follow it), and are let go if it cannot be.
   */
  sendItem(stream: number, value: unknown, path: () => string): number {
    let bytes: number
    try {
      bytes = this.rt.sendItem(this.id, stream, value, path, this.hooks)
    } catch (err) {
      // The streams numbered in it were never named: their first windows come back.
      this.pending.abandon(err, (pump) => this.senderBudget.give(pump.id))
      throw err
    }
    this.pending.start(path, value, this.senders)
    return bytes
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
    this.rt.send(Kind.end, this.id, pump.id)
    this.checkDone()
  }

  pumpFailed(pump: StreamPump, error: unknown): void {
    if (!this.senders.delete(pump.id)) return
    this.senderBudget.give(pump.id)
    this.rt.send(Kind.error, this.id, pump.id, errorPayload(error, pump.sent, false, this.rt.maxPayload))
    this.checkDone()
  }

  pumpBroke(pump: StreamPump, error: unknown): void {
    if (!this.senders.has(pump.id)) return
    this.rt.send(Kind.error, this.id, pump.id, errorPayload(error, pump.sent, true, this.rt.maxPayload))
    this.stopSender(pump, error)
  }

  private stopSender(pump: StreamPump, reason: unknown): void {
    if (!this.senders.delete(pump.id)) return
    this.senderBudget.give(pump.id)
    pump.stop(reason)
    this.cleanups.push(pump.done)
    this.checkDone()
  }

  // -- ending -----------------------------------------------------------------

  /** Cancelled at a yield: `return()` runs the generator's `finally` blocks. */
  private async stop(gen: AsyncGenerator<unknown, unknown> | Generator<unknown, unknown>): Promise<void> {
    try {
      await gen.return(undefined)
    } catch {
      // An error thrown by a finally block while cancelling has nobody left to receive it.
    }
    this.cancelled()
  }

  private wake(): void {
    const w = this.creditWake
    this.creditWake = undefined
    w?.()
  }

  private end(value: unknown, streamed = false): void {
    let payload: Buffer
    try {
      payload = payloads.end(streamed, valueBytes(value, 'return', this.hooks))
      if (payload.byteLength > this.rt.maxPayload) {
        throw new SerializeError(`return: value of ${payload.byteLength} bytes exceeds maxFrameBytes ${this.rt.maxPayload + HEADER_BYTES}; yield it in parts instead`, 'return')
      }
    } catch (err) {
      this.pending.abandon(err, (pump) => this.senderBudget.give(pump.id))
      return this.fail(err, true)
    }
    this.succeeded = true
    this.terminal(Kind.end, payload)
    this.pending.start(() => 'return', value, this.senders)
  }

  /** Sends the error frame. `runtime` marks farpipe's own failures (a value that cannot be sent). */
  fail(error: unknown, runtime: boolean): void {
    this.terminal(Kind.error, errorPayload(error, this.index, runtime, this.rt.maxPayload))
  }

  private cancelled(): void {
    this.terminal(Kind.cancelled)
  }

  private terminal(kind: number, payload?: Buffer): void {
    if (this.done) return
    this.done = true
    // A function that returned may have handed its inputs to the streams it
    // returned or yielded: they stay open while those run. Otherwise the
    // inputs are let go; the caller stops feeding them when it reads this
    // frame (an error or a cancel ends the whole call), or is told (after a
    // normal return, it may not).
    if (kind !== Kind.end) this.inputs.release(new CancelError('the call has finished'), false)
    else if (this.senders.size === 0 && this.pending.size === 0) this.inputs.release(new CancelError('the call has finished'), true)
    this.rt.send(kind, this.id, 0, payload)
    this.checkDone()
  }

  /** Once the call has ended and its nested streams too, it is forgotten. */
  private checkDone(): void {
    if (!this.done || this.forgotten || this.senders.size > 0 || this.pending.size > 0) return
    // The streams that could have been made from the inputs have ended: nothing will read them now.
    if (this.inputs.size > 0) this.inputs.release(new CancelError('the call has finished'), this.succeeded)
    this.forgotten = true
    this.rt.ended(this.id)
    Promise.allSettled(this.cleanups).then(() => this.settle())
  }
}
