/**
 * The command's ends of the pipe: stdin into a call's `writable`, a call's
 * items onto stdout, each with the other side's backpressure, and messages,
 * logs and the progress line on stderr. What a line holds is format.ts's.
 *
 * @module
 */
import type { Readable, Writable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { limitDefaults } from '../options.ts'
import type { Format, LineFormat } from './args.ts'
import { decodeLine, FormatError } from './format.ts'

/** Counts for the progress line. */
export interface Counts {
  itemsIn: number
  bytesIn: number
  itemsOut: number
  bytesOut: number
}

/**
 * Reading stdin failed (a socket reset by its peer, a device error): the
 * input is cut short, so the call is cancelled, with exit status 2.
 */
export class StdinError extends Error {
  override get name(): string {
    return 'StdinError'
  }
}

/** Options of {@link feed}. */
export interface FeedOptions {
  /**
   * The longest line taken, in characters: a longer one could not be sent as
   * one item anyway, and reading on would hold all of it (`< /dev/zero`).
   * @default limitDefaults.maxFrameBytes (64 Mi)
   */
  maxLine?: number
}

/**
 * Feeds stdin into `writable`: a line per item, or raw chunks with
 * `--in bytes`. Stdin is pulled only once the call has room (`writer.ready`),
 * so a slow remote pauses the reading. Closes the writable at end of input.
 *
 * Rejects with a {@link StdinError} when reading stdin fails and a
 * {@link FormatError} for a line that does not parse or is too long: the
 * input's own faults. Any other rejection comes from the writable, which
 * fails when the call has ended or failed: that is the call's error, not
 * the input's.
 */
export async function feed(stdin: Readable, writable: WritableStream<unknown>, format: Format, counts: Counts, options: FeedOptions = {}): Promise<void> {
  const maxLine = options.maxLine ?? limitDefaults.maxFrameBytes
  const writer = writable.getWriter()
  const put = async (value: unknown, size: number) => {
    await writer.ready
    // Not awaited: `ready` is the backpressure; a failed write shows in ready and in the call's result.
    writer.write(value).catch(() => {})
    counts.itemsIn++
    counts.bytesIn += size
  }
  // Iterated by hand, so that a failure of stdin itself is told apart from one of the writable.
  const chunks = (stdin as AsyncIterable<Buffer>)[Symbol.asyncIterator]()
  // A character's bytes may be split between two chunks: the decoder keeps the first part for the next.
  const decoder = new StringDecoder('utf8')
  // The current line in pieces, joined once it is whole: a long line is not copied again at every chunk.
  let pieces: string[] = []
  let length = 0
  let n = 0
  const line = async (last: string) => {
    n++
    const text = pieces.length === 0 ? last : pieces.join('') + last
    pieces = []
    length = 0
    if (text.trim() !== '') await put(decodeLine(text, n, format as LineFormat), text.length + 1)
  }
  let reading = true
  try {
    for (;;) {
      let next: IteratorResult<Buffer>
      try {
        next = await chunks.next()
      } catch (err) {
        reading = false
        throw new StdinError(`reading stdin failed: ${(err as Error)?.message ?? String(err)}`, { cause: err })
      }
      if (next.done) break
      const chunk = next.value
      if (format === 'bytes') {
        await put(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), chunk.byteLength)
        continue
      }
      const text = decoder.write(chunk)
      let from = 0
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', from)) {
        if (length + nl - from > maxLine) throw tooLong(n + 1, maxLine)
        await line(text.slice(from, nl))
        from = nl + 1
      }
      if (from < text.length) {
        length += text.length - from
        if (length > maxLine) throw tooLong(n + 1, maxLine)
        pieces.push(text.slice(from))
      }
    }
    reading = false
    if (format !== 'bytes') {
      const rest = decoder.end()
      if (length + rest.length > maxLine) throw tooLong(n + 1, maxLine)
      // The last line may lack its newline; an empty one after a final newline is no line.
      if (length + rest.length > 0) await line(rest)
    }
    await writer.ready
    await writer.close()
  } finally {
    // Stopped early (a bad line, a call that ended): stop reading stdin, as a for-await loop would.
    if (reading) void chunks.return?.().catch(() => {})
  }
}

function tooLong(n: number, maxLine: number): FormatError {
  return new FormatError(`stdin line ${n} is longer than ${maxLine} characters, more than an item can be; for bulk data use --in bytes (raw chunks)`)
}

/** Thrown by {@link Output.write} once the reader of stdout has gone (EPIPE). */
export class ClosedOutput extends Error {}

/**
 * One of the command's outputs (stdout, stderr). An output that fails emits
 * 'error', which with no listener is an uncaught exception: a reader that
 * went away (`| head`, EPIPE) would crash the command, even on a write long
 * after the call ended. So a listener stays for the life of the process and
 * notes what happened; `closed` resolves then.
 */
class Sink {
  readonly closed: Promise<void>
  #gone = false
  #failure: Error | undefined

  constructor(readonly stream: Writable) {
    this.closed = new Promise((resolve) => {
      stream.on('error', (err: NodeJS.ErrnoException) => {
        this.#gone = true
        if (err.code !== 'EPIPE') this.#failure ??= err
        resolve()
      })
    })
  }

  /** True once the output is closed or failed: nothing more is written to it. */
  get gone(): boolean {
    return this.#gone
  }

  /** Why the output failed, other than its reader closing it (EPIPE). */
  get failure(): Error | undefined {
    return this.#failure
  }
}

/**
 * Writes to stdout with its backpressure: a write that fills the stream's
 * buffer waits for 'drain', so a slow reader stops the reading of the
 * call's items, and so the remote generator. A reader that went away
 * (EPIPE) makes `closed` resolve.
 */
export class Output extends Sink {
  #wake: (() => void) | undefined

  constructor(stdout: Writable) {
    super(stdout)
    void this.closed.then(() => this.#wake?.())
  }

  async write(data: string | Uint8Array): Promise<void> {
    if (this.gone) throw new ClosedOutput()
    if (this.stream.write(data)) return
    await new Promise<void>((resolve) => {
      this.#wake = resolve
      this.stream.once('drain', resolve)
    })
    this.stream.off('drain', this.#wake!)
    this.#wake = undefined
    if (this.gone) throw new ClosedOutput()
  }

  /** Resolves when what was written has been handed to the OS (or stdout is gone). */
  flush(): Promise<void> {
    if (this.gone) return Promise.resolve()
    return new Promise((resolve) => {
      this.stream.write('', () => resolve())
      void this.closed.then(resolve)
    })
  }
}

/**
 * The command's stderr: messages, remote logs and the progress line all go
 * through here. Once its reader has gone (`2>&1 | head`) or it failed,
 * what is written is dropped: nothing printed here can crash the command.
 */
export class Stderr extends Sink {
  /** True when stderr is a terminal: only then is the progress line drawn. */
  readonly isTTY: boolean
  #progress: Progress | undefined

  constructor(stderr: Writable & { isTTY?: boolean }) {
    super(stderr)
    this.isTTY = stderr.isTTY === true
  }

  /** Writes `text` as it is (the progress line uses this); nothing once stderr is gone. */
  write(text: string): void {
    if (!this.gone) this.stream.write(text)
  }

  /**
   * Writes whole lines: a message, a remote log line, a remote stack. The
   * progress line is erased first (it is drawn again at its next tick), so
   * what is printed starts a line of its own instead of being glued to it.
   */
  print(text: string): void {
    this.#progress?.clear()
    this.write(text)
  }

  /** Prints `farpipe: message` on a line. */
  complain(message: string): void {
    this.print(`farpipe: ${message}\n`)
  }

  /** Starts drawing `counts` every 250 ms, when stderr is a terminal. */
  showProgress(counts: Counts): Progress {
    this.#progress?.stop()
    this.#progress = new Progress(counts, this)
    return this.#progress
  }

  /** Stops drawing the progress line and erases it. */
  hideProgress(): void {
    this.#progress?.stop()
    this.#progress = undefined
  }
}

/** Draws `items, bytes, rate` on stderr every 250 ms when stderr is a terminal; {@link Stderr.print} clears it before anything else is printed there. */
export class Progress {
  readonly #timer: NodeJS.Timeout | undefined
  readonly #start = Date.now()
  #shown = false

  constructor(
    readonly counts: Counts,
    readonly err: Stderr,
  ) {
    if (err.isTTY) {
      this.#timer = setInterval(() => this.draw(), 250)
      this.#timer.unref()
    }
  }

  /** Draws the line now (the timer does every 250 ms). */
  draw(): void {
    const { itemsIn, bytesIn, itemsOut, bytesOut } = this.counts
    const s = Math.max(0.001, (Date.now() - this.#start) / 1000)
    const mib = (b: number) => (b / 1048576).toFixed(1)
    const input = itemsIn > 0 ? `in ${itemsIn} items ${mib(bytesIn)} MiB, ` : ''
    this.err.write(`\r\x1b[K${input}out ${itemsOut} items ${mib(bytesOut)} MiB, ${(itemsOut / s).toFixed(0)} items/s ${mib(bytesOut / s)} MiB/s`)
    this.#shown = true
  }

  /** Erases the progress line (it is drawn again at the next tick). */
  clear(): void {
    if (this.#shown) this.err.write('\r\x1b[K')
    this.#shown = false
  }

  stop(): void {
    clearInterval(this.#timer)
    this.clear()
  }
}
