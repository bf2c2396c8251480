/**
 * Flow control: credit windows, in items and in bytes, and when to flush a
 * batch. No I/O and no timers here; the clock is passed in, so the policy
 * can be tested step by step.
 *
 * The receiver of a stream owns a queue with a high-water mark. It grants
 * the sender credit for what fits (high-water mark minus what is queued
 * minus what is already granted) and grants more as its consumer takes
 * items. The sender sends only while it holds credit for at least one item
 * and one byte; byte credit may go negative by the last item sent (an item
 * larger than the whole window must still be able to pass), item credit
 * never. So the receiver holds at most `highWaterMark` items and
 * `highWaterBytes` plus one item's bytes.
 *
 * @module
 */
import { ProtocolError } from './errors.ts'

/** A credit grant: room for this many more items and bytes. */
export interface Credit {
  items: number
  bytes: number
}

/** High-water marks of a stream's receiving queue. */
export interface Watermarks {
  /** Items the receiver queues at most. */
  items: number
  /** Bytes the receiver queues at most (plus one item). */
  bytes: number
}

/**
 * The receiving side's book: what it queued, what it granted, and when
 * granting more is worth a frame.
 */
export class CreditLedger {
  readonly marks: Watermarks
  /** Items received and not yet taken by the consumer. */
  queuedItems = 0
  /** Bytes of those items. */
  queuedBytes = 0
  /** Granted and not yet received. */
  private owedItems: number
  private owedBytes: number

  /**
   * Starts with `initial` granted (the whole window unless said otherwise):
   * both sides agree on it when the stream opens. A stream nested in a
   * value starts with a small part of its window (see {@link nestedInitial}),
   * and gets the rest once its reader takes an item.
   */
  constructor(marks: Watermarks, initial: Credit = marks) {
    if (!(marks.items >= 1) || !(marks.bytes >= 1)) {
      throw new RangeError(`high-water marks must be at least 1 (items ${marks.items}, bytes ${marks.bytes})`)
    }
    this.marks = marks
    this.owedItems = Math.min(initial.items, marks.items)
    this.owedBytes = Math.min(initial.bytes, marks.bytes)
    this.initial = { items: this.owedItems, bytes: this.owedBytes }
  }

  /** True while the sender holds credit for at least one more item (granted, not yet used). */
  get owes(): boolean {
    return this.owedItems > 0 && this.owedBytes > 0
  }

  /** The credit the sender starts with (what this ledger was built owing). */
  readonly initial: Credit

  /**
   * Records items that arrived. More items than granted, or a frame sent
   * with no byte credit left, is a protocol violation: the sender ignored
   * flow control.
   */
  received(items: number, bytes: number): void {
    if (items > this.owedItems) {
      throw new ProtocolError(`sender sent ${items} items with credit for ${this.owedItems}`)
    }
    // The sender may send while it holds at least one byte of credit, and its
    // last item may overdraw; a frame that starts with no credit left ignored
    // flow control. So what is held stays within the window plus one frame.
    if (this.owedBytes <= 0) {
      throw new ProtocolError(`sender sent ${bytes} bytes with no byte credit left (${this.owedBytes} of a ${this.marks.bytes}-byte window)`)
    }
    this.owedItems -= items
    this.owedBytes -= bytes
    this.queuedItems += items
    this.queuedBytes += bytes
  }

  /** Records items the consumer took. Returns the credit to grant now, if any (see {@link grant}). */
  consumed(items: number, bytes: number): Credit | undefined {
    this.queuedItems -= items
    this.queuedBytes -= bytes
    return this.grant()
  }

  /**
   * The credit to grant now, if it is worth a frame: half the item window
   * is free, or the sender is short of bytes (owes less than half the byte
   * window) and half of it is free. Granting every freed item one by one
   * would cost a frame per item both ways.
   */
  grant(): Credit | undefined {
    const roomItems = this.marks.items - this.queuedItems - this.owedItems
    const roomBytes = Math.floor(this.marks.bytes - this.queuedBytes - this.owedBytes)
    if (roomItems < 1 || roomBytes < 1) return undefined
    const itemsWorth = roomItems * 2 >= this.marks.items
    const bytesWorth = roomBytes * 2 >= this.marks.bytes && this.owedBytes * 2 < this.marks.bytes
    if (!itemsWorth && !bytesWorth) return undefined
    this.owedItems += roomItems
    this.owedBytes += roomBytes
    return { items: roomItems, bytes: roomBytes }
  }
}

/** Bytes a stream nested in a value may send before its reader takes anything. */
export const NESTED_INITIAL_BYTES = 64 * 1024

/**
 * Items a stream nested in a value may send before its reader takes
 * anything: a body's first chunk or two (a chunk of a file is one item), not
 * a window of rows nobody asked for.
 */
export const NESTED_INITIAL_ITEMS = 32

/**
 * The credit a stream nested in a value (a file's body in a yielded item)
 * asks for to start with: a small part of its window, so that a small body
 * arrives with its item. Its reader's first read grants the rest. What it
 * gets comes out of its call's {@link NestedBudget}.
 */
export function nestedInitial(marks: Watermarks): Credit {
  return { items: Math.min(marks.items, NESTED_INITIAL_ITEMS), bytes: Math.min(marks.bytes, NESTED_INITIAL_BYTES) }
}

/**
 * What the first windows of a call's nested streams may add up to, in one
 * direction: the call's own window. Without it, each stream a peer names
 * adds a first window of its own, and a peer naming thousands of bodies
 * nobody reads would park thousands of windows (4,096 x 64 KiB).
 *
 * Both sides keep one and must agree on it at every name, to the item and
 * the byte: a stream's first window is taken when it is named (the sender
 * encodes, the receiver decodes the value that names it, or drops it
 * unread) and given back when its end or error crosses the channel (the
 * sender gives it back when it sends that frame, the receiver when it reads
 * it). Those frames travel in order with the values that name streams, so
 * both sides see the same budget at each name. A cancel is not such a
 * point: the sender learns of it a round trip after the receiver sent it,
 * and names streams meanwhile. So the sender answers a cancel with an end
 * (protocol 5), giving the window back as it sends it, and the receiver
 * gives it back when that answer (or an end or error that crossed the
 * cancel) arrives. Given back by the receiver at the cancel, a first window
 * larger on one side than on the other at a name in between would make the
 * budgets disagree at every name after: a stream the receiver thinks has
 * credit its sender does not (a reader that waits for ever) or the other
 * way round (a ProtocolError for a legitimate sender). A stream that gets
 * no first window sends nothing until its reader reads (which grants its
 * whole window).
 */
export class NestedBudget {
  private items: number
  private bytes: number
  /** What each open stream was given. */
  private readonly given = new Map<number, Credit>()

  constructor(marks: Watermarks) {
    this.items = marks.items
    this.bytes = marks.bytes
  }

  /** The first window of new stream `id`: `want`, or what is left of the budget (nothing, when it is spent). */
  take(id: number, want: Credit): Credit {
    if (this.items < 1 || this.bytes < 1) return { items: 0, bytes: 0 }
    const got = { items: Math.min(want.items, this.items), bytes: Math.min(want.bytes, this.bytes) }
    this.items -= got.items
    this.bytes -= got.bytes
    this.given.set(id, got)
    return got
  }

  /** Stream `id` ended, failed, was cancelled or was never named after all: what it was given comes back (once). */
  give(id: number): void {
    const got = this.given.get(id)
    if (!got) return
    this.given.delete(id)
    this.items += got.items
    this.bytes += got.bytes
  }
}

/**
 * The sending side's credit: what it may still send. It never holds more
 * than the receiver's window (`max`, the high-water marks the receiver
 * announced): a legitimate receiver grants only what fits, so credit
 * beyond it is a peer ignoring flow control, and taking it would make this
 * side read a whole source into memory.
 */
export class CreditWindow {
  items: number
  bytes: number

  constructor(initial: Credit, private readonly max: Watermarks = initial) {
    this.items = initial.items
    this.bytes = initial.bytes
  }

  /** True while at least one more item may be sent. */
  get open(): boolean {
    return this.items > 0 && this.bytes > 0
  }

  /** Adds a grant from the receiver; one that takes the credit beyond the receiver's window is a protocol error. */
  add(credit: Credit): void {
    this.items += credit.items
    this.bytes += credit.bytes
    if (this.items > this.max.items || this.bytes > this.max.bytes) {
      throw new ProtocolError(
        `the receiver granted credit for ${this.items} items and ${this.bytes} bytes, beyond the window it announced (${this.max.items} items, ${this.max.bytes} bytes)`,
      )
    }
  }

  /** Spends credit for one item of `bytes`. */
  spend(bytes: number): void {
    this.items -= 1
    this.bytes -= bytes
  }
}

/** When to write out a batch of frames. */
export interface FlushLimits {
  /**
   * Write at once when this many bytes are waiting. Large enough that bulk
   * bytes leave in writes of several 64 KiB items (an SSH channel cuts each
   * write into 32 KiB packets: a lone 64 KiB item plus its header would make
   * a third, nearly empty one).
   * @default 262144
   */
  maxBytes: number
  /**
   * Write at once when this many items are waiting, so the receiver starts
   * on a batch while the sender makes the next one (a batch as large as the
   * credit window would leave each side idle while the other works).
   * @default 256
   */
  maxItems: number
  /** Write at once when the oldest waiting byte is this old (ms), even if the producer never yields to the event loop. @default 2 */
  maxDelayMs: number
}

/** While additions come faster than this (ms since the last clock reading), the clock is read every {@link TIMED_EVERY} additions only. */
const FAST_SPAN_MS = 0.05

/** How many additions a fast producer makes per clock reading. */
const TIMED_EVERY = 8

/**
 * Decides when a batch leaves. Frames wait for the end of the current turn
 * of the event loop, so everything produced in one turn goes out in one
 * write; a batch that grows large, or a producer that computes for a long
 * time without yielding to the event loop, is written at once.
 */
export class FlushPolicy {
  private firstAt = -1
  private lastAt = -Infinity
  private items = 0
  /** Additions left before the clock is read again (see {@link added}). */
  private untimed = 0
  constructor(private readonly limits: FlushLimits, private readonly now: () => number) {}

  /**
   * Called after something was added to the batch; true when the batch
   * should be written now: it is large, it has waited `maxDelayMs`, or this
   * addition came `maxDelayMs` after the one before. A producer that slow
   * gains nothing from batching, and holding its item back would delay it
   * until the next one: time to first item must be time to first yield.
   *
   * Reading the clock costs about as much as encoding a small item (some
   * 45 ns on a VM), so while additions come fast (the last reading found
   * them less than {@link FAST_SPAN_MS} apart, all told) the clock is read
   * at every {@link TIMED_EVERY}th only: a producer that turns slow is seen
   * within that many items.
   */
  added(pendingBytes: number): boolean {
    if (pendingBytes >= this.limits.maxBytes || ++this.items >= this.limits.maxItems) return true
    if (this.untimed > 0) {
      this.untimed--
      return false
    }
    const t = this.now()
    const span = t - this.lastAt
    this.lastAt = t
    if (span >= this.limits.maxDelayMs) return true
    this.untimed = span < FAST_SPAN_MS ? TIMED_EVERY - 1 : 0
    if (this.firstAt < 0) {
      this.firstAt = t
      return false
    }
    return t - this.firstAt >= this.limits.maxDelayMs
  }

  /** Called when the batch was written. */
  flushed(): void {
    this.firstAt = -1
    this.items = 0
  }
}
