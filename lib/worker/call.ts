/**
 * One call running on a worker: it loads and runs the function (in its
 * context when it may ask for one), pumps what a generator yields within the
 * caller's credit, sends one terminal frame (its return value, its error,
 * or `cancelled`), and is forgotten once the streams nested in what it
 * yielded or returned have ended too. The streams the caller sends to it are
 * its inputs (call-inputs.ts); what it sends, and the streams nested in
 * that, go through its senders (call-senders.ts).
 *
 * @module
 */
import { valueBytes } from '../codec/values.ts'
import { runInContext, type CallContext } from '../context.ts'
import { CancelError, SerializeError } from '../errors.ts'
import { CreditWindow } from '../flow.ts'
import { HEADER_BYTES, Kind } from '../wire/frame.ts'
import { payloads, type CallerHello, type CallHeader } from '../wire/payloads.ts'
import { CallInputs } from './call-inputs.ts'
import type { CallRuntime } from './call-runtime.ts'
import { CallSenders } from './call-senders.ts'
import { errorPayload } from './error-payload.ts'

/**
 * How long (ms) a generator that never waits for anything runs before the
 * event loop gets a turn to read what the caller sent (a cancel, credit):
 * bounds how late a cancel is seen, at the cost of one turn of the loop
 * (a few microseconds) per slice.
 */
const SLICE_MS = 0.1

/** One call running on this worker. */
export class RunningCall {
  private readonly abort = new AbortController()
  private readonly window: CreditWindow
  /** The streams the caller sends to it: streamed arguments, and streams nested in values it sent. */
  readonly inputs: CallInputs
  /** What it sends: its items, and the streams nested in what the function yields or returns. */
  readonly senders: CallSenders
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

  constructor(private readonly rt: CallRuntime, readonly id: number, private readonly header: CallHeader, hello: CallerHello) {
    this.window = new CreditWindow(header.out)
    this.inputs = new CallInputs(rt, id, header.streams, this.nestedMarks, () => this.checkDone())
    this.ctx = Object.freeze({ signal: this.abort.signal, host: hello.host, worker: hello.worker, workers: hello.workers, callId: id })
    this.senders = new CallSenders(rt, id, this.nestedMarks, () => this.checkDone())
  }

  /** The marks of nested streams: the caller's, or (from an older header) those of the output. */
  private get nestedMarks(): { items: number; bytes: number } {
    return this.header.nested ?? this.header.out
  }

  /** The caller granted credit: for the output (stream 0), or for a nested stream this side sends. */
  credit(stream: number, c: { items: number; bytes: number }): void {
    if (stream === 0) {
      this.window.add(c)
      this.wake()
      return
    }
    this.senders.credit(stream, c)
  }

  /** The caller cancelled the call: its signal aborts, its inputs are let go, and a generator stops at its next yield. */
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
    this.senders.stopAll(reason)
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
        bytes = this.senders.sendItem(0, r.value, path)
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
      payload = payloads.end(streamed, valueBytes(value, 'return', this.senders.hooks))
      if (payload.byteLength > this.rt.maxPayload) {
        throw new SerializeError(`return: value of ${payload.byteLength} bytes exceeds maxFrameBytes ${this.rt.maxPayload + HEADER_BYTES}; yield it in parts instead`, 'return')
      }
    } catch (err) {
      this.senders.abandon(err)
      return this.fail(err, true)
    }
    this.succeeded = true
    this.terminal(Kind.end, payload)
    this.senders.start(() => 'return', value)
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
    else if (this.senders.idle) this.inputs.release(new CancelError('the call has finished'), true)
    this.rt.send(kind, this.id, 0, payload)
    this.checkDone()
  }

  /** Once the call has ended and its nested streams too, it is forgotten. */
  private checkDone(): void {
    if (!this.done || this.forgotten || !this.senders.idle) return
    // The streams that could have been made from the inputs have ended: nothing will read them now.
    if (this.inputs.size > 0) this.inputs.release(new CancelError('the call has finished'), this.succeeded)
    this.forgotten = true
    this.rt.ended(this.id)
    this.senders.cleanedUp().then(() => this.settle())
  }
}
