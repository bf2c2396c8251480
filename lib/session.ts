/**
 * A session: the caller's end of one worker process. It gives calls their
 * ids, routes each arriving frame to its call, answers the worker's
 * requests for bundles, passes on what the worker logs (cut into lines by
 * log-lines.ts), and, when the channel goes, fails every call in flight
 * with a `TransportError` at once.
 *
 * @module
 */
import { bundleByHash } from './bundle.ts'
import { streamsInItems } from './codec/items.ts'
import { ProtocolError, TransportError } from './errors.ts'
import { Link, type Channel } from './link.ts'
import { LogLines, printLog, type LogEntry } from './log-lines.ts'

export { printLog, type LogEntry }
import type { Limits } from './options.ts'
import { Kind, kindName, PROTOCOL_VERSION, type Frame } from './wire/frame.ts'
import { payloads, type CallerHello, type ResumeAnswer, type WorkerHello } from './wire/payloads.ts'
import { SessionResume } from './session-resume.ts'
import { StartWatch } from './session-start.ts'

/** What a call does with the frames of its id. */
export interface SessionCall {
  /** A frame for this call. */
  frame(f: Frame): void
  /** The session died: the call fails with this error. */
  lost(error: TransportError): void
}

/**
 * What a worker slot counts (`Pool.stats()` shows them, as part of each
 * worker's stats); the sessions that fill the slot add to the same counters.
 */
export interface WorkerCounters {
  /** Calls sent to it. */
  calls: number
  /** Calls that failed (remote errors, timeouts, lost workers; not cancels). */
  errors: number
  /** Items it yielded to this side. */
  itemsIn: number
  /** Their bytes on the wire. */
  bytesIn: number
  /** Items of streamed arguments sent to it. */
  itemsOut: number
  /** Their bytes on the wire. */
  bytesOut: number
  /** Worker processes that ended in this slot (died, were replaced, or closed). */
  exits: number
}

/** Options of a session. */
export interface SessionOptions {
  /** `host` and index of the worker, and how many the host runs. */
  host: string
  worker: number
  workers: number
  /** Bundle cache directory on the worker's host (the worker's default when absent). */
  cacheDir?: string
  limits?: Partial<Limits>
  onLog?: (entry: LogEntry) => void
  /** Milliseconds the worker has to say hello once its channel is open. @default 30000 */
  startTimeout?: number
  /** What the start deadline's error suggests when the worker sent nothing at all (see `Transport.silenceHint`). */
  silenceHint?: string
  /** Where its counts go (its worker slot's). @default counters of its own */
  counters?: WorkerCounters
  /**
   * Ms the session may stay without a channel, its calls paused, for a new
   * one to resume it (lib/replay.ts); 0 or absent: a dropped channel fails
   * its calls at once. Only where the transport can reach the worker again.
   */
  resumeWindow?: number
}

/** How long a retired worker has to exit once its channel is ended, before it is killed. */
const RETIRE_KILL_MS = 1000

/** How often a retired worker is asked whether it still answers, and how long it has to. */
const RETIRED_PING_MS = 2000

/** The caller's end of one worker process. */
export class Session extends Link {
  readonly host: string
  readonly worker: number
  /** Resolves with the worker's hello; rejects if it dies or speaks another protocol first. */
  readonly ready: Promise<WorkerHello>
  private readyResolve!: (h: WorkerHello) => void
  private readyReject!: (e: unknown) => void
  private readonly hello: CallerHello
  private readonly calls = new Map<number, SessionCall>()
  /** Calls that ended while streams nested in their values are still open: frames still reach them, but they are not load. */
  private readonly lingering = new Map<number, SessionCall>()
  private nextId = 1
  /** Call frames sent, and bundles the worker asked for: a worker asks once per bundle, so many more asks than calls is a flood. */
  private callsSent = 0
  private needs = 0
  private readonly onLog: (entry: LogEntry) => void
  /** What the worker printed, cut into lines (see log-lines.ts). */
  private readonly lines = new LogLines((fd, line, callId) => this.onLog({ where: this.where, fd, line, callId }))
  private readonly startWatch: StartWatch
  private helloSeen = false
  /** The first bytes the worker sent, kept until its hello (to say what arrived instead). */
  /** Set once the worker was retired: it takes no new calls and is ended when its calls are done. */
  retired = false
  /** Called once when the session is retired (the pool starts a fresh worker in its place). */
  onRetire: (() => void) | undefined
  /** Called when a call registers, and when one is released (the pool hands out free workers). */
  onRegister: (() => void) | undefined
  onRelease: (() => void) | undefined
  /** Calls, errors, items and bytes of this worker (its slot's counters). */
  readonly counters: WorkerCounters
  /** Why the session is gone, once it is. */
  dead: TransportError | undefined
  /** Called once when the session dies (the pool replaces it). */
  onDeath: ((error: TransportError) => void) | undefined
  /** Called when its channel dropped and it waits to be resumed (the pool reconnects and calls {@link resume}). */
  onDetach: ((error: Error) => void) | undefined
  /** Called when a new channel resumed it. */
  onResume: (() => void) | undefined
  /** Resuming after a dropped channel (session-resume.ts). */
  private readonly resuming: SessionResume
  /** Set once the session is ended or destroyed on purpose: a channel that closes then is not a dropped one. */
  private ending = false

  constructor(options: SessionOptions) {
    super(options.limits)
    this.host = options.host
    this.worker = options.worker
    this.onLog = options.onLog ?? printLog
    const startTimeout = options.startTimeout ?? 30_000
    this.startWatch = new StartWatch(startTimeout, options.silenceHint, (why) => this.destroyWith(new TransportError(`worker ${this.where} did not say hello within ${startTimeout} ms; ${why}`)))
    this.counters = options.counters ?? { calls: 0, errors: 0, itemsIn: 0, bytesIn: 0, itemsOut: 0, bytesOut: 0, exits: 0 }
    this.ready = new Promise<WorkerHello>((resolve, reject) => {
      this.readyResolve = resolve
      this.readyReject = reject
    })
    this.ready.catch(() => {})
    const session = this
    this.resuming = new SessionResume(options.resumeWindow ?? 0, {
      where: this.where,
      get replay() {
        return session.replay
      },
      set replay(r) {
        session.replay = r
      },
      detachChannel: () => this.detachChannel(),
      resumeOn: (channel, received) => this.resumeOn(channel, received),
      sendOnChannel: (channel, kind, payload) => this.sendOnChannel(channel, kind, payload),
      fail: (error) => this.closed(error),
      detached: (error) => this.onDetach?.(error),
      resumed: () => this.onResume?.(),
    })
    const ask = this.resuming.ask
    this.hello = { v: PROTOCOL_VERSION, host: options.host, worker: options.worker, workers: options.workers, cacheDir: options.cacheDir, limits: this.limits, ...(ask ? { resume: ask } : {}) }
  }

  /** `host/worker`, for messages. */
  get where(): string {
    return `${this.host}/${this.worker}`
  }

  /** Calls in flight (for least-loaded dispatch). */
  get load(): number {
    return this.calls.size
  }

  /** True while the session can take new calls. */
  get usable(): boolean {
    return !this.dead && !this.retired && !this.detached
  }

  /** True while its channel dropped and it waits to be resumed. */
  get detached(): boolean {
    return this.resuming.waiting !== undefined
  }

  /** Bytes kept to send again after a drop (lib/replay.ts), now and at most. */
  get resumeKept(): { now: number; peak: number } {
    return { now: this.replay?.kept ?? 0, peak: this.replay?.peak ?? 0 }
  }

  /** Where a new channel reaches the worker, when the session is resumable. */
  get resumeAddress(): string | undefined {
    return this.resuming.address
  }

  /** Connects the channel and says hello. The worker must answer within `startTimeout`. */
  start(channel: Channel): void {
    this.attach(channel)
    this.startWatch.start()
    this.send(Kind.hello, 0, 0, payloads.json(this.hello))
    this.flush()
    this.resuming.started()
  }

  /**
   * Resumes the session over `channel`, a new channel to the same worker
   * process (whose data and close reach this session): the worker is shown
   * the session's token and what this side received, and each side sends
   * again what the other missed. Resolves once the calls go on; rejects when
   * the worker refuses or the channel closes first (the pool may try again
   * within the window).
   */
  resume(channel: Channel): Promise<void> {
    return this.resuming.resume(channel)
  }

  /** While detached: why the last attempt to resume failed (it goes into the error if the window passes). */
  resumeFailed(error: Error): void {
    this.resuming.failed(error)
  }

  /** Bytes from the worker. Until its hello, the first ones are kept and checked: a login script that prints to stdout is named at once. */
  override data(chunk: Uint8Array): void {
    if (!this.helloSeen && !this.dead) {
      const wrong = this.startWatch.data(chunk)
      if (wrong) return this.protocolFailure(new ProtocolError(`worker ${this.where} ${wrong}`))
    }
    super.data(chunk)
  }

  /** The scheduler's job this worker's process waits in, while it waits in the queue (see {@link queued}). */
  get queuedJob(): string | undefined {
    return this.startWatch.queuedJob
  }

  /**
   * The worker's process waits in a scheduler's queue (`job`), or no longer
   * (undefined): its start deadline is paused while it waits, and counts
   * again from when it leaves the queue.
   */
  queued(job: string | undefined): void {
    if (!this.helloSeen && !this.dead) this.startWatch.queued(job, this.channel !== undefined)
  }

  /** Registers a call and returns its id; the caller then sends its call frame. */
  register(call: SessionCall): number {
    if (this.dead) throw this.dead
    const id = this.nextId++
    if (this.nextId > 0xffffffff) this.nextId = 1
    this.calls.set(id, call)
    this.callsSent++
    this.counters.calls++
    this.onRegister?.()
    return id
  }

  /**
   * Forgets a finished call, and passes on what it printed without a final
   * newline. With `lingering`, frames for the call still reach it (streams
   * nested in its values are open) until {@link forget}; it no longer counts
   * as a call in flight.
   */
  release(id: number, lingering?: SessionCall): void {
    if (!this.calls.delete(id)) return
    if (lingering && !this.dead) this.lingering.set(id, lingering)
    this.lines.flushCall(id)
    this.drain()
    this.onRelease?.()
  }

  /** A lingering call's nested streams have all ended: its frames are no longer wanted. */
  forget(id: number): void {
    if (this.lingering.delete(id)) this.drain()
  }

  /**
   * Retires the worker: a call on it did not stop when cancelled, so it may
   * be stuck for good. It takes no new calls; once its other calls are done
   * its channel is ended, and it is killed if it does not exit.
   */
  stuck(why: string): void {
    if (this.dead || this.retired) return
    this.retired = true
    this.onLog({ where: this.where, fd: 2, line: `farpipe: ${why}; worker ${this.where} is replaced`, callId: 0 })
    this.onRetire?.()
    this.drain()
    this.ping()
  }

  private pingTimer: NodeJS.Timeout | undefined
  private pongWanted = false

  /**
   * Asks a retired worker whether it still answers while it has calls. One
   * stuck in a loop or stopped cannot: its other calls would never end, so
   * it is destroyed and they fail with a TransportError (a worker that only
   * has a call awaiting forever answers, and its other calls go on).
   */
  private ping(): void {
    if (this.dead || this.calls.size + this.lingering.size === 0) return
    // No answer can come while the connection is down: it is asked again once it is back.
    if (!this.detached) {
      this.pongWanted = true
      this.send(Kind.ping, 0, 0, undefined, true)
    }
    this.pingTimer = setTimeout(() => {
      if (this.detached) this.ping()
      else if (this.pongWanted) this.destroy(`it stopped answering (no answer to a ping within ${RETIRED_PING_MS} ms) after a call on it did not stop`)
    }, RETIRED_PING_MS).unref()
  }

  private drain(): void {
    if (!this.retired || this.dead || this.calls.size + this.lingering.size > 0) return
    this.end()
    setTimeout(() => {
      if (!this.dead) this.destroy('it was retired and did not exit')
    }, RETIRE_KILL_MS).unref()
  }

  /** The worker's process id on its host, once it said hello. */
  pid: number | undefined

  /**
   * Feeds a chunk of what the worker process wrote to its own descriptors 1
   * and 2 (outside the frame channel: a logger writing with
   * `fs.writeSync(1, …)`, a child process with inherited stdio, Node's own
   * errors) to the log, on fd 2. It is the line of the call in flight when
   * there is exactly one, which then most likely wrote it (so `farpipe run`
   * shows it as that call's output), and of no call (0) otherwise. This text
   * comes apart from the frames, so what a call writes just before it ends
   * may arrive after its end, and then belongs to no call.
   */
  stderr(text: string): void {
    const only = this.calls.size === 1 ? this.calls.keys().next().value : undefined
    this.lines.push(2, text, only ?? 0)
  }

  protected frame(f: Frame): void {
    switch (f.kind) {
      case Kind.hello: {
        if (this.helloSeen) throw new ProtocolError(`worker ${this.where} said hello twice`)
        const h = payloads.readJson<WorkerHello>(f.payload)
        if (typeof h !== 'object' || h === null) throw new ProtocolError(`worker ${this.where} sent a hello that is not an object`)
        if (h.v !== PROTOCOL_VERSION) throw new ProtocolError(`worker ${this.where} speaks protocol ${h.v}, this caller ${PROTOCOL_VERSION}`)
        this.helloSeen = true
        this.pid = typeof h.pid === 'number' ? h.pid : undefined
        this.resuming.hello(h)
        this.startWatch.end()
        this.readyResolve(h)
        return
      }
      case Kind.log: {
        const { fd, text } = payloads.readLog(f.payload)
        if (fd !== 1 && fd !== 2) throw new ProtocolError(`worker ${this.where} sent a log line for file descriptor ${fd} (only 1 and 2 are logged)`)
        if (f.call !== 0 && f.call >= this.nextId) throw new ProtocolError(`worker ${this.where} sent a log line for call ${f.call}, which was never started`)
        // What a call prints after it ended (a timer it left running) is passed on at once: no partial line is kept for it.
        const live = f.call === 0 || this.calls.has(f.call) || this.lingering.has(f.call)
        this.lines.push(fd, text, f.call, live)
        return
      }
      case Kind.resumed:
        return this.resuming.answered(payloads.readJson<ResumeAnswer>(f.payload))
      case Kind.pong: {
        if (!this.pongWanted) throw new ProtocolError(`worker ${this.where} sent a pong that was not asked for`)
        this.pongWanted = false
        clearTimeout(this.pingTimer)
        this.pingTimer = setTimeout(() => this.ping(), RETIRED_PING_MS).unref()
        return
      }
      case Kind.need: {
        // Each answer is a whole bundle written towards the worker: a worker
        // that asks far more often than calls were sent is flooding (and may
        // not be reading what it asked for), so it is cut off.
        if (++this.needs > this.callsSent + 8) {
          throw new ProtocolError(`worker ${this.where} asked for bundles ${this.needs} times for ${this.callsSent} calls`)
        }
        const hash = Buffer.from(f.payload).toString('utf8')
        const bundle = bundleByHash(hash)
        // An unknown hash gets an empty bundle: the worker's hash check then fails that call, not the session.
        this.send(Kind.bundle, 0, 0, payloads.bundle(hash, bundle?.code ?? new Uint8Array(0)))
        return
      }
      default: {
        if (!this.helloSeen) throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame before its hello`)
        if (f.kind === Kind.call || f.kind === Kind.bundle || f.kind === Kind.ping || f.kind > Kind.streams) {
          throw new ProtocolError(`unexpected ${kindName(f.kind)} frame from worker ${this.where}`)
        }
        const call = this.calls.get(f.call) ?? this.lingering.get(f.call)
        if (call) return call.frame(f)
        // Items that crossed the end of their call: the streams they name are stopped, not left waiting for a reader.
        if (f.kind === Kind.data && f.call !== 0 && f.call < this.nextId) streamsInItems(f.payload, (id) => this.send(Kind.cancel, f.call, id))
        // A frame for a call already released (an item that crossed a cancel) is dropped; one for a call never started is a lie.
        if (f.call === 0 || f.call >= this.nextId) throw new ProtocolError(`worker ${this.where} sent a ${kindName(f.kind)} frame for call ${f.call}, which was never started`)
      }
    }
  }

  protected closed(why?: Error): void {
    if (this.dead) return
    // A dropped channel on a resumable session: the calls wait for a new one.
    const resuming = this.resuming.closed(why, this.ending, this.corrupt)
    if (resuming.waits) return
    const { cause } = resuming
    const detail = cause ? `: ${cause.message}` : ''
    const err = cause instanceof TransportError ? cause : new TransportError(`worker ${this.where} is gone${detail}`, { cause })
    this.dead = err
    this.closedWith = err
    this.startWatch.end()
    clearTimeout(this.pingTimer)
    this.readyReject(err)
    this.lines.flushAll()
    const calls = [...this.calls.values(), ...this.lingering.values()]
    this.calls.clear()
    this.lingering.clear()
    for (const c of calls) c.lost(err)
    this.onDeath?.(err)
  }

  /** Closes the session: the worker sees the end of its input and exits. */
  end(): void {
    this.ending = true
    // On a resumable session the end of input alone is a dropped channel: `bye` says this one is meant.
    if (this.replay && !this.dead) this.send(Kind.bye, 0, 0)
    this.flush()
    this.channel?.end()
    // Without a channel (a pool closed while the host is unreachable) the worker ends at its window.
    if (this.detached) this.closed(new TransportError(`worker ${this.where} was closed while its connection was down; it ends on its host when its resume window passes`, { reason: 'resume' }))
  }

  /** Gives up on a session that waits to resume: its calls fail with `error`. */
  abandon(error: TransportError): void {
    this.destroyWith(error)
  }

  /** Tears the session down at once. */
  destroy(reason = 'the session was destroyed'): void {
    this.destroyWith(new TransportError(`worker ${this.where}: ${reason}`))
  }

  private destroyWith(err: TransportError): void {
    this.ending = true
    const alive = !this.dead
    this.closed(err)
    // A retired worker may be stuck for good: where closing its channel would not end it, kill it by its pid
    // (only while its channel is open: once it closed, the pid may belong to another process).
    if (alive && this.retired && this.pid !== undefined) this.channel?.kill?.(this.pid)
    this.channel?.destroy()
  }
}
