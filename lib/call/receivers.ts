/**
 * The streams a worker nests in what a call yields or returns (a file's
 * body in an item), as the caller receives them: each a ReadableStream with
 * a queue and credit of its own, opened when a value names it, fed by the
 * frames of its id, closed when it ends, fails or its reader cancels it.
 * Their first windows share the call's window (see NestedBudget).
 *
 * @module
 */
import { readItems, streamsInItems } from '../codec/items.ts'
import { ProtocolError } from '../errors.ts'
import { NestedBudget, nestedInitial, type Watermarks } from '../flow.ts'
import { openReceiver, WORKER_STREAMS } from '../nested.ts'
import type { ItemQueue, NestedRef } from '../queue.ts'
import { Kind, kindName, type Frame } from '../wire/frame.ts'
import { payloads } from '../wire/payloads.ts'

/** What the receivers need from their call. */
export interface ReceiverOwner {
  /** `host/worker` of the call's session, for messages. */
  readonly where: string
  /** The call's id, for messages. */
  readonly callId: number
  /** Sends a frame about one of the call's streams (`urgent`: written out at once). */
  sendFrame(kind: number, stream: number, payload?: Uint8Array, urgent?: boolean): void
  /** A cancel's reason as a frame payload, when it can be sent. */
  reasonBytes(reason: unknown): Buffer | undefined
  /** Holds the process open while a reader waits (see CallCore.keepAlive). */
  keepAlive(until: Promise<unknown>): void
  /** The error an error frame about one of the streams gives its reader. */
  streamError(f: Frame): Error
  /** Counts items and bytes received. */
  countIn(items: number, bytes: number): void
  /** Something moved (for idleTimeout). */
  activity(): void
  /** A stream closed: the call may be forgotten once none is open. */
  checkForget(): void
}

/** The open streams of one call that the worker sends, by id. */
export class Receivers {
  private readonly queues = new Map<number, ItemQueue<unknown>>()
  /**
   * Streams this side stopped (cancelled, or dropped unread) whose end or
   * error has not arrived yet: the worker answers a cancel with an end, and
   * their first windows come back only then (see {@link NestedBudget}).
   */
  private readonly closing = new Set<number>()
  /** The highest id of a worker's stream seen so far (they only grow). */
  private highest = WORKER_STREAMS - 1
  /** First windows of these streams (see {@link NestedBudget}). */
  private readonly budget: NestedBudget

  constructor(
    private readonly owner: ReceiverOwner,
    private readonly marks: Watermarks,
  ) {
    this.budget = new NestedBudget(marks)
  }

  /** Streams open now. */
  get size(): number {
    return this.queues.size
  }

  /**
   * The reader of the worker's stream `id`, named in a value that just
   * arrived (in item `item` of a batch, whose refs go to `refs`). Ids only
   * grow: one seen before, or not the worker's, is a protocol error.
   */
  open(id: number, refs: NestedRef[], item: number): ReadableStream<unknown> {
    this.claim(id)
    const initial = this.budget.take(id, nestedInitial(this.marks))
    const { queue, stream } = openReceiver(this.marks, initial, {
      credit: (c) => this.owner.sendFrame(Kind.credit, id, payloads.credit(c.items, c.bytes), true),
      cancel: (reason) => {
        if (!this.queues.delete(id)) return
        this.closing.add(id)
        this.owner.sendFrame(Kind.cancel, id, this.owner.reasonBytes(reason))
        this.owner.checkForget()
      },
      waiting: (until) => this.owner.keepAlive(until),
    })
    this.queues.set(id, queue)
    refs.push({ index: item, cancel: () => void queue.cancel('the item that carried this stream was dropped unread') })
    return stream
  }

  /**
   * A stream named in a value that is dropped unread: the worker is told to
   * stop it. Its first window is taken all the same (the worker took it when
   * it named the stream) and comes back with the worker's answer.
   */
  drop(id: number): undefined {
    this.claim(id)
    this.budget.take(id, nestedInitial(this.marks))
    this.closing.add(id)
    this.owner.sendFrame(Kind.cancel, id)
    return undefined
  }

  /** A frame about one of the worker's streams. */
  frame(f: Frame): void {
    // A body streaming is the call moving, though nothing else does (idleTimeout).
    this.owner.activity()
    const q = this.queues.get(f.stream)
    if (!q) {
      // Cancelled or ended here already: its frames may have crossed the cancel. One never named is a lie.
      if (f.stream > this.highest) throw new ProtocolError(`worker ${this.owner.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.owner.callId}, which it never named`)
      if (f.kind === Kind.data) streamsInItems(f.payload, (id) => this.drop(id))
      // The end that answers a cancel (or an end or error that crossed it): the worker has let the stream go.
      else if ((f.kind === Kind.end || f.kind === Kind.error) && this.closing.delete(f.stream)) this.budget.give(f.stream)
      return
    }
    switch (f.kind) {
      case Kind.data: {
        const nested: NestedRef[] = []
        const items = readItems(f.payload, f.owned, (id, item) => this.open(id, nested, item))
        q.push(items, f.payload.byteLength, nested.length > 0 ? nested : undefined)
        this.owner.countIn(items.length, f.payload.byteLength)
        return
      }
      case Kind.end:
        q.end()
        break
      case Kind.error:
        q.fail(this.owner.streamError(f))
        break
      default:
        throw new ProtocolError(`worker ${this.owner.where} sent a ${kindName(f.kind)} frame for its own stream ${f.stream} of call ${this.owner.callId}`)
    }
    this.close(f.stream)
    this.owner.checkForget()
  }

  /** The worker is gone: every open stream fails with `error`. */
  failAll(error: unknown): void {
    for (const q of this.queues.values()) q.fail(error)
    this.queues.clear()
    this.closing.clear()
  }

  /**
   * Forgets a stream whose end or error arrived, giving its first window
   * back. Not when this side cancels it: the worker gives the window back
   * when the cancel reaches it, and may name more streams meanwhile, so this
   * side waits for its answer (an end), which comes after those names. Given
   * back at once, the worker's budget would be smaller than this one at the
   * names in between, and a first window larger here than there makes the
   * two disagree at every name after (a hang, or a ProtocolError).
   */
  private close(id: number): boolean {
    if (!this.queues.delete(id)) return false
    this.budget.give(id)
    return true
  }

  /** Takes `id` as the next stream of the worker's: ids only grow, and one seen before, or not the worker's, is a protocol error. */
  private claim(id: number): void {
    if (id < WORKER_STREAMS || id <= this.highest) {
      throw new ProtocolError(`worker ${this.owner.where} named stream ${id} in a value of call ${this.owner.callId}, which is not a new stream of the worker's`)
    }
    this.highest = id
  }
}
