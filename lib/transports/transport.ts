/**
 * What a transport is: a way to start worker processes on one host and
 * reach each over a byte channel. The pool asks a transport for channels;
 * sessions speak frames over them.
 *
 * @module
 */
import type { Channel, ChannelEvents } from '../link.ts'

/** What a transport reports about one worker's channel. */
export interface TransportEvents extends ChannelEvents {
  /**
   * Text the worker process wrote to its descriptors 1 and 2, outside the
   * frame channel (user code writing there directly, Node's own errors), in
   * whole lines: what is left without a newline comes when the process ends.
   */
  stderr(text: string): void
  /**
   * The worker's process waits in a scheduler's queue (`job` names it), or
   * no longer (undefined): a worker that waits is not late, and its start
   * deadline is paused meanwhile (see lib/transports/slurm.ts).
   */
  queued?(job: string | undefined): void
}

/** Starts worker processes on one host. */
export interface Transport {
  /** The host's name in messages, logs and `context().host`. */
  readonly host: string
  /** False while the host is known to be unreachable (its last connection failed or dropped); the pool then prefers others. */
  readonly up: boolean
  /** The bundle cache directory on that host, sent to its workers; undefined for the pool's `cacheDir` (or the workers' default). */
  readonly cacheDir?: string
  /** What to suggest when a worker sends nothing before its start deadline (a command host: a command that holds its output back). */
  readonly silenceHint?: string
  /** Connects to the host and prepares it; resolves with how many workers to run there. Called again to reconnect. */
  connect(): Promise<number>
  /** Starts worker process `index` and returns its channel. Rejects with a clear error when it cannot. */
  open(index: number, events: TransportEvents): Promise<Channel>
  /** Waits for the worker processes to exit (their channels were ended), killing stragglers. */
  close(): Promise<void>
  /**
   * Opens a new channel to worker process `index`, still running at
   * `address` on the host (its resume socket: lib/worker/resume-socket.ts)
   * after its connection dropped; the session then resumes over it.
   * Absent where workers do not outlive their channel (local workers).
   */
  reattach?(index: number, address: string, events: TransportEvents): Promise<Channel>
}

const exits = new WeakSet<Error>()

/**
 * Marks `error` as the end of the worker process itself (it exited or was
 * killed), not of the connection to it: a session does not wait to resume
 * a worker that is gone.
 */
export function workerEnded<E extends Error>(error: E): E {
  exits.add(error)
  return error
}

/** True when `error` says the worker process itself ended (see {@link workerEnded}). */
export function isWorkerEnd(error: unknown): boolean {
  return error instanceof Error && exits.has(error)
}

/**
 * The last lines a worker process wrote to its stderr, kept to say why it
 * died (the three transports report a death the same way).
 */
export class StderrTail {
  readonly #lines: string[] = []
  constructor(private readonly keep = 20) {}

  /** Adds a chunk of stderr text. */
  push(text: string): void {
    this.#lines.push(...text.split('\n').filter(Boolean))
    if (this.#lines.length > this.keep) this.#lines.splice(0, this.#lines.length - this.keep)
  }

  /** All the lines kept, one per line. */
  get text(): string {
    return this.#lines.join('\n')
  }

  /** `; its stderr ended with: a | b | c` (the last five lines), or '' when it wrote nothing. */
  describe(): string {
    return this.#lines.length ? `; its stderr ended with: ${this.#lines.slice(-5).join(' | ')}` : ''
  }
}

/**
 * Passes on a worker process's text in whole lines, holding a line back
 * until its newline arrives (or it grows past `max` characters, or
 * {@link flush}). The session gives each piece to the call in flight when
 * there is only one; a line cut where a chunk ended would otherwise be
 * split between a call and no call when the call ends in between.
 */
export class StderrLines {
  #held = ''
  constructor(
    private readonly emit: (text: string) => void,
    private readonly max = 64 * 1024,
  ) {}

  /** Adds a chunk of text; passes on its whole lines. */
  push(text: string): void {
    const nl = text.lastIndexOf('\n')
    if (nl < 0) {
      this.#held += text
      if (this.#held.length >= this.max) this.flush()
      return
    }
    const lines = this.#held + text.slice(0, nl + 1)
    this.#held = text.slice(nl + 1)
    this.emit(lines)
    if (this.#held.length >= this.max) this.flush()
  }

  /** Passes on what is held without its newline (the process ended). */
  flush(): void {
    const held = this.#held
    this.#held = ''
    if (held) this.emit(held)
  }
}
