/**
 * Resumable sessions: what each end of a link counts and keeps so that a
 * session outlives the channel it runs on, with nothing lost and nothing
 * twice.
 *
 * Once both hellos are exchanged, each side counts the bytes of the frames
 * it sends and of the complete frames it receives (every frame but `hello`,
 * `resume` and `resumed`, which belong to one channel). What it sends is
 * kept here until the other side acknowledges it (`ack` frames carry the
 * count received: with every batch written, and at least every
 * {@link ACK_BYTES} or {@link ACK_DELAY_MS} while frames arrive). When a
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

/** An ack goes out once this many bytes arrived unacknowledged, even in the middle of a batch. */
export const ACK_BYTES = 256 * 1024
/** And at the latest this long after a frame arrived, when nothing else was written. */
export const ACK_DELAY_MS = 20

/** The counts and the kept bytes of one side of a resumable session. */
export class ReplayLog {
  /** Bytes of counted frames sent so far (the position after the last one). */
  sent = 0
  /** Bytes of counted frames received so far (complete frames only). */
  received = 0
  /** The count last acknowledged to the other side. */
  private ackedOut = 0
  /** Bytes sent and not yet acknowledged, oldest first; the first begins at `start`. */
  private parts: Uint8Array[] = []
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
    while (this.parts.length > 0 && this.start + this.parts[0]!.byteLength <= count) {
      this.start += this.parts.shift()!.byteLength
    }
    if (count > this.start && this.parts.length > 0) {
      this.parts[0] = this.parts[0]!.subarray(count - this.start)
      this.start = count
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
    return [...this.parts]
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
