/**
 * The memory transport: workers inside this process, joined to their
 * sessions by in-memory channels. For specs: it has knobs to delay every
 * chunk, to cut the channels (at once, or after so many bytes), and to
 * corrupt a byte, so failure handling can be tested without processes.
 *
 * @module
 */
import { TransportError } from '../errors.ts'
import type { Channel } from '../link.ts'
import { WorkerRuntime } from '../worker/runtime.ts'
import type { Transport, TransportEvents } from './transport.ts'

/** Knobs of the memory transport. */
export interface MemoryOptions {
  /** Workers to run. @default 1 */
  workers?: number
  /** The host name workers report. @default 'memory' */
  host?: string
  /** Milliseconds each chunk takes to cross, either way. @default 0 (next turn of the event loop) */
  delay?: number
  /** Cut a channel once this many bytes crossed it (both ways together). @default Infinity */
  cutAfterBytes?: number
}

interface Pair {
  cut(error: Error): void
}

/** Workers in this process over in-memory channels. */
export class MemoryTransport implements Transport {
  readonly host: string
  readonly up = true
  /** How many worker processes this transport runs. */
  readonly workers: number
  /** Bytes that crossed all channels so far. */
  bytes = 0
  private readonly delay: number
  private readonly cutAfter: number
  private readonly pairs = new Set<Pair>()
  private corruptNext = false

  constructor(options: MemoryOptions = {}) {
    this.host = options.host ?? 'memory'
    this.workers = options.workers ?? 1
    this.delay = options.delay ?? 0
    this.cutAfter = options.cutAfterBytes ?? Infinity
  }

  /** Cuts every channel now, as a dropped connection would. */
  cut(reason = 'the memory channel was cut'): void {
    // A snapshot: a worker started while the cut runs (a call moving on) is a new channel, not cut.
    for (const p of [...this.pairs]) p.cut(new TransportError(reason))
  }

  /** Garbles the kind byte of the next chunk's first frame sent towards the caller (a frame no peer would send). */
  corrupt(): void {
    this.corruptNext = true
  }

  async connect(): Promise<number> {
    return this.workers
  }

  async open(index: number, events: TransportEvents): Promise<Channel> {
    let alive = true
    let bytes = 0
    const pass = (fn: () => void) => {
      if (this.delay > 0) setTimeout(() => alive && fn(), this.delay)
      else setImmediate(() => alive && fn())
    }
    const count = (n: number) => {
      bytes += n
      this.bytes += n
      if (bytes > this.cutAfter) pair.cut(new TransportError(`memory channel ${this.host}/${index} cut after ${bytes} bytes`))
    }
    const worker = new WorkerRuntime({
      write: (chunk) => {
        if (!alive) return
        if (this.corruptNext && chunk.byteLength > 4) {
          this.corruptNext = false
          const copy = Buffer.from(chunk)
          copy[4] = 0xee
          chunk = copy
        }
        count(chunk.byteLength)
        pass(() => events.data(chunk))
      },
      end: () => pass(() => pair.cut(new TransportError(`memory worker ${this.host}/${index} ended its output`))),
      destroy: () => pair.cut(new TransportError(`memory worker ${this.host}/${index} was destroyed`)),
    })
    const pair: Pair = {
      cut: (error) => {
        if (!alive) return
        alive = false
        this.pairs.delete(pair)
        worker.close(error)
        events.close(error)
      },
    }
    this.pairs.add(pair)
    return {
      write: (chunk) => {
        if (!alive) return
        count(chunk.byteLength)
        pass(() => worker.data(chunk))
      },
      end: () => pass(() => {
        worker.close()
        pair.cut(new TransportError(`memory channel ${this.host}/${index} closed`))
      }),
      destroy: () => pair.cut(new TransportError(`memory channel ${this.host}/${index} destroyed`)),
    }
  }

  async close(): Promise<void> {
    this.cut('the memory transport was closed')
  }
}
