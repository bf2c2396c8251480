/**
 * A session's start: the deadline for the worker's hello (`startTimeout`),
 * paused while the worker's process waits in a scheduler's queue, and the
 * first bytes the worker sent, checked (a hello frame must come first) and
 * kept to say what arrived instead.
 *
 * @module
 */
import { Kind } from './wire/frame.ts'

/** The largest hello frame a worker may send first (it is a small JSON object). */
const MAX_HELLO_BYTES = 4096

/** Bytes kept from before the worker's hello, to say what arrived instead. */
const FIRST_BYTES = 80

/** The deadline and first bytes of one session's start. */
export class StartWatch {
  /** The scheduler's job the worker's process waits in, while it waits in the queue. */
  queuedJob: string | undefined
  private timer: NodeJS.Timeout | undefined
  private first = Buffer.alloc(0)
  private done = false

  constructor(
    private readonly ms: number,
    /** What the deadline's error suggests when the worker sent nothing, or only the start of its hello. */
    private readonly hint: string | undefined,
    /** The deadline passed: `why` says what the worker sent. */
    private readonly expired: (why: string) => void,
  ) {}

  /** The channel is open: the deadline counts from now, unless the worker waits in a queue. */
  start(): void {
    if (this.queuedJob === undefined && !this.done) this.arm()
  }

  /** The worker's process waits in a queue (`job`), or no longer (undefined, `open` once its channel is). */
  queued(job: string | undefined, open: boolean): void {
    if (this.done) return
    this.queuedJob = job
    clearTimeout(this.timer)
    if (job === undefined && open) this.arm()
  }

  /** Bytes before the hello. Returns what was wrong when they cannot begin a hello frame. */
  data(chunk: Uint8Array): string | undefined {
    if (this.first.byteLength < FIRST_BYTES) this.first = Buffer.concat([this.first, chunk.subarray(0, FIRST_BYTES)])
    const b = this.first
    if (b.byteLength >= 5 && (b.readUInt32LE(0) > MAX_HELLO_BYTES || b[4] !== Kind.hello)) return `did not start with a hello frame; ${this.received()}`
    return undefined
  }

  /** The hello came, or the session died: no deadline any more. */
  end(): void {
    this.done = true
    this.queuedJob = undefined
    this.first = Buffer.alloc(0)
    clearTimeout(this.timer)
  }

  private arm(): void {
    this.timer = setTimeout(() => this.expired(this.received()), this.ms)
  }

  /** What the worker sent before its hello, for messages. */
  private received(): string {
    const b = this.first
    const hint = this.hint ? ` (${this.hint})` : ''
    if (b.byteLength === 0) return `it sent nothing${hint}`
    const text = JSON.stringify(b.toString('latin1')).slice(1, -1)
    const sent = `it sent ${b.byteLength >= FIRST_BYTES ? `at least ${b.byteLength}` : b.byteLength} bytes first: "${text}"`
    // The start of a hello frame and no more: something between holds the rest back.
    if (b.byteLength < 5 || (b.readUInt32LE(0) <= MAX_HELLO_BYTES && b[4] === Kind.hello)) return `${sent}, the start of a hello and no more${hint}`
    return `${sent} (is something on the host printing to stdout, such as a login script?)`
  }
}
