/**
 * Resumable sessions: what each end of a link counts and keeps so that a
 * session outlives the channel it runs on, with nothing lost and nothing
 * twice.
 *
 * Once both hellos are exchanged, each side counts the bytes of the frames
 * it sends and of the complete frames it receives (every frame but `hello`,
 * `resume` and `resumed`, which belong to one channel). What it sends is
 * kept here until the other side acknowledges it (`ack` frames carry the
 * count received: with every batch written, and alone
 * {@link ACK_DELAY_MS} after frames arrived when nothing was written). When a
 * channel drops, the caller opens a new one and says how much it received
 * (`resume`); the worker answers with its own count (`resumed`); each side
 * then writes what it kept past the other's count, and goes on. A frame
 * half received when the channel dropped is not counted, so it is sent
 * again whole.
 *
 * What is kept is bounded by the windows: a stream's sender sends only
 * within the credit its receiver granted, the receiver grants credit only
 * for items it received, and the acknowledgement of those items leaves in
 * the same batch as the credit (or before it). So a side keeps at most the
 * windows of its streams in flight, plus the control frames and what
 * arrives within one ack delay.
 *
 * @module
 */
import { ProtocolError } from './errors.ts'

const EMPTY = new Uint8Array(0)

/** An ack goes out at the latest this long after a frame arrived, when nothing else was written that carried one. */
export const ACK_DELAY_MS = 20

/** The counts and the kept bytes of one side of a resumable session. */
export class ReplayLog {
  /** Bytes of counted frames sent so far (the position after the last one). */
  sent = 0
  /** Bytes of counted frames received so far (complete frames only). */
  received = 0
  /** The count last acknowledged to the other side. */
  private ackedOut = 0
  /** Bytes sent and not yet acknowledged, oldest first from `head` (a queue: acks let go from its front); the one at `head` begins at `start`. */
  private parts: Uint8Array[] = []
  private head = 0
  private start = 0
  /** The most bytes kept at once (for stats and the bench). */
  peak = 0

  /** Bytes kept now: sent, not yet acknowledged. */
  get kept(): number {
    return this.sent - this.start
  }

  /** Keeps a batch that was just sent (or would have been, with no channel). */
  record(parts: readonly Uint8Array[]): void {
    for (const p of parts) {
      if (p.byteLength === 0) continue
      this.parts.push(p)
      this.sent += p.byteLength
    }
    if (this.kept > this.peak) this.peak = this.kept
  }

  /** The other side received everything before `count`: what lies before it is let go. */
  acked(count: number): void {
    if (count > this.sent) throw new ProtocolError(`the other side acknowledged ${count} bytes, but only ${this.sent} were sent`)
    const { parts } = this
    while (this.head < parts.length && this.start + parts[this.head]!.byteLength <= count) {
      this.start += parts[this.head]!.byteLength
      parts[this.head++] = EMPTY
    }
    if (count > this.start && this.head < parts.length) {
      parts[this.head] = parts[this.head]!.subarray(count - this.start)
      this.start = count
    }
    // Let the array go once it is spent, or its front once it is most of it.
    if (this.head === parts.length) {
      this.parts = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > parts.length) {
      this.parts = parts.slice(this.head)
      this.head = 0
    }
  }

  /**
   * What to send again on a new channel to a side that received `count`
   * bytes: everything kept past it. Throws when `count` is not a point this
   * side can resume from (it acknowledged more than was sent, or less than
   * it acknowledged before: not the same session, or a broken peer).
   */
  since(count: number): Uint8Array[] {
    if (count < this.start) throw new ProtocolError(`cannot resume from byte ${count}: bytes before ${this.start} were acknowledged and let go`)
    this.acked(count)
    return this.parts.slice(this.head)
  }

  /** True when a side that received `count` bytes can be given what it missed. */
  canResumeFrom(count: number): boolean {
    return Number.isSafeInteger(count) && count >= this.start && count <= this.sent
  }

  /** Counts a frame of `bytes` that arrived. */
  receivedFrame(bytes: number): void {
    this.received += bytes
  }

  /** Bytes received and not yet acknowledged. */
  get unacked(): number {
    return this.received - this.ackedOut
  }

  /** The count to acknowledge now; marks it acknowledged. */
  takeAck(): number {
    this.ackedOut = this.received
    return this.received
  }
}
