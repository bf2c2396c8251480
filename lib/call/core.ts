/**
 * The caller's side of one call, behind its public face (RemoteCall): it
 * starts the call on a worker, routes the worker's frames for it, and
 * decides its outcome. Its parts: the streams it sends (inputs.ts), the
 * streams the worker nests in values (receivers.ts), its deadlines
 * (deadlines.ts); its output is a credit-bounded queue (lib/queue.ts).
 *
 * Credits come from the consumer: reading the output frees room in its
 * queue, which grants the worker more; streamed arguments are pulled from
 * their sources only while the worker has granted room for them.
 *
 * @module
 */
import { readValue, type StreamHooks } from '../codec/values.ts'
import { streamsInItems } from '../codec/items.ts'
import { CancelError, ProtocolError, type TransportError } from '../errors.ts'
import type { Watermarks } from '../flow.ts'
import { WORKER_STREAMS } from '../nested.ts'
import type { ResolvedCallOptions } from '../options.ts'
import type { ItemStream, NestedRef } from '../queue.ts'
import type { Session, SessionCall } from '../session.ts'
import { Kind, kindName, type Frame } from '../wire/frame.ts'
import { payloads, type CallHeader } from '../wire/payloads.ts'
import { Deadlines } from './deadlines.ts'
import { CallInputs } from './inputs.ts'
import { CallOutput } from './output.ts'
import { Receivers } from './receivers.ts'
import { reasonBytes, Settling } from './settling.ts'
import { errorReport, remoteError } from './remote-error.ts'

/** Where a call runs: supplied by the pool. */
export interface CallTarget {
  /**
   * The session (worker) to run on, once one is free. `withdrawn` aborts when
   * the call settles before it got one (a timeout, a cancel, an abort): a
   * call waiting in the pool's queue then leaves it at once.
   */
  session(withdrawn: AbortSignal): Promise<Session>
  /** Bundle hash, export name and module name of the function, once bundled. */
  locate(): Promise<{ bundle: string; fn: string; module: string }>
  /** The call ended before it used the session it was handed (it registers there otherwise). */
  unused?(session: Session): void
}

/** The caller's side of one call (everything but the public face). */
export class CallCore implements SessionCall {
  readonly generator: boolean
  private readonly output: CallOutput
  private readonly inputs: CallInputs
  private readonly receivers: Receivers
  private readonly deadlines: Deadlines
  private readonly settling: Settling
  private readonly marks: Watermarks
  /** The encoded arguments, until the call frame carries them (or the call settles without sending it). */
  private args: Buffer | undefined
  /** Aborted when the call settles before it was sent: it leaves the pool's queue (see {@link CallTarget.session}). */
  private readonly withdrawn = new AbortController()
  private session: Session | undefined
  /**
   * Holds the process open while `work` is pending (set by the pool): a
   * reader waiting for a nested stream's next item must not see the process
   * exit under it, though the call itself has ended.
   */
  keepAlive: ((work: Promise<unknown>) => void) | undefined
  /** The host the call was sent to, once it was. */
  hostName: string | undefined
  private id = 0

  constructor(
    /** The function's name for messages: its export name once known. */
    private readonly name: () => string,
    generator: boolean,
    args: unknown[],
    options: ResolvedCallOptions,
    maxFrameBytes: number,
    /** Where `run()` was called (see captureCallSite in remote-error.ts). */
    private readonly callSite?: { stack?: string },
  ) {
    this.generator = generator
    const marks = { items: options.highWaterMark, bytes: options.highWaterBytes }
    this.marks = marks
    this.output = new CallOutput(marks, generator, {
      credit: (c) => this.sendFrame(Kind.credit, 0, payloads.credit(c.items, c.bytes), true),
      cancel: (reason) => this.cancel(reason),
    })
    const owner = this.owner()
    this.settling = new Settling(owner, options.cancelGrace)
    this.inputs = new CallInputs(owner, marks)
    this.receivers = new Receivers(owner, marks)
    this.deadlines = new Deadlines(owner, options)
    // Encoding the arguments first means a value that cannot be sent fails here, before anything is sent.
    this.args = this.inputs.encode(args, maxFrameBytes)
  }

  /** Settles with the function's return value or its error (see RemoteCall.result). */
  get result(): Promise<unknown> {
    return this.settling.result
  }

  /** Resolves once the worker's last frame for this call arrived, or never will. */
  get finalPromise(): Promise<void> {
    return this.settling.finalPromise
  }

  /** What the parts of the call (inputs, receivers, deadlines, settling) may use of it. */
  private owner() {
    const core = this
    return {
      get label() {
        return core.name()
      },
      get where() {
        return core.where
      },
      get callId() {
        return core.id
      },
      get session() {
        return core.session
      },
      call: this as SessionCall,
      get sent() {
        return core.settling.sent
      },
      get running() {
        return core.settling.running
      },
      get settled() {
        return core.settling.settled
      },
      get started() {
        return core.settling.started
      },
      get openStreams() {
        return core.inputs.open || core.receivers.size > 0
      },
      get output() {
        return core.output.queue
      },
      writeItem: (stream: number, value: unknown, path: () => string, hooks: StreamHooks) => this.writeItem(stream, value, path, hooks),
      sendFrame: (kind: number, stream: number, payload?: Uint8Array, urgent?: boolean) => this.sendFrame(kind, stream, payload, urgent),
      reasonBytes,
      keepAlive: (until: Promise<unknown>) => this.keepAlive?.(until),
      streamError: (f: Frame) => remoteError(errorReport(f, this.where, this.id), this.failedCall(), 'a stream sent by'),
      countIn: (items: number, bytes: number) => this.countIn(items, bytes),
      activity: () => this.deadlines.activity(),
      checkForget: () => this.settling.checkForget(),
      // A worker whose connection dropped waits to resume: nothing can move, and that is not the remote's silence.
      waitingHere: () => !this.output.queue.ledger.owes || this.inputs.waitingHere() || this.session?.detached === true,
      fail: (error: unknown, drop?: boolean) => this.fail(error, drop),
      decided: (success: boolean) => {
        this.output.decided()
        this.deadlines.clear()
        if (!success) this.inputs.stopAll()
      },
      withdraw: () => {
        this.args = undefined
        this.withdrawn.abort()
      },
    }
  }

  private get label(): string {
    return this.name()
  }

  /** True once the worker showed that the function returned a generator (see CallOutput.streamed). */
  get streamed(): boolean {
    return this.output.streamed
  }

  /** Resolves true once the call is known to stream, false once its outcome is known and it does not. */
  get shape(): Promise<boolean> {
    return this.output.shape
  }

  /**
   * True when the arguments hold a stream (at any depth). Such a call cannot
   * be run again once it failed: its sources were read, in part or whole,
   * or let go when it failed, and a second run would see them consumed.
   */
  get hasStreams(): boolean {
    return this.inputs.hasStreams
  }

  /** Starts the call: locates the bundle, picks a worker, sends the call frame, starts the input pumps. */
  async start(target: CallTarget): Promise<void> {
    if (!this.deadlines.start()) return
    try {
      const where = await target.locate()
      if (this.settling.sent) return
      const session = await target.session(this.withdrawn.signal)
      if (this.settling.sent) return target.unused?.(session)
      this.session = session
      this.hostName = session.host
      this.id = session.register(this)
      const header: CallHeader = {
        ...(this.generator ? {} : { tell: true }),
        bundle: where.bundle,
        fn: where.fn,
        module: where.module,
        out: this.output.queue.ledger.initial,
        streams: this.inputs.declared(),
        nested: this.marks,
      }
      const head = Buffer.from(JSON.stringify(header), 'utf8')
      const args = this.args!
      this.args = undefined
      const payload = Buffer.allocUnsafe(4 + head.byteLength + args.byteLength)
      payload.writeUInt32LE(head.byteLength, 0)
      head.copy(payload, 4)
      args.copy(payload, 4 + head.byteLength)
      session.send(Kind.call, this.id, 0, payload)
      this.settling.sentNow()
      this.inputs.startAll()
    } catch (err) {
      this.fail(err)
    }
  }

  readable(): ItemStream<unknown> {
    return this.output.readable()
  }

  /** Reads the output without building a stream (see CallOutput.items). */
  items(): AsyncIterator<unknown> {
    return this.output.items(this.label)
  }

  writable(): WritableStream<unknown> {
    return this.inputs.writable()
  }

  // -- to the worker --------------------------------------------------------------

  private sendFrame(kind: number, stream: number, payload?: Uint8Array, urgent?: boolean): void {
    this.session?.send(kind, this.id, stream, payload, urgent)
  }

  /** Writes one item of the caller's stream `stream` (see CallInputs.sendItem) and counts it. */
  private writeItem(stream: number, value: unknown, path: () => string, hooks: StreamHooks): number {
    // Once sent, a call's stream is fed until the worker ends it (it may outlive the call's result); not before, and not once the worker is gone.
    if (!this.settling.sent || !this.session) throw new CancelError(`${this.label} is not running`)
    this.deadlines.activity()
    const bytes = this.session.sendItem(this.id, stream, value, path, hooks)
    this.session.counters.itemsOut++
    this.session.counters.bytesOut += bytes
    return bytes
  }

  // -- frames from the worker ---------------------------------------------------

  frame(f: Frame): void {
    if (f.stream >= WORKER_STREAMS) return this.receivers.frame(f)
    switch (f.kind) {
      case Kind.data: {
        // The worker sends items only on the output stream and its own streams; the input streams' items go the other way.
        if (f.stream !== 0) throw new ProtocolError(`worker ${this.where} sent data on stream ${f.stream} of call ${this.id}, which is a stream of the caller's`)
        if (!this.settling.running) {
          // Dropped unread (the call was cancelled or failed): the streams inside are let go at once.
          streamsInItems(f.payload, (id) => this.receivers.drop(id))
          return
        }
        this.deadlines.activity()
        this.countIn(this.output.push(f, (id, refs, item) => this.receivers.open(id, refs, item)), f.payload.byteLength)
        return
      }
      case Kind.streams:
        this.outputFrame(f)
        this.output.markStreamed()
        return
      case Kind.credit:
        this.inputs.credit(f)
        if (this.settling.running) this.deadlines.activity()
        return
      case Kind.cancel:
        // The remote function stopped reading one of the caller's streams.
        return this.inputs.cancelled(f)
      case Kind.end: {
        this.outputFrame(f)
        // Decoded before anything changes: a payload that cannot be read is a protocol error, and the call fails with the session.
        const nested: NestedRef[] = []
        const { value, streamed } = payloads.readEnd(f.payload, (p) => readValue(p, { fromId: (id) => this.receivers.open(id, nested, 0) }))
        if (streamed) this.output.markStreamed()
        // A function's return value is what it sends this side: counted as an item.
        else this.countIn(1, f.payload.byteLength)
        if (!this.settling.returned(value)) for (const n of nested) n.cancel()
        this.settling.finished()
        return
      }
      case Kind.error: {
        this.outputFrame(f)
        const err = remoteError(errorReport(f, this.where, this.id), this.failedCall())
        if (this.session) this.session.counters.errors++
        this.settling.finished()
        this.settling.failed(err)
        return
      }
      case Kind.cancelled:
        this.outputFrame(f)
        this.settling.finished()
        this.settling.confirmedCancel()
        return
    }
  }

  private countIn(items: number, bytes: number): void {
    const counters = this.session?.counters
    if (!counters) return
    counters.itemsIn += items
    counters.bytesIn += bytes
  }

  /** Checks that a call's final frame is about its output (stream 0). */
  private outputFrame(f: Frame): void {
    if (f.stream !== 0) throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.id}; a call ends on its output stream 0`)
  }

  /** `host/worker` of the session, for messages. */
  private get where(): string {
    return this.session?.where ?? 'unknown'
  }

  /** Where the call ran and was made, for the error a remote failure gives. */
  private failedCall() {
    return { label: this.label, host: this.session?.host ?? '', worker: this.session?.worker ?? -1, where: this.session?.where, callSite: this.callSite }
  }

  lost(error: TransportError): void {
    if (!this.settling.settled && this.session) this.session.counters.errors++
    this.session = undefined
    this.receivers.failAll(error)
    this.settling.fail(error)
    this.inputs.stopAll()
    this.settling.checkForget()
    this.settling.finished()
  }

  /** Cancels the call; resolves when the worker confirms (its `finally` blocks have run). */
  cancel(reason?: unknown): Promise<void> {
    return this.settling.cancel(reason)
  }

  /** Fails the call from this side (see Settling.fail). */
  fail(error: unknown, drop = false): void {
    this.settling.fail(error, drop)
  }
}
