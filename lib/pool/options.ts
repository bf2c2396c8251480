/**
 * What a pool takes: its options, the calls it runs (`Runner`: `run`,
 * `broadcast`, `map`, `with`), and the options of `map`. Types only.
 *
 * @module
 */
import type { AnyFunction, CallArg, CallArgs, CallOf, IsGenerator, ResultOf, YieldOf } from '../call/types.ts'
import type { CallOptions, Limits } from '../options.ts'
import type { Remote } from '../remote.ts'
import type { LogEntry } from '../session.ts'
import type { HostOptions } from '../ssh/config.ts'
import type { CommandHost } from '../transports/command.ts'
import type { Transport } from '../transports/transport.ts'
import type { MapStream } from './map.ts'

/** Options of {@link pool}. */
export interface PoolOptions {
  /**
   * Hosts to run workers on: SSH destinations as OpenSSH takes them
   * (`host`, `user@host`, `ssh://user@host:port`, aliases from
   * `~/.ssh/config`), objects with per-host options, or command hosts,
   * reached through a command that opens a stdio channel there
   * (`{ name: 'pod-1', command: ['kubectl', 'exec', '-i', 'pod-1', '--'] }`).
   * Names are unique. Without hosts, the pool runs local worker processes.
   */
  hosts?: (string | HostOptions | CommandHost)[]
  /** The SSH client configuration to read. @default ~/.ssh/config */
  sshConfig?: string
  /**
   * Worker processes per host (a host's own `workers` wins).
   * @default os.availableParallelism() locally; the host's core count over SSH
   */
  workers?: number
  /** Where workers cache bundles. @default `$XDG_CACHE_HOME/farpipe`, else `~/.cache/farpipe` (on each host) */
  cacheDir?: string
  /** Receives every line remote code prints. @default printed to this process's stdout/stderr, prefixed with `[host/worker]` */
  onLog?: (entry: LogEntry) => void
  /** Wire limits (frame sizes). */
  limits?: Partial<Limits>
  /** Defaults for every call of the pool (overridden by `remote(fn, options)` and `Pool.with()`). */
  defaults?: CallOptions
  /**
   * Transports to run workers with, one per host; replaces the embedded
   * local pool. For transport authors and specs (e.g. `new MemoryTransport()`).
   */
  transports?: Transport[]
  /** Extra arguments for `node` when starting local workers. @default [] */
  nodeArgs?: string[]
  /** The `node` executable that runs local workers. @default this process's own executable (`process.execPath`) under Node; the `node` found on `PATH` under Deno or Bun */
  node?: string
  /**
   * Milliseconds a worker has to say hello once started; a worker that says
   * nothing, or prints something else first (a login script's greeting on
   * stdout), fails with a `TransportError` that quotes what it sent.
   * @default 30000
   */
  startTimeout?: number
  /**
   * Milliseconds a call on an SSH or command host survives a dropped
   * connection: its calls pause (the remote generator waits for credit,
   * local sources are not read), the pool reconnects and re-attaches to
   * the same worker processes, which kept running, and every stream goes on
   * where it was, nothing lost and nothing twice. Past the window the calls
   * fail with a `TransportError` (reason `resume`) and, on the host, the
   * worker cancels them on its own (their `finally` blocks run) and exits.
   * `0` turns it off (a dropped connection fails the calls at once). Local
   * workers are not affected.
   * @default 30000
   */
  resumeWindow?: number
  /**
   * Calls in flight at most on each worker process (a streaming call counts
   * until its stream ends). Past that, calls wait in order for a free worker
   * on any host. @default Infinity (calls are spread, never queued)
   */
  concurrency?: number
  /**
   * Milliseconds `close()` lets calls in flight (and calls waiting for a
   * worker) finish on their own; then it cancels the rest (their `finally`
   * blocks run, within their `cancelGrace`). A stream nobody reads never
   * finishes: cancel or read it before closing, or close with a short grace.
   * @default 5000
   */
  closeGrace?: number
}

/** What a pool and its views (`Pool.with()`) can do. */
export interface Runner {
  /**
   * Starts one remote call of `fn` and returns it at once. A value that
   * cannot be sent throws `SerializeError` here, before anything is sent.
   */
  run<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A>
  /** Runs the call once on every host of the pool; one call per host, in the order of the hosts. */
  broadcast<F extends Remote<AnyFunction>, const A extends CallArgs<F>>(fn: F, ...args: A): CallOf<F, A>[]
  /**
   * Spreads the items of `source` over the pool's workers (one call of `fn`
   * per item, at most `concurrency` at a time) and returns their results as
   * one stream in the order of the source (`ordered: false`: as they come).
   * For a generator `fn`, every item it yields is passed on, call after call.
   *
   * An item whose call was lost with its worker or host (a `TransportError`)
   * before anything of it was passed on runs again on another host, once;
   * every result arrives exactly once. A failed item errors the stream with
   * a `MapError` (`index`, the call's error as `cause`). Cancelling the
   * stream cancels the calls in flight and returns the source. The stream's
   * `progress` says how far it has got.
   *
   * @typeParam F a remote function of one argument, the item
   */
  map<F extends Remote<(item: any) => unknown>>(
    fn: F,
    source: Iterable<CallArg<Parameters<F>[0]>> | AsyncIterable<CallArg<Parameters<F>[0]>> | Iterator<CallArg<Parameters<F>[0]>>,
    options?: MapOptions,
  ): MapStream<MapItem<F>>
  /** A view of the pool whose calls use these options (over the pool's defaults). */
  with(options: CallOptions): Runner
}

/** What `Pool.map` yields for `F`: each call's result, or for a generator each item it yields. */
export type MapItem<F extends AnyFunction> = IsGenerator<F> extends true ? YieldOf<F> : ResultOf<F>

/** Options of {@link Runner.map}. */
export interface MapOptions extends CallOptions {
  /** Items in flight at once (started and not yet passed on): a consumer that stops reading stops the source. @default the pool's worker count */
  concurrency?: number
  /** Pass results on in the order of the source; `false`: in the order they come. @default true */
  ordered?: boolean
}
