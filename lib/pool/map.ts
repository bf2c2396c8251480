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
import { coreOf, type RemoteCall } from '../call/remote-call.ts'
import type { UnderlyingSource } from 'node:stream/web'
import { MapError, TransportError } from '../errors.ts'

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
  /** The current call; undefined when the item could not be started at all (then `failure` says why). */
  call: RemoteCall<unknown, unknown, unknown> | undefined
  attempts = 0
  /** Something of this item was passed on: running it again would pass it on twice. */
  delivered = false
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
    this.launch(undefined, undefined)
    this.outputs = this.read()
  }

  /**
   * Starts a call of the item (`lost`: the error of the call it replaces).
   * Starting can fail (a value that cannot be sent, a pool that closed
   * meanwhile): then the item fails with a MapError, here, and never throws
   * out of the handler that asked for the re-run.
   */
  private launch(avoid: string | undefined, lost: unknown): boolean {
    this.attempts++
    let call: RemoteCall<unknown, unknown, unknown>
    try {
      call = this.deps.run(this.item, avoid)
    } catch (err) {
      this.failure =
        lost === undefined
          ? this.mapError(`it could not be started: ${messageOf(err)}`, err)
          : this.mapError(`${messageOf(lost)}; running it again failed: ${messageOf(err)}`, lost)
      return false
    }
    this.call = call
    // Lost before its turn to be read: run it again at once, not when it comes to the head.
    call.result.catch((err) => this.lost(call, err))
    return true
  }

  private mapError(why: string, cause: unknown): MapError {
    return new MapError(`item ${this.index} of the map of ${this.deps.name()} failed: ${why}`, this.index, this.attempts, { cause })
  }

  /**
   * Decides about a failed call (from its result or from reading it, whichever
   * comes first): true when the item runs again.
   *
   * Only a call lost with its worker or host (a TransportError) runs again,
   * once, and only when nothing of it was passed on and its arguments hold
   * no stream: a stream's items were read by the first run (or let go when
   * it failed), and a second run would see them consumed and return a wrong
   * result as a success.
   */
  private lost(call: RemoteCall<unknown, unknown, unknown>, err: unknown): boolean {
    if (call !== this.call) return this.failure === undefined
    if (this.failure) return false
    const core = coreOf(call)
    if (err instanceof TransportError && !this.delivered && !this.state.stopped) {
      if (core.hasStreams) {
        this.failure = this.mapError(`${messageOf(err)} (it was not run again: its arguments hold a stream, which its first run read or let go)`, err)
        return false
      }
      if (this.attempts < ATTEMPTS) {
        this.state.progress.rerun++
        return this.launch(core.hostName, err)
      }
    }
    const again = err instanceof TransportError && this.attempts >= ATTEMPTS ? ` (run ${this.attempts} times: its host was lost each time)` : ''
    this.failure = this.mapError(`${messageOf(err)}${again}`, err)
    return false
  }

  /** The item's results: each item its call yields, or its return value; across a re-run. */
  private async *read(): AsyncGenerator<unknown, void> {
    for (;;) {
      const call = this.call
      if (this.failure || !call) throw this.failure
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
    await Promise.allSettled([this.call?.cancel(reason), this.outputs.return(undefined)])
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
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
  /** Wakes the puller: a read came back, an item started, the source ended or failed, or the map stopped. */
  const changed = new Signal()
  let sourceDone = false
  /** The source's error, once its `next()` threw. */
  let sourceFailed: { error: unknown } | undefined
  /** The loop that starts items, while it runs (see {@link fill}). */
  let filling: Promise<void> | undefined
  /** True while a `next()` of the source is under way. */
  let nexting = false

  const stopAll = async (reason: unknown) => {
    state.stopped = true
    const stopping = tasks.splice(0).map((t) => t.stop(reason))
    reading.clear()
    ready.length = 0
    changed.notify()
    progress.inFlight = 0
    // The source is returned. An async generator suspended in a `next()`
    // (waiting for its next item) runs that `return()` only once the
    // `next()` settles, which may be never: then the cancel does not wait.
    const returned = Promise.resolve()
      .then(() => iterator.return?.())
      .catch(() => {})
    await Promise.allSettled(nexting ? stopping : [...stopping, returned])
  }

  /**
   * Starts items until `concurrency` are in flight or the source ends. It
   * runs beside the puller, not before it: a result that is ready is passed
   * on while the source takes its time over the next item.
   */
  const fill = async () => {
    while (!sourceDone && !state.stopped && tasks.length < settings.concurrency) {
      nexting = true
      let r: IteratorResult<unknown>
      try {
        r = await iterator.next()
      } finally {
        nexting = false
      }
      if (state.stopped) return
      if (r.done) {
        sourceDone = true
        return
      }
      const task = new Task(progress.started++, r.value, deps, state)
      tasks.push(task)
      progress.inFlight = tasks.length
      changed.notify()
    }
  }

  /** Starts {@link fill} unless it runs, or there is nothing for it to do. */
  const startFill = () => {
    if (filling || sourceDone || sourceFailed || state.stopped || tasks.length >= settings.concurrency) return
    filling = fill()
      .catch((error: unknown) => {
        sourceFailed = { error }
      })
      .finally(() => {
        filling = undefined
        changed.notify()
      })
  }

  const finished = (task: Task) => {
    const at = tasks.indexOf(task)
    if (at < 0) return
    tasks.splice(at, 1)
    progress.done++
    progress.inFlight = tasks.length
    startFill()
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
      changed.notify()
    }
    task.outputs.next().then(
      (r) => back({ task, r }),
      (error: unknown) => back({ task, error }),
    )
  }

  /** True when nothing more will come: the source ended and every item was passed on. */
  const exhausted = () => tasks.length === 0 && sourceDone && !filling

  return new MapStream(
    {
      pull: async (controller) => {
        try {
          for (;;) {
            startFill()
            if (state.stopped) return
            if (sourceFailed) throw sourceFailed.error
            if (exhausted()) return controller.close()
            if (settings.ordered) {
              const head = tasks[0]
              if (!head) {
                await changed.wait()
                continue
              }
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
            const entry = ready.shift()
            if (!entry) {
              await changed.wait()
              continue
            }
            const { task, r, error } = entry
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
          // A read cut short by the map's cancel (the item's call was cancelled with it) is not an item that failed.
          if (state.stopped) return
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

/**
 * Something changed: every waiter wakes and looks again. A list, not a
 * slot: a second waiter must not replace the first.
 */
class Signal {
  private waiters: (() => void)[] = []

  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  notify(): void {
    const w = this.waiters
    if (w.length === 0) return
    this.waiters = []
    for (const resolve of w) resolve()
  }
}
