/**
 * A call's output: what the function yields, queued within the credit the
 * consumer grants (lib/queue.ts), read as a ReadableStream, by `for await`,
 * or by `map` straight from the queue; and whether the call streams at all
 * (a function that returns a generator does, declared `function*` or not).
 *
 * @module
 */
import { readItems } from '../codec/items.ts'
import type { Watermarks } from '../flow.ts'
import { ItemQueue, ItemStream, type NestedRef, type QueueHooks } from '../queue.ts'
import type { Frame } from '../wire/frame.ts'

/** The output stream of one call. */
export class CallOutput {
  readonly queue: ItemQueue<unknown>
  private stream: ItemStream<unknown> | undefined
  /**
   * True once the worker showed that the function returned a generator (it
   * yielded, or its end frame says so): such a call streams, whether or not
   * the function was declared with `function*`.
   */
  streamed: boolean
  /** Resolves true once the call is known to stream (see {@link streamed}), false once its outcome is known and it does not. */
  readonly shape: Promise<boolean>
  private shapeResolve!: (streams: boolean) => void

  constructor(marks: Watermarks, generator: boolean, hooks: QueueHooks) {
    this.queue = new ItemQueue(marks, hooks)
    this.streamed = generator
    this.shape = new Promise((r) => (this.shapeResolve = r))
  }

  readable(): ItemStream<unknown> {
    return (this.stream ??= new ItemStream(this.queue))
  }

  /**
   * Reads the output without building a stream (for `map`, which reads every
   * call): `next()` from the queue, `return()` cancels the call.
   */
  items(label: string): AsyncIterator<unknown> {
    if (this.stream) throw new TypeError(`the output of ${label} is already being read as a stream`)
    return {
      next: () => this.queue.next(),
      return: async (value?: unknown) => {
        await this.queue.cancel(undefined)
        return { done: true, value }
      },
    }
  }

  /**
   * Queues the items of a data frame; `open` gives the reader of each stream
   * a value names. Returns how many items it held.
   */
  push(f: Frame, open: (id: number, refs: NestedRef[], item: number) => ReadableStream<unknown>): number {
    const nested: NestedRef[] = []
    const items = readItems(f.payload, f.owned, (id, item) => open(id, nested, item))
    this.queue.push(items, f.payload.byteLength, nested.length > 0 ? nested : undefined)
    if (items.length > 0) this.markStreamed()
    return items.length
  }

  /** The worker showed that the function returned a generator. */
  markStreamed(): void {
    this.streamed = true
    this.shapeResolve(true)
  }

  /** The outcome is decided: whether the call streamed is known now. */
  decided(): void {
    this.shapeResolve(this.streamed)
  }
}
