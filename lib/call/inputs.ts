/**
 * The streams a caller sends on a call: its streamed arguments (an
 * iterator, a ReadableStream, the `input` placeholder fed by the call's
 * writable side), and the streams nested in the items it sends on them.
 * Each has a pump that pulls its source only while the worker has granted
 * room (see lib/pump.ts); their ids are the caller's (1 to 0x7fff).
 *
 * @module
 */
import { valueBytes, type StreamHooks } from '../codec/values.ts'
import { CancelError, ProtocolError, SerializeError } from '../errors.ts'
import { NestedBudget, nestedInitial, type Watermarks } from '../flow.ts'
import { isInput, isStreamSource } from '../input.ts'
import { WORKER_STREAMS } from '../nested.ts'
import { registerSink } from '../pipe.ts'
import { checkUnsent, pathTo, PendingPumps, StreamPump, type PumpOwner } from '../pump.ts'
import { Kind, kindName, type Frame } from '../wire/frame.ts'
import { payloads } from '../wire/payloads.ts'

/** What a call's inputs need from the call. */
export interface InputOwner {
  /** The function's name, for messages. */
  readonly label: string
  /** `host/worker` of the call's session, and the call's id, for messages. */
  readonly where: string
  readonly callId: number
  /** True once the call frame was sent: frames about its streams may follow it. */
  readonly sent: boolean
  /** Resolves once the call frame is sent (or the call settled before it could be). */
  readonly started: Promise<void>
  /** Writes one item of stream `stream` through the call's session and counts it; throws (nothing written) when it cannot be sent, or the call is not running. */
  writeItem(stream: number, value: unknown, path: () => string, hooks: StreamHooks): number
  /** Sends a frame about one of the call's streams. */
  sendFrame(kind: number, stream: number, payload?: Uint8Array): void
  /** Fails the whole call from this side (`drop`: items not yet read are discarded). */
  fail(error: unknown, drop?: boolean): void
  /** A stream closed: the call may be forgotten once none is open. */
  checkForget(): void
}

/** The sending ends of a call's streams, by id. */
export class CallInputs implements PumpOwner {
  /** Streams this side feeds while they run: streamed arguments, and streams nested in the items of an input. */
  private readonly pumps = new Map<number, StreamPump>()
  /** The id the next stream this side opens gets (ids below it were opened). */
  private nextStream = 1
  /** Pumps numbered by an item being encoded: started once it is sent, let go if it cannot be. */
  private readonly pending = new PendingPumps()
  /** Hooks that number the streams nested in an input's items. */
  private readonly itemHooks: StreamHooks = { toId: (v) => this.openPump(v) }
  private inputPump: StreamPump | undefined
  /** Every source this call has sent as a stream: each may be sent once. */
  private readonly sentSources = new WeakSet<object>()
  /** First windows of the streams nested in an input's items (see {@link NestedBudget}). */
  private readonly budget: NestedBudget
  /** How many streams the arguments opened (ids 1 to this). */
  private argumentStreams = 0
  private writableStream: WritableStream<unknown> | undefined
  private writableController: WritableStreamDefaultController | undefined

  constructor(
    private readonly owner: InputOwner,
    private readonly marks: Watermarks,
  ) {
    this.budget = new NestedBudget(marks)
  }

  /**
   * Encodes the call's arguments, numbering the streams among them (each
   * gets a pump, started once the call frame is out). Throws SerializeError,
   * with nothing sent, for a value that cannot be sent or arguments past
   * `maxFrameBytes`.
   */
  encode(args: unknown[], maxFrameBytes: number): Buffer {
    const marks = this.marks
    const toId = (v: unknown): number | undefined => {
      if (!isStreamSource(v)) return undefined
      if (isInput(v) && this.inputPump) throw new TypeError('`input` may appear only once among the arguments of a call')
      if (!isInput(v)) checkUnsent(v, this.sentSources)
      const id = this.streamId()
      let named: string | undefined
      const pump = new StreamPump(this, id, v, { initial: marks, max: marks }, () => (named ??= isInput(v) ? 'input' : pathTo('args', args, v)))
      this.pumps.set(id, pump)
      if (isInput(v)) this.inputPump = pump
      return id
    }
    const encoded = valueBytes(args, 'args', { toId })
    this.argumentStreams = this.nextStream - 1
    // The call frame also carries a small JSON header; leave it room.
    if (encoded.byteLength + 4096 > maxFrameBytes) {
      throw new SerializeError(`args: ${encoded.byteLength} bytes exceed maxFrameBytes ${maxFrameBytes}; pass large data as a stream (an iterator or ReadableStream) instead`, 'args')
    }
    return encoded
  }

  /** True when the arguments hold a stream (at any depth). */
  get hasStreams(): boolean {
    return this.argumentStreams > 0
  }

  /** True while a stream of this side is open. */
  get open(): boolean {
    return this.pumps.size > 0
  }

  /** The streamed arguments, as the call header declares them (before anything is sent, they are all there is). */
  declared(): { id: number; items: number; bytes: number }[] {
    return [...this.pumps.keys()].map((id) => ({ id, items: this.marks.items, bytes: this.marks.bytes }))
  }

  /** The call frame is out: the sources of the streamed arguments are pulled from now on. */
  startAll(): void {
    // A copy: pumps started here may open more (streams nested in the items they send).
    for (const pump of [...this.pumps.values()]) void pump.run()
  }

  /** True while a source of this side has credit it has not used: this side, not the worker, holds the call up. */
  waitingHere(): boolean {
    for (const pump of this.pumps.values()) if (pump.waitingHere) return true
    return false
  }

  /** A credit frame for one of these streams. */
  credit(f: Frame): void {
    this.pump(f)?.credit(payloads.readCredit(f.payload))
  }

  /** A cancel frame: the remote function stopped reading one of these streams. */
  cancelled(f: Frame): void {
    const pump = this.pump(f)
    if (!pump) return
    const err = new CancelError(`${this.owner.label} stopped reading ${pump.isInputPlaceholder ? 'its input' : pump.path()}`)
    this.pumps.delete(pump.id)
    this.budget.give(pump.id)
    pump.stop(err)
    // The answer: the worker gives the stream's first window back when this arrives (see NestedBudget).
    this.owner.sendFrame(Kind.end, pump.id)
    if (pump === this.inputPump) this.errorWritable(err)
    this.owner.checkForget()
  }

  /** Stops feeding every stream of this side, and errors the writable. */
  stopAll(): void {
    // Built only when something needs it: an error's stack costs microseconds, on every call.
    if (this.pumps.size > 0 || this.writableController) {
      const stop = new CancelError(`${this.owner.label} has finished`)
      const pumps = [...this.pumps.values()]
      this.pumps.clear()
      for (const pump of pumps) pump.stop(stop)
      this.errorWritable(stop)
    }
  }

  /** The call's writable side, which feeds the `input` argument. */
  writable(): WritableStream<unknown> {
    if (this.writableStream) return this.writableStream
    const pump = this.inputPump
    if (!pump) {
      const err = new TypeError(`${this.owner.label} was called without the \`input\` argument, so its writable side leads nowhere`)
      this.writableStream = new WritableStream({ start: (c) => c.error(err) })
      return this.writableStream
    }
    /** Chunks ever written through the stream, and whether it was closed or aborted: a pipe may bypass it only while it is untouched. */
    let written = 0
    let ended = false
    const open = () => this.owner.sent && pump.stopped === undefined && pump.window.open
    const room = () => (this.owner.sent ? pump.room() : this.owner.started.then(() => pump.room()))
    /** Sends one chunk within credit; a chunk that cannot be sent fails the call (nothing of it was sent), not just this pipe. */
    const send = (chunk: unknown) => {
      try {
        pump.send(chunk)
      } catch (err) {
        this.owner.fail(err, true)
        throw err
      }
    }
    this.writableStream = new WritableStream(
      {
        start: (c) => {
          this.writableController = c
        },
        // Within credit, a chunk is sent at once: no promise of the sink's own per chunk.
        write: (chunk) => (open() ? send(chunk) : room().then(() => send(chunk))),
        // An input closed or aborted before the call frame went out must still
        // reach the worker once it has: otherwise the remote waits for an end
        // that was dropped, and the call never settles.
        close: async () => {
          ended = true
          await this.owner.started
          if (pump.stopped === undefined) this.inputEnded(pump.id)
        },
        abort: async (reason) => {
          ended = true
          await this.owner.started
          if (pump.stopped === undefined) this.inputFailed(pump.id, reason)
        },
      },
      {
        highWaterMark: 1,
        size: () => {
          written++
          return 1
        },
      },
    )
    registerSink(this.writableStream, {
      get idle() {
        return written === 0 && !ended
      },
      open,
      room,
      write: (item) => {
        try {
          send(item)
        } catch (err) {
          // As a sink's failed write does: the writable errors (with the call's error, if the failure ended the call).
          const stored = pump.stopped ?? err
          this.errorWritable(stored)
          throw stored
        }
      },
    })
    return this.writableStream
  }

  /**
   * Writes one item of stream `stream` (the pump checked the credit),
   * numbering the streams nested in it: they start once the item is written
   * (their frames follow it), and are let go if it cannot be.
   */
  sendItem(stream: number, value: unknown, path: () => string): number {
    let bytes: number
    try {
      bytes = this.owner.writeItem(stream, value, path, this.itemHooks)
    } catch (err) {
      // The streams numbered in it were never named: their first windows come back.
      this.pending.abandon(err, (pump) => this.budget.give(pump.id))
      throw err
    }
    this.pending.start(path, value, this.pumps)
    return bytes
  }

  pumpEnded(pump: StreamPump): void {
    this.inputEnded(pump.id)
  }

  pumpFailed(pump: StreamPump, error: unknown): void {
    this.inputFailed(pump.id, error)
  }

  /** An item could not be sent: for a streamed argument the call fails (nothing half-sent); a nested stream errors alone. */
  pumpBroke(pump: StreamPump, error: unknown): void {
    if (pump.id <= this.argumentStreams) return this.owner.fail(error, true)
    this.inputFailed(pump.id, error)
  }

  /** The next id for a stream this side opens. */
  private streamId(): number {
    if (this.nextStream >= WORKER_STREAMS) throw new RangeError(`a call may send at most ${WORKER_STREAMS - 1} streams`)
    return this.nextStream++
  }

  /** Numbers a stream found in an input's item being sent. */
  private openPump(v: unknown): number | undefined {
    if (!isStreamSource(v) || isInput(v)) return undefined
    checkUnsent(v, this.sentSources)
    const id = this.streamId()
    const initial = this.budget.take(id, nestedInitial(this.marks))
    this.pending.add(new StreamPump(this, id, v, { initial, max: this.marks }, () => `stream ${id}`))
    return id
  }

  private inputEnded(stream: number): void {
    const pump = this.pumps.get(stream)
    if (!pump) return
    this.pumps.delete(stream)
    this.budget.give(stream)
    pump.stop(new CancelError('the input has ended'))
    if (this.owner.sent) this.owner.sendFrame(Kind.end, stream)
    this.owner.checkForget()
  }

  private inputFailed(stream: number, error: unknown): void {
    const pump = this.pumps.get(stream)
    if (!pump) return
    this.pumps.delete(stream)
    this.budget.give(stream)
    pump.stop(error)
    if (this.owner.sent) {
      let payload: Buffer
      try {
        payload = valueBytes(error, `${pump.path()} error`)
      } catch {
        payload = valueBytes(new Error(String(error)), 'error')
      }
      this.owner.sendFrame(Kind.error, stream, payload)
    }
    this.owner.checkForget()
  }

  /** The pump of the stream a frame is about (undefined if it stopped already); a stream this side never opened is a protocol error. */
  private pump(f: Frame): StreamPump | undefined {
    const pump = this.pumps.get(f.stream)
    if (!pump && (f.stream === 0 || f.stream >= this.nextStream)) {
      throw new ProtocolError(`worker ${this.owner.where} sent a ${kindName(f.kind)} frame for stream ${f.stream} of call ${this.owner.callId}, which has no such input stream`)
    }
    return pump
  }

  /** Errors the writable side, so a pipe into it stops (and cancels its source) instead of waiting for room that will not come. */
  private errorWritable(err: unknown): void {
    this.writableController?.error(err)
  }
}
