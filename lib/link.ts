/**
 * A link: one end of a byte channel that speaks frames. The caller's
 * {@link Session} and the worker's runtime are both links; this holds what
 * they share: decoding what arrives, and batching what leaves so that the
 * frames of many calls made in one turn of the event loop go out in one
 * write.
 *
 * @module
 */
import { ProtocolError, SerializeError, type FarpipeError } from './errors.ts'
import { FlushPolicy } from './flow.ts'
import { type StreamHooks } from './codec/values.ts'
import { ItemWriter } from './codec/items.ts'
import { encodeFrame, FrameDecoder, HEADER_BYTES, Kind, kindName, type Frame } from './wire/frame.ts'
import { FrameWriter } from './wire/frame-writer.ts'
import { payloads } from './wire/payloads.ts'
import { resolveLimits, type Limits } from './options.ts'
import { ACK_DELAY_MS, ReplayLog } from './replay.ts'

/** Frames that belong to one channel, not to the session: never counted nor replayed (see lib/replay.ts). */
function counted(kind: number): boolean {
  return kind !== Kind.hello && kind !== Kind.resume && kind !== Kind.resumed
}

/**
 * A byte channel to the other side: a child's stdio, an SSH exec channel,
 * or an in-memory pair. Transports implement it; links use it.
 */
export interface Channel {
  /** Sends bytes, in order. The channel keeps the buffer; the caller does not touch it again. */
  write(chunk: Uint8Array): void
  /** Sends several buffers in order, ideally in one system call. Optional: without it, each is written. */
  writev?(chunks: Uint8Array[]): void
  /** Closes the sending direction: the other side sees the end of its input. */
  end(): void
  /** Tears the channel down at once. */
  destroy(): void
  /** Lets this process exit while the channel is open (an idle worker). Optional. */
  unref?(): void
  /**
   * Kills the worker process `pid` (as its hello gave it) where destroying
   * the channel does not end it: over SSH, a worker stuck in a loop or
   * stopped outlives its closed channel. Optional.
   */
  kill?(pid: number): void
}

/** What a channel reports to the link that reads it. */
export interface ChannelEvents {
  /** Bytes arrived. The link may keep a view of them until it returns. */
  data(chunk: Uint8Array): void
  /** The channel closed: cleanly (no error) or not. Called once. */
  close(error?: Error): void
}

/** A frame the link could not take, and the error to close with. */
export abstract class Link implements ChannelEvents {
  protected channel: Channel | undefined
  protected limits: Limits
  private decoder: FrameDecoder
  private readonly out = new FrameWriter()
  private items: ItemWriter
  private readonly policy: FlushPolicy
  private flushScheduled = false
  /** The data frame open in the batch: its call and stream (-1 when none). */
  private openCall = -1
  private openStream = -1
  /** Set once the channel is gone; nothing is sent after. */
  protected closedWith: FarpipeError | undefined
  /**
   * On a resumable session, once both hellos are exchanged: the counts and
   * the bytes kept to send again after a dropped channel (lib/replay.ts).
   */
  protected replay: ReplayLog | undefined
  private ackTimer: NodeJS.Timeout | undefined

  constructor(limits: Partial<Limits> = {}) {
    this.limits = resolveLimits(limits)
    this.decoder = new FrameDecoder(this.limits.maxFrameBytes)
    this.items = new ItemWriter(this.out, this.limits)
    this.policy = new FlushPolicy({ maxBytes: this.limits.softFrameBytes, maxItems: 1024, maxDelayMs: 2 }, Date.now)
  }

  /** The largest payload a frame may carry. */
  get maxPayload(): number {
    return this.limits.maxFrameBytes - HEADER_BYTES
  }

  /** Adopts the limits the other side announced (both sides must agree on the largest frame). */
  protected adopt(limits: Limits): void {
    this.limits = { ...limits }
    this.decoder.maxFrameBytes = limits.maxFrameBytes
    this.items = new ItemWriter(this.out, this.limits)
  }

  /** Attaches the channel frames are written to. */
  protected attach(channel: Channel): void {
    this.channel = channel
  }

  // -- receiving --------------------------------------------------------------

  /** Bytes from the channel: decoded and dispatched frame by frame. */
  data(chunk: Uint8Array): void {
    if (this.closedWith) return
    let frames: Frame[]
    try {
      frames = this.decoder.decode(chunk)
    } catch (err) {
      this.protocolFailure(err as ProtocolError)
      return
    }
    for (const f of frames) {
      if (this.closedWith) return
      try {
        if (this.replay && counted(f.kind)) {
          this.replay.receivedFrame(HEADER_BYTES + f.payload.byteLength)
          if (f.kind === Kind.ack) {
            this.replay.acked(payloads.readAck(f.payload))
            continue
          }
        }
        this.frame(f)
      } catch (err) {
        const e = err instanceof ProtocolError ? err : new ProtocolError(`bad ${kindName(f.kind)} frame: ${(err as Error).message}`, { cause: err })
        this.protocolFailure(e)
        return
      }
    }
    if (this.replay && this.replay.unacked > 0) this.scheduleAck()
  }

  /**
   * Acknowledges what arrived within {@link ACK_DELAY_MS}, unless a batch
   * carries it first (the credit that lets the other side send more always
   * does, which is what bounds what it keeps).
   */
  private scheduleAck(): void {
    if (this.ackTimer) return
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined
      if (this.replay && this.replay.unacked > 0 && !this.closedWith) this.flush(true)
    }, ACK_DELAY_MS)
    this.ackTimer.unref?.()
  }

  /**
   * The channel dropped on a resumable session: nothing is written until
   * {@link resumeOn} gives a new one (what is sent meanwhile is kept), and a
   * frame half received is dropped (the other side sends it again whole).
   */
  protected detachChannel(): void {
    this.channel = undefined
    this.decoder = new FrameDecoder(this.limits.maxFrameBytes)
  }

  /**
   * Goes on over `channel` with a side that received `peerReceived` bytes:
   * what it missed is written first, then what comes. Throws ProtocolError
   * when that is not a point this side can resume from.
   */
  protected resumeOn(channel: Channel, peerReceived: number): void {
    // What is in the batch now is kept with the rest, in order.
    this.flush()
    const missed = this.replay!.since(peerReceived)
    this.channel = channel
    // The decoder is not renewed here (detachChannel did): on the caller this runs while the chunk holding
    // `resumed` is decoded, and what follows it in that chunk, the start of what the worker sends again, is in it.
    if (missed.length > 1 && channel.writev) channel.writev(missed)
    else for (const part of missed) channel.write(part)
  }

  /** Writes a frame of this channel alone (`hello`, `resume`, `resumed`) straight to `channel`: not counted, not kept. */
  protected sendOnChannel(channel: Channel, kind: number, payload?: Uint8Array): void {
    channel.write(encodeFrame(kind, 0, 0, payload))
  }

  /** The channel closed. A clean close with bytes of a frame left over is a truncation. */
  close(error?: Error): void {
    if (this.closedWith) return
    let cause = error
    if (!cause) {
      try {
        this.decoder.end()
      } catch (err) {
        cause = err as Error
      }
    }
    this.closed(cause)
  }

  /** Handles one frame. Throwing here is a protocol error that closes the link. */
  protected abstract frame(f: Frame): void

  /** The link is gone (channel closed, or a protocol error); `cause` says why, if not a clean end. */
  protected abstract closed(cause?: Error): void

  /** Set when the link failed on a bad frame: a resumable session ends then, it does not wait for a new channel. */
  protected corrupt = false

  /** A frame could not be decoded or handled: the link cannot be trusted any more. */
  protected protocolFailure(err: ProtocolError): void {
    this.corrupt = true
    this.closed(err)
    this.channel?.destroy()
  }

  // -- sending ------------------------------------------------------------------

  /**
   * Appends one item to the data frame of (`call`, `stream`), opening it if
   * needed. Returns the bytes the item counts for. Throws SerializeError with
   * nothing written when the item cannot be sent.
   */
  sendItem(call: number, stream: number, value: unknown, path: () => string, hooks?: StreamHooks): number {
    // Encoding runs user code (a getter, a Proxy): what it sends cannot go into the frame being written.
    if (this.encoding) throw new Error(`${path()}: an item cannot be sent while another is being encoded (by a getter or a Proxy of that item)`)
    if (this.openCall !== call || this.openStream !== stream || !this.out.open) {
      this.closeOpenFrame()
      this.out.begin(Kind.data, call, stream)
      this.openCall = call
      this.openStream = stream
    }
    let bytes: number
    this.encoding = true
    try {
      bytes = this.items.write(value, path, hooks)
    } catch (err) {
      if (this.out.frameBytes <= HEADER_BYTES) {
        this.out.abandon()
        this.openCall = this.openStream = -1
      }
      throw err
    } finally {
      this.encoding = false
      this.sendDeferred()
    }
    this.wrote()
    return bytes
  }

  /**
   * True while an item is being encoded. Encoding reads the value, which may
   * run user code (a getter that logs, a Proxy): a frame that code sends (a
   * log line) waits until the item is written, since writing it then would
   * cut the item's data frame in two and the other side would cut this
   * link off as corrupt.
   */
  private encoding = false
  /** Frames (and a flush) asked for while an item was being encoded, in order. */
  private deferred: (() => void)[] = []

  private sendDeferred(): void {
    if (this.deferred.length === 0) return
    const later = this.deferred
    this.deferred = []
    for (const send of later) send()
  }

  /**
   * Appends a whole frame to the batch (`urgent`: and writes the batch out
   * now, for frames the other side is waiting on, like credit). Throws SerializeError, with nothing
   * written, when the frame would exceed `maxFrameBytes` (the other side
   * would refuse it and close the session).
   */
  send(kind: number, call: number, stream: number, payload?: Uint8Array, urgent = false): void {
    const size = HEADER_BYTES + (payload?.byteLength ?? 0)
    if (size > this.limits.maxFrameBytes) {
      throw new SerializeError(`a ${kindName(kind)} frame of ${size} bytes exceeds maxFrameBytes ${this.limits.maxFrameBytes}`, kindName(kind))
    }
    if (this.encoding) {
      this.deferred.push(() => this.send(kind, call, stream, payload, urgent))
      return
    }
    this.closeOpenFrame()
    this.out.frame(kind, call, stream, payload)
    if (urgent) this.flush()
    else this.wrote()
  }

  /** Writes the batch out now (`ack`: with an ack even when the batch is empty). */
  flush(ack = false): void {
    if (this.encoding) {
      this.deferred.push(() => this.flush(ack))
      return
    }
    this.closeOpenFrame()
    // On a resumable session every batch carries the count received, so what the other side keeps stays within the windows.
    if (this.replay && this.replay.unacked > 0 && (ack || this.out.pending > 0) && !this.closedWith) {
      this.out.frame(Kind.ack, 0, 0, payloads.ack(this.replay.takeAck()))
    }
    const parts = this.out.takeParts()
    this.policy.flushed()
    if (parts.length === 0 || this.closedWith) return
    this.replay?.record(parts)
    if (!this.channel) return
    if (parts.length > 1 && this.channel.writev) this.channel.writev(parts)
    else for (const part of parts) this.channel.write(part)
  }

  /**
   * Lets the event loop turn once, so that what the other side sent (a
   * cancel, credit) is read, for a producer that never waits for anything.
   * The batch it is making stays open: writing it at each such turn would
   * cut it into many small writes, each costing both sides; the flush
   * policy writes it when it is large or old enough, or the turn after the
   * producer stops.
   */
  async breathe(): Promise<void> {
    this.breathing = true
    // Two turns: an immediate scheduled while the loop handles I/O (a frame
    // that woke the producer) runs before the loop polls for more, so one
    // alone may read nothing; the second runs after a poll.
    await new Promise<void>((r) => setImmediate(() => setImmediate(r)))
    this.breathing = false
  }

  /** True during {@link breathe}'s turn. */
  private breathing = false

  private wrote(): void {
    if (this.policy.added(this.out.pending)) {
      this.flush()
      return
    }
    this.scheduleFlush()
  }

  /** Writes the batch at the end of this turn of the event loop (or of the first turn a producer does not {@link breathe} through). */
  private scheduleFlush(): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => {
      this.flushScheduled = false
      if (this.breathing) this.scheduleFlush()
      else this.flush()
    })
  }

  private closeOpenFrame(): void {
    if (this.openCall < 0) return
    this.items.close()
    if (this.out.frameBytes <= HEADER_BYTES) this.out.abandon()
    else this.out.end()
    this.openCall = this.openStream = -1
  }
}
