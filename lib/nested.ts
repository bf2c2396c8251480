/**
 * Streams nested in values: a `ReadableStream` inside an argument, a yielded
 * item or a result travels as its own sub-stream of the call, with its own
 * credit, and the receiver gets a `ReadableStream` in its place.
 *
 * Sub-streams are numbered per call: the caller opens 1 to 0x7fff (its
 * streamed arguments first), the worker 0x8000 to 0xffff, so either side
 * knows from an id alone who sends on it. Each side numbers upwards and never
 * reuses an id within a call.
 *
 * @module
 */
import type { Credit, Watermarks } from './flow.ts'
import { ItemQueue, ItemStream, type QueueHooks } from './queue.ts'

/** The first id of the sub-streams a worker opens; the caller's are below it. */
export const WORKER_STREAMS = 0x8000

/** The last id a sub-stream may have. */
export const LAST_STREAM = 0xffff

/** A stream's receiving end: its queue (kept by the side that feeds it) and the stream the reader gets. */
export interface Receiver {
  queue: ItemQueue<unknown>
  stream: ItemStream<unknown>
}

/**
 * The safety net for a nested stream that its reader dropped without
 * reading it to its end or cancelling it: once the stream is garbage, its
 * queue is cancelled, so the sender's source is let go. The mechanism is
 * the reader's own `cancel()` (and the cancelling of streams in items that
 * were dropped unread); this only catches what slips through.
 */
const dropped = new FinalizationRegistry<ItemQueue<unknown>>((queue) => {
  if (!queue.closed) void Promise.resolve(queue.cancel('a nested stream was dropped without being read to its end')).catch(() => {})
})

/**
 * Builds the receiving end of a nested stream. The queue must not hold the
 * stream (only the stream holds the queue), so that a stream its reader
 * dropped can be collected and its queue cancelled.
 */
export function openReceiver(marks: Watermarks, initial: Credit, hooks: QueueHooks): Receiver {
  const queue = new ItemQueue<unknown>(marks, hooks, initial)
  const stream = new ItemStream(queue)
  dropped.register(stream, queue)
  return { queue, stream }
}
