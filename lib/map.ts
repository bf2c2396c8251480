/**
 * `Pool.map`: one call per item of a source, spread over the pool, their
 * results as one stream. It survives a host's death: an item whose call was
 * lost with its worker or connection (a `TransportError`) before anything of
 * it was passed on is run again elsewhere, once; every result arrives
 * exactly once. At most `concurrency` items are in flight (started and not
 * yet passed on), so a consumer that stops reading stops the source.
 *
 * @module
 */
import { coreOf, type RemoteCall } from './call.ts'
import type { UnderlyingSource } from 'node:stream/web'
import { MapError, TransportError } from './errors.ts'

/** How far a map has got; read it from {@link MapStream.progress} while it runs. */
export interface MapProgress {
  /** Items read from the source so far. */
  started: number
  /** Items whose results were all passed on. */
  done: number
  /** Items started and not yet passed on (at most `concurrency`). */
  inFlight: number
  /** Calls run again because their worker or host was lost. */
  rerun: number
  /** Items that failed (the stream errors at the first). */
  failed: number
}

/**
 * The stream `Pool.map` returns: a ReadableStream of the results, with the
 * map's {@link MapProgress} readable while it runs (for a progress bar).
 */
export class MapStream<T> extends ReadableStream<T> {
  readonly #progress: MapProgress

  /** @internal */
  constructor(source: UnderlyingSource<T>, progress: MapProgress) {
    super(source, { highWaterMark: 0 })
    this.#progress = progress
  }

  /** A snapshot of how far the map has got. */
  get progress(): Readonly<MapProgress> {
    return { ...this.#progress }
  }
}

/** What the map needs from the pool. */
export interface MapDeps {
  /** Starts the call of one item; `avoid` names a host to keep away from when another is up. */
  run(item: unknown, avoid: string | undefined): RemoteCall<unknown, unknown, unknown>
  /** The function's name, for messages (its export name, once known). */
  name(): string
}

/** Options of a map, checked. */
export interface MapSettings {
  concurrency: number
  ordered: boolean
}

/** How many times an item may run: once, and once more after a lost host. */
const ATTEMPTS = 2

/** One item of the source and the call (or calls) that produce its results. */
class Task {
  call!: RemoteCall<unknown, unknown, unknown>
  attempts = 0
  /** Something of this item was passed on: running it again would pass it on twice. */
  delivered = false
  /** Where the current call runs, once known (for `avoid`). */
  host: string | undefined
  failure: MapError | undefined
  /** The output just passed on was the item's last (a function's return value): the item is done without another read. */
  last = false
  readonly outputs: AsyncGenerator<unknown, void>

  constructor(
    readonly index: number,
    private readonly item: unknown,
    private readonly deps: MapDeps,
    private readonly state: { stopped: boolean; progress: MapProgress },
  ) {
    this.launch(undefined)
    this.outputs = this.read()
  }

  private launch(avoid: string | undefined): void {
    this.attempts++
    const call = this.deps.run(this.item, avoid)
    this.call = call
    // Lost before its turn to be read: run it again at once, not when it comes to the head.
    call.result.catch((err) => this.lost(call, err))
  }

  /**
   * Decides about a failed call (from its result or from reading it, whichever
   * comes first): true when the item runs again.
   */
  private lost(call: RemoteCall<unknown, unknown, unknown>, err: unknown): boolean {
    if (call !== this.call) return this.failure === undefined
    if (this.failure) return false
    const host = coreOf(call).hostName
    if (err instanceof TransportError && !this.delivered && this.attempts < ATTEMPTS && !this.state.stopped) {
      this.state.progress.rerun++
      this.launch(host)
      return true
    }
    const again = err instanceof TransportError && this.attempts >= ATTEMPTS ? ` (run ${this.attempts} times: its host was lost each time)` : ''
    const message = err instanceof Error ? err.message : String(err)
    this.failure = new MapError(`item ${this.index} of the map of ${this.deps.name()} failed${again}: ${message}`, this.index, this.attempts, { cause: err })
    return false
  }

  /** The item's results: each item its call yields, or its return value; across a re-run. */
  private async *read(): AsyncGenerator<unknown, void> {
    for (;;) {
      const call = this.call
      try {
        // The call's queue is read directly: a ReadableStream per item of a map costs more than the call.
        const items = coreOf(call).items()
        try {
          for (let r = await items.next(); !r.done; r = await items.next()) {
            this.delivered = true
            yield r.value
          }
        } finally {
          // Left early (the map was cancelled): the call is cancelled with it.
          if (this.state.stopped) await items.return?.()
        }
        if (!coreOf(call).streamed) {
          const value = await call.result
          this.delivered = true
          this.last = true
          yield value
        }
        return
      } catch (err) {
        if (!this.lost(call, err)) throw this.failure ?? err
      }
    }
  }

  /** Stops the item: its call is cancelled, its reader returned. */
  async stop(reason: unknown): Promise<void> {
    await Promise.allSettled([this.call.cancel(reason), this.outputs.return(undefined)])
  }
}

/**
 * The stream of a map. `iterator` is the source, already opened; the pool
 * starts each item's call through `deps.run`.
 */
export function mapStream(deps: MapDeps, iterator: AsyncIterator<unknown> | Iterator<unknown>, settings: MapSettings): MapStream<unknown> {
  const progress: MapProgress = { started: 0, done: 0, inFlight: 0, rerun: 0, failed: 0 }
  const state = { stopped: false, progress }
  /** Started items not yet passed on, in source order. */
  const tasks: Task[] = []
  /** Unordered: tasks with a read under way or waiting in `ready` (at most one each), and reads that came back, in the order they did. */
  const reading = new Set<Task>()
  const ready: { task: Task; r?: IteratorResult<unknown>; error?: unknown }[] = []
  let wake: (() => void) | undefined
  let sourceDone = false

  const stopAll = async (reason: unknown) => {
    state.stopped = true
    const stopping = tasks.splice(0).map((t) => t.stop(reason))
    reading.clear()
    ready.length = 0
    wake?.()
    progress.inFlight = 0
    await Promise.allSettled([...stopping, Promise.resolve(iterator.return?.()).catch(() => {})])
  }

  /** Starts items until `concurrency` are in flight or the source ends. */
  const fill = async () => {
    while (!sourceDone && !state.stopped && tasks.length < settings.concurrency) {
      const r = await iterator.next()
      if (state.stopped) return
      if (r.done) {
        sourceDone = true
        return
      }
      const task = new Task(progress.started++, r.value, deps, state)
      tasks.push(task)
      progress.inFlight = tasks.length
    }
  }

  const finished = (task: Task) => {
    const at = tasks.indexOf(task)
    if (at < 0) return
    tasks.splice(at, 1)
    progress.done++
    progress.inFlight = tasks.length
  }

  /**
   * Starts a read of `task` unless one is under way. Each read, when it comes
   * back, joins `ready` and wakes the puller: one handler per read, where
   * racing all pending reads at every item would pile handlers onto a read
   * that takes long (memory growing with every item passed meanwhile).
   */
  const read = (task: Task) => {
    if (reading.has(task)) return
    reading.add(task)
    // The task stays in `reading` until its entry is taken from `ready`: a second read meanwhile would run past its last output.
    const back = (entry: (typeof ready)[number]) => {
      if (!reading.has(task)) return
      ready.push(entry)
      const w = wake
      wake = undefined
      w?.()
    }
    task.outputs.next().then(
      (r) => back({ task, r }),
      (error: unknown) => back({ task, error }),
    )
  }

  return new MapStream(
    {
      pull: async (controller) => {
        try {
          for (;;) {
            await fill()
            if (state.stopped) return
            if (tasks.length === 0) return controller.close()
            if (settings.ordered) {
              const head = tasks[0]!
              const r = await head.outputs.next()
              if (state.stopped) return
              if (!r.done) {
                controller.enqueue(r.value)
                if (head.last) finished(head)
                return
              }
              finished(head)
              continue
            }
            for (const t of tasks) read(t)
            while (ready.length === 0) await new Promise<void>((resolve) => (wake = resolve))
            if (state.stopped) return
            const { task, r, error } = ready.shift()!
            reading.delete(task)
            if (!r) throw error
            if (!r.done) {
              controller.enqueue(r.value)
              if (task.last) finished(task)
              return
            }
            finished(task)
          }
        } catch (err) {
          progress.failed++
          await stopAll(err)
          throw err
        }
      },
      cancel: (reason) => stopAll(reason),
    },
    progress,
  )
}
