/**
 * A session: the caller's end of one worker process. It gives calls their
 * ids, routes each arriving frame to its call, answers the worker's
 * requests for bundles, prints what the worker logs, and, when the
 * channel goes, fails every call in flight with a `TransportError` at once.
 *
 * @module
 */
import { bundleByHash } from './bundle.ts'
import { ProtocolError, TransportError } from './errors.ts'
import { Link, type Channel } from './link.ts'
import type { Limits } from './options.ts'
import { Kind, kindName, payloads, PROTOCOL_VERSION, type Frame } from './wire.ts'
import type { CallerHello, WorkerHello } from './worker/runtime.ts'

/** A line a remote function printed. */
export interface LogEntry {
  /** `host/worker`, e.g. `local/0` or `gpu-1/3`. */
  where: string
  /** 1 for stdout, 2 for stderr (including the worker process's own stderr). */
  fd: number
  /** The text, one line without its newline. */
  line: string
  /** The id of the call that printed it (0 when not inside a call). */
  callId: number
}

/** Prints a log entry the default way: to this process's stdout or stderr, prefixed with where it ran. */
export function printLog(entry: LogEntry): void {
  const stream = entry.fd === 2 ? process.stderr : process.stdout
  stream.write(`[${entry.where}] ${entry.line}\n`)
}

/** What a call does with the frames of its id. */
export interface SessionCall {
  /** A frame for this call. */
  frame(f: Frame): void
  /** The session died: the call fails with this error. */
  lost(error: TransportError): void
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
}

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
  private nextId = 1
  private readonly onLog: (entry: LogEntry) => void
  /** Partial lines per descriptor, until their newline arrives. */
  private readonly partial = new Map<string, string>()
  /** Why the session is gone, once it is. */
  dead: TransportError | undefined
  /** Called once when the session dies (the pool replaces it). */
  onDeath: ((error: TransportError) => void) | undefined

  constructor(options: SessionOptions) {
    super(options.limits)
    this.host = options.host
    this.worker = options.worker
    this.onLog = options.onLog ?? printLog
    this.ready = new Promise<WorkerHello>((resolve, reject) => {
      this.readyResolve = resolve
      this.readyReject = reject
    })
    this.ready.catch(() => {})
    this.hello = { v: PROTOCOL_VERSION, host: options.host, worker: options.worker, workers: options.workers, cacheDir: options.cacheDir, limits: this.limits }
  }

  /** `host/worker`, for messages. */
  get where(): string {
    return `${this.host}/${this.worker}`
  }

  /** Calls in flight (for least-loaded dispatch). */
  get load(): number {
    return this.calls.size
  }

  /** Connects the channel and says hello. */
  start(channel: Channel): void {
    this.attach(channel)
    this.send(Kind.hello, 0, 0, payloads.json(this.hello))
    this.flush()
  }

  /** Registers a call and returns its id; the caller then sends its call frame. */
  register(call: SessionCall): number {
    if (this.dead) throw this.dead
    const id = this.nextId++
    if (this.nextId > 0xffffffff) this.nextId = 1
    this.calls.set(id, call)
    return id
  }

  /** Forgets a finished call. */
  release(id: number): void {
    this.calls.delete(id)
  }

  /** Feeds a chunk of the worker process's own stderr (outside the frame channel) to the log. */
  stderr(text: string): void {
    this.logText(2, text, 0)
  }

  protected frame(f: Frame): void {
    switch (f.kind) {
      case Kind.hello: {
        const h = payloads.readJson<WorkerHello>(f.payload)
        if (h.v !== PROTOCOL_VERSION) throw new ProtocolError(`worker ${this.where} speaks protocol ${h.v}, this caller ${PROTOCOL_VERSION}`)
        this.readyResolve(h)
        return
      }
      case Kind.log: {
        const { fd, text } = payloads.readLog(f.payload)
        this.logText(fd, text, f.call)
        return
      }
      case Kind.need: {
        const hash = Buffer.from(f.payload).toString('utf8')
        const bundle = bundleByHash(hash)
        // An unknown hash gets an empty bundle: the worker's hash check then fails that call, not the session.
        this.send(Kind.bundle, 0, 0, payloads.bundle(hash, bundle?.code ?? new Uint8Array(0)))
        return
      }
      default: {
        if (f.kind === Kind.call || f.kind === Kind.bundle || f.kind > Kind.cancelled) {
          throw new ProtocolError(`unexpected ${kindName(f.kind)} frame from worker ${this.where}`)
        }
        // A frame for a call already released (an item that crossed a cancel) is dropped.
        this.calls.get(f.call)?.frame(f)
      }
    }
  }

  protected closed(cause?: Error): void {
    if (this.dead) return
    const detail = cause ? `: ${cause.message}` : ''
    const err = cause instanceof TransportError ? cause : new TransportError(`worker ${this.where} is gone${detail}`, { cause })
    this.dead = err
    this.closedWith = err
    this.readyReject(err)
    for (const [fd, text] of this.partial) if (text) this.onLog({ where: this.where, fd: Number(fd.split(':')[0]), line: text, callId: 0 })
    this.partial.clear()
    const calls = [...this.calls.values()]
    this.calls.clear()
    for (const c of calls) c.lost(err)
    this.onDeath?.(err)
  }

  /** Closes the session: the worker sees the end of its input and exits. */
  end(): void {
    this.flush()
    this.channel?.end()
  }

  /** Tears the session down at once. */
  destroy(reason = 'the session was destroyed'): void {
    this.closed(new TransportError(`worker ${this.where}: ${reason}`))
    this.channel?.destroy()
  }

  private logText(fd: number, text: string, callId: number): void {
    const key = `${fd}:${callId}`
    const lines = ((this.partial.get(key) ?? '') + text).split('\n')
    const rest = lines.pop() ?? ''
    if (rest) this.partial.set(key, rest)
    else this.partial.delete(key)
    for (const line of lines) this.onLog({ where: this.where, fd, line, callId })
  }
}

