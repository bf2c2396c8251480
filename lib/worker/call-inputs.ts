/**
 * The receiving ends of the streams the caller sends to one call on the
 * worker: its streamed arguments (declared in the call header) and the
 * streams nested in the values it sends (numbered above the ones seen
 * before). Each is a queue the function reads as a ReadableStream, which
 * grants the caller credit as it is read. Frames for a stream this side let
 * go are dropped, and the streams named in their items are cancelled.
 *
 * @module
 */
import { readItems, streamsInItems } from '../codec/items.ts'
import { ProtocolError } from '../errors.ts'
import { NestedBudget, nestedInitial, type Credit } from '../flow.ts'
import { openReceiver, WORKER_STREAMS } from '../nested.ts'
import type { ItemQueue, NestedRef } from '../queue.ts'
import { Kind } from '../wire/frame.ts'
import { payloads, type CallHeader } from '../wire/payloads.ts'
import type { CallRuntime } from './call-runtime.ts'

/** The caller's streams of one call running on this worker. */
export class CallInputs {
  /** Receiving ends of the caller's streams: streamed arguments, and streams nested in values it sent. */
  private readonly queues = new Map<number, ItemQueue<unknown>>()
  private readonly marks = new Map<number, { items: number; bytes: number }>()
  /** The highest id of a caller's stream seen so far (they only grow). */
  private highest = 0
  /** First windows of the caller's streams nested in values it sent (see {@link NestedBudget}): the caller keeps the same. */
  private readonly budget: NestedBudget
  /** Caller's streams this side stopped (cancelled, or dropped unread): their first windows come back with the caller's answer, an end (see Receivers.close). */
  private readonly closing = new Set<number>()

  constructor(
    private readonly rt: Pick<CallRuntime, 'send'>,
    private readonly callId: number,
    streams: CallHeader['streams'],
    /** The marks of nested streams (see RunningCall's `nestedMarks`). */
    private readonly nestedMarks: { items: number; bytes: number },
    /** Called when a stream ends, fails or is cancelled: the call may be done. */
    private readonly checkDone: () => void,
  ) {
    for (const s of streams) {
      this.marks.set(s.id, { items: s.items, bytes: s.bytes })
      this.highest = Math.max(this.highest, s.id)
    }
    this.budget = new NestedBudget(nestedMarks)
  }

  /** The caller's streams still open here. */
  get size(): number {
    return this.queues.size
  }

  /**
   * The ReadableStream the function receives for the caller's stream `id`:
   * a streamed argument (declared in the call header), or a stream nested
   * in an item of one (numbered above the ones seen before).
   */
  open(id: number): ReadableStream<unknown> {
    let marks = this.marks.get(id)
    let initial: Credit | undefined
    if (!marks && id > this.highest && id < WORKER_STREAMS) {
      marks = this.nestedMarks
      initial = this.budget.take(id, nestedInitial(marks))
    }
    if (!marks || this.queues.has(id)) throw new ProtocolError(`call ${this.callId}: unknown or repeated stream ${id}`)
    this.highest = Math.max(this.highest, id)
    const { queue, stream } = openReceiver(marks, initial ?? marks, {
      credit: (c) => this.rt.send(Kind.credit, this.callId, id, payloads.credit(c.items, c.bytes), true),
      cancel: () => {
        if (!this.queues.delete(id)) return
        this.closing.add(id)
        this.rt.send(Kind.cancel, this.callId, id)
        this.checkDone()
      },
    })
    this.queues.set(id, queue)
    return stream
  }

  /** Items of stream `stream` arrived: they join its queue, with the streams nested in them. */
  data(stream: number, payload: Uint8Array, owned: boolean): void {
    const q = this.queue(stream, 'data')
    if (!q) {
      streamsInItems(payload, (id) => this.drop(id))
      return
    }
    const nested: NestedRef[] = []
    const fromId = (id: number, item: number) => {
      const s = this.open(id)
      nested.push({ index: item, cancel: () => void s.cancel().catch(() => {}) })
      return s
    }
    if (q.closed) {
      // Dropped unread (the function stopped reading): streams inside are let go.
      streamsInItems(payload, (id) => this.drop(id))
      return
    }
    const items = readItems(payload, owned, fromId)
    q.push(items, payload.byteLength, nested.length > 0 ? nested : undefined)
  }

  /** Stream `stream` ended. */
  end(stream: number): void {
    const q = this.queue(stream, 'end')
    if (!q) return this.closed(stream)
    q.end()
    this.queues.delete(stream)
    this.budget.give(stream)
    this.checkDone()
  }

  /** Stream `stream` failed with `error`. */
  error(stream: number, error: unknown): void {
    const q = this.queue(stream, 'error')
    if (!q) return this.closed(stream)
    q.fail(error)
    this.queues.delete(stream)
    this.budget.give(stream)
    this.checkDone()
  }

  /** The end or error of a caller's stream this side stopped: the caller has let it go, and its first window comes back. */
  private closed(stream: number): void {
    if (this.closing.delete(stream)) this.budget.give(stream)
  }

  /**
   * A stream named in an item dropped unread: the caller is told to stop
   * feeding it. Its first window is taken all the same (the caller took it
   * when it named the stream) and comes back with the caller's answer.
   */
  private drop(id: number): undefined {
    if (id <= this.highest || id >= WORKER_STREAMS) throw new ProtocolError(`call ${this.callId}: unknown or repeated stream ${id}`)
    this.highest = id
    this.budget.take(id, nestedInitial(this.nestedMarks))
    this.closing.add(id)
    this.rt.send(Kind.cancel, this.callId, id)
    return undefined
  }

  /**
   * The queue of the caller's stream `stream`, or undefined for one this side
   * already let go (its frames may have crossed the cancel). A stream the call
   * never had is a protocol error.
   */
  private queue(stream: number, kind: string): ItemQueue<unknown> | undefined {
    const q = this.queues.get(stream)
    if (!q && (stream === 0 || stream > this.highest || stream >= WORKER_STREAMS)) {
      throw new ProtocolError(`the caller sent a ${kind} frame for stream ${stream} of call ${this.callId}, which has no such streamed argument`)
    }
    return q
  }

  /**
   * Lets the caller's streams go: their queues fail (items not read are
   * dropped). With `tell`, the caller is told to stop feeding each one that
   * had not ended.
   */
  release(reason: unknown, tell: boolean): void {
    for (const [id, q] of this.queues) {
      q.fail(reason, true)
      if (tell) this.rt.send(Kind.cancel, this.callId, id)
    }
    this.queues.clear()
  }
}
