/**
 * Log lines: what a worker prints (log frames, and its own stderr), cut into
 * lines per descriptor and call before they are passed on. A line printed
 * in pieces waits for its newline; a line longer than {@link MAX_LOG_LINE}
 * is passed on in pieces of that length, and the partial lines of all calls
 * together are bounded, so a worker that never prints a newline cannot grow
 * the caller's memory.
 *
 * @module
 */

/** The longest log line passed on whole; longer ones are passed on in pieces of this many characters. */
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

export const MAX_LOG_LINE = 64 * 1024

/**
 * The most characters of partial lines (printed without their newline yet)
 * kept for all the calls of a worker together; past it, each is passed on as
 * it is. Each is bounded by {@link MAX_LOG_LINE} already, but a worker with
 * thousands of calls printing half lines would hold thousands of them.
 */
const MAX_PARTIAL_TOTAL = 1024 * 1024

/** The lines of one worker's output, as they complete. */
export class LogLines {
  /** Partial lines per descriptor and call, until their newline arrives: pieces and their total length, so a long line is joined once. */
  private readonly partial = new Map<string, { pieces: string[]; length: number }>()
  /** Characters held in {@link partial}, all keys together (bounded by {@link MAX_PARTIAL_TOTAL}). */
  private partialLength = 0

  /** `emit` receives each line (without its newline), with its descriptor and call. */
  constructor(private readonly emit: (fd: number, line: string, callId: number) => void) {}

  /**
   * Passes on the complete lines of `text`. A partial line waits for its
   * newline in pieces (joined once, so a line that arrives in many chunks
   * costs no more than one that arrives whole); a line longer than
   * {@link MAX_LOG_LINE} is passed on in pieces of that length, so a worker
   * that never prints a newline cannot grow the caller's memory. Without
   * `keepPartial` (a call that has ended), nothing waits: a partial line is
   * passed on as it is.
   */
  push(fd: number, text: string, callId: number, keepPartial = true): void {
    const key = `${fd}:${callId}`
    let part = this.partial.get(key)
    const nl = text.lastIndexOf('\n')
    if (nl < 0) {
      if (!keepPartial) {
        if (text) this.emitLines(fd, text, callId)
        return
      }
      if (!part) this.partial.set(key, (part = { pieces: [], length: 0 }))
      part.pieces.push(text)
      part.length += text.length
      this.partialLength += text.length
      if (part.length >= MAX_LOG_LINE) {
        const joined = part.pieces.join('')
        let at = 0
        for (; joined.length - at >= MAX_LOG_LINE; at += MAX_LOG_LINE) this.emit(fd, joined.slice(at, at + MAX_LOG_LINE), callId)
        part.pieces = at < joined.length ? [joined.slice(at)] : []
        this.partialLength -= at
        part.length = joined.length - at
      }
      // Partial lines of many calls at once are bounded together too: past the bound, every one is passed on as it is.
      if (this.partialLength > MAX_PARTIAL_TOTAL) this.flushAll()
      return
    }
    const head = part ? part.pieces.join('') + text.slice(0, nl) : text.slice(0, nl)
    if (part) this.partialLength -= part.length
    const rest = text.slice(nl + 1)
    if (rest && keepPartial) {
      this.partial.set(key, { pieces: [rest], length: rest.length })
      this.partialLength += rest.length
    } else this.partial.delete(key)
    this.emitLines(fd, head, callId)
    if (rest && !keepPartial) this.emitLines(fd, rest, callId)
    else if (rest.length >= MAX_LOG_LINE) this.push(fd, '', callId)
  }

  /** Passes on each line of `text` (no newline at its end), in pieces of at most {@link MAX_LOG_LINE}. */
  private emitLines(fd: number, text: string, callId: number): void {
    for (const line of text.split('\n')) {
      for (let at = 0; at === 0 || at < line.length; at += MAX_LOG_LINE) this.emit(fd, line.slice(at, at + MAX_LOG_LINE), callId)
    }
  }

  /** Passes on what call `callId` printed without a final newline (it has ended). */
  flushCall(callId: number): void {
    this.flushKey(`1:${callId}`)
    this.flushKey(`2:${callId}`)
  }

  /** Passes on every partial line as it is (the worker is gone, or they grew past their bound). */
  flushAll(): void {
    for (const key of [...this.partial.keys()]) this.flushKey(key)
  }

  private flushKey(key: string): void {
    const part = this.partial.get(key)
    if (!part) return
    this.partial.delete(key)
    this.partialLength -= part.length
    const [fd, callId] = key.split(':').map(Number) as [number, number]
    const line = part.pieces.join('')
    if (line) this.emit(fd, line, callId)
  }
}
