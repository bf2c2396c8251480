/**
 * The command transport: worker processes on a machine reached through any
 * command that opens a stdio channel to it (`kubectl exec -i pod --`,
 * `docker exec -i ctr`, the system's `ssh host`). farpipe appends `sh` to
 * it, writes the script sh runs as the first line of the command's stdin
 * (see bootstrap's `REMOTE_COMMAND`), and speaks over its stdin and stdout,
 * so existing engines carry workers without farpipe reimplementing them.
 *
 * Everything goes through such channels, one command process each: the
 * probe (find node, prepare the cache), the worker bundle upload when it is
 * missing, each worker, and the `kill` of a worker stuck for good. There is
 * no connection to keep: each worker is its own command process, and a
 * worker whose command ends before the worker said anything marks the host
 * down until the next probe succeeds. Starting the command, and running one
 * command line on the host through it, is command-runner.ts's.
 *
 * @module
 */
import type { ChildProcess } from 'node:child_process'
import { TransportError } from '../errors.ts'
import type { Channel } from '../link.ts'
import { bootstrap, launchCommand, relayCommand, RELAY_WORKER_GONE, workerCommand, type HostFacts, type Probe } from '../ssh/bootstrap.ts'
import { LaunchWatch, type LaunchOutcome } from '../ssh/launch.ts'
import { workerBundle } from '../worker/locate.ts'
import { checkCommandHost, type CommandHost, type CommandTransportOptions } from './command-host.ts'
import { classify, CommandRunner } from './command-runner.ts'
import { StderrLines, StderrTail, workerEnded, type Transport, type TransportEvents } from './transport.ts'

export { checkCommandHost, type CommandHost, type CommandTransportOptions } from './command-host.ts'

/** Lines of a command's stderr kept to explain its failure. */
const STDERR_TAIL = 20

/** Worker 0 as the launcher left it: its command, and what it said before the pool took it. */
interface Launched {
  child: ChildProcess
  data: Buffer[]
  stderr: string[]
  closed: { code: number | null; signal: NodeJS.Signals | null } | undefined
  /** Removes the launcher's own listeners from the command process (and only those: the transport's cleanup stays). */
  detach(): void
}

/** Worker processes on a host reached through a command. */
export class CommandTransport implements Transport {
  readonly host: string
  /** The bundle cache on the host, when the host gives one (else the pool's is sent to the workers). */
  readonly cacheDir: string | undefined
  private readonly options: CommandHost
  /** Starts the host's command for each worker, probe, upload and kill. */
  private readonly runner: CommandRunner
  private facts: HostFacts | undefined
  private connecting: Promise<HostFacts> | undefined
  private failure: Error | undefined
  private closing = false
  /** Worker commands waiting in a scheduler's queue (srun). */
  private readonly queued = new Set<ChildProcess>()

  /**
   * See {@link relay}. Absent for srun: a relay would be a job of its own,
   * placed on any node, not in the worker's job.
   */
  readonly reattach?: (index: number, address: string, events: TransportEvents) => Promise<Channel>
  readonly silenceHint: string

  /** Throws a TypeError naming the host when an option is not what it should be. */
  constructor(options: CommandTransportOptions) {
    this.options = checkCommandHost(options)
    this.host = options.name
    this.cacheDir = options.cacheDir
    this.runner = new CommandRunner(this.host, this.options)
    if (!this.runner.srun) this.reattach = (index, address, events) => this.relay(index, address, events)
    this.silenceHint = this.runner.srun
      ? process.env.SLURM_JOB_ID
        ? `inside allocation ${process.env.SLURM_JOB_ID}, a job step that waits for room says nothing (srun 22.05): give at most as many workers as the allocation has tasks, or a longer startTimeout`
        : 'srun said nothing of a queue: is its job held, or its output cut off?'
      : 'a command that holds its output back until a newline, as srun does without --unbuffered, looks like this: give it the option that passes output on at once'
  }

  get up(): boolean {
    return this.failure === undefined
  }

  /**
   * Runs the probe (and the upload of the worker bundle, when missing)
   * through the command; resolves with the workers to run. A host already
   * probed whose commands have not failed since is not probed again (the
   * pool reconnects it to re-attach workers whose commands ended with a
   * dropped connection: the relay's command tells as much as a probe).
   */
  async connect(): Promise<number> {
    if (this.facts && !this.failure) return this.options.workers ?? this.facts.cores
    const facts = await this.prepared()
    return this.options.workers ?? facts.cores
  }

  async open(index: number, events: TransportEvents): Promise<Channel> {
    if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
    const facts = this.facts ?? (await this.prepared())
    if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
    const early = index === 0 ? this.launched : undefined
    if (early) {
      this.launched = undefined
      early.detach()
    }
    const child = early?.child ?? this.runner.spawn(workerCommand(facts, this.options.env, this.options.nodeArgs ?? []))
    if (index === 0) this.opened0 = true
    return this.channelOf(child, index, events, early)
  }

  /**
   * A new channel to worker `index`, which still runs (its command ended
   * with the connection): a relay to its resume socket, run through the
   * command like any worker. A relay that finds the worker gone exits with
   * its own code, and the channel's close says the worker ended.
   */
  private async relay(index: number, address: string, events: TransportEvents): Promise<Channel> {
    if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
    const facts = this.facts ?? (await this.prepared())
    return this.channelOf(this.runner.spawn(relayCommand(facts, address)), index, events, undefined, true)
  }

  /** A worker's command (or its relay's) as a farpipe {@link Channel}: its stderr read, its close explained. */
  private channelOf(child: ChildProcess, index: number, events: TransportEvents, early: Launched | undefined, relay = false): Channel {
    const where = `${this.host}/${index}`
    const tail = new StderrTail(STDERR_TAIL)
    // srun's words about its queue pause the start deadline; they are not the worker's log.
    const queue = this.runner.queue((job) => {
      if (job === undefined) this.queued.delete(child)
      else this.queued.add(child)
      events.queued?.(job)
    })
    // A relay's stderr is its own (why it found no worker): kept for the error, not passed on as the worker's log.
    const lines = new StderrLines((text) => {
      const rest = queue ? queue.filter(text) : text
      if (rest && !relay) events.stderr(rest)
    })
    let heard = false
    let destroyed = false
    child.stdout!.on('data', (chunk: Buffer) => {
      heard = true
      events.data(chunk)
    })
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (text: string) => {
      tail.push(text)
      lines.push(text)
    })
    // EPIPE on a dead command's stdin is reported by 'close' below, with more to say.
    child.stdin!.on('error', () => {})
    let spawnError: Error | undefined
    child.on('error', (err) => (spawnError = err))
    if (early) {
      // What worker 0 said before the pool took it: replayed in order.
      for (const text of early.stderr) {
        tail.push(text)
        lines.push(text)
      }
      for (const d of early.data) {
        heard = true
        events.data(d)
      }
    }
    const onClose = (code: number | null, signal: NodeJS.Signals | null) => {
      this.queued.delete(child)
      const how = spawnError
        ? `could not start ${this.runner.program}: ${spawnError.message}`
        : destroyed
          ? 'was destroyed'
          : signal
            ? `was killed by ${signal}`
            : `exited with code ${code}`
      const last = tail.describe()
      if (relay && code === RELAY_WORKER_GONE) {
        lines.flush()
        events.close(workerEnded(new TransportError(`worker ${where} is gone: its relay found no worker${last}`, { host: this.host, reason: 'lost' })))
        return
      }
      const silent = !heard && !destroyed && !this.closing
      const error = new TransportError(`${relay ? `the relay to worker ${where}` : `worker ${where}`} ${how}${silent ? ' before it said anything' : ''}${last}`, {
        host: this.host,
        reason: silent ? classify(tail.text) : 'lost',
        cause: spawnError,
      })
      // Nothing came through: the channel to the host may be gone. The pool probes it again before it sends more calls there.
      // Not for srun: its job ended before it started (cancelled while queued, refused); the slot backs off, the others go on.
      if (silent && !this.runner.srun) this.failure = error
      lines.flush()
      events.close(destroyed ? workerEnded(error) : error)
    }
    child.on('close', onClose)
    if (early?.closed) onClose(early.closed.code, early.closed.signal)
    return {
      write: (chunk) => void child.stdin!.write(chunk),
      writev: (chunks) => {
        child.stdin!.cork()
        for (const c of chunks) child.stdin!.write(c)
        child.stdin!.uncork()
      },
      end: () => child.stdin!.end(),
      destroy: () => {
        destroyed = true
        this.runner.kill(child)
      },
      unref: () => {
        child.unref()
        for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?(): void } | null)?.unref?.()
      },
      kill: (pid) => {
        if (!Number.isSafeInteger(pid) || pid < 2) return
        // srun: a kill would be a job of its own, on any node; srun stopped ends its job, the worker with it.
        if (this.runner.srun) return this.runner.kill(child)
        // Killing the local command does not stop a worker stuck in a loop on the host: a kill run there does.
        this.runner.exec(`kill -KILL ${pid} 2>/dev/null`).catch(() => {})
      },
    }
  }

  async close(): Promise<void> {
    this.closing = true
    if (this.launched) {
      this.launched.child.stdin!.end()
      this.launched = undefined
    }
    // Commands still waiting in a scheduler's queue have no worker to end: out of the queue at once.
    for (const child of this.queued) this.runner.kill(child)
    // The workers were sent the end of their input: give them a moment to exit, then kill their commands.
    const waits = [...this.runner.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          const t = setTimeout(() => this.runner.kill(child), 5000)
          child.once('close', () => {
            clearTimeout(t)
            resolve()
          })
        }),
    )
    await Promise.all(waits)
  }

  /** The probe under way, or a new one: one at a time. */
  private prepared(): Promise<HostFacts> {
    if (!this.connecting) {
      const attempt = this.prepare()
      const done = () => {
        if (this.connecting === attempt) this.connecting = undefined
      }
      attempt.then(done, done)
      this.connecting = attempt
    }
    return this.connecting
  }

  /** Worker 0, started together with the probe, until the pool opens it. */
  private launched: Launched | undefined
  /**
   * Worker 0 was opened once: a later probe of the host (the pool
   * reconnects a host that failed) goes the long way, since worker 0 may
   * still run there (its command running, or ended with a dropped
   * connection and waiting to be re-attached): a launcher would start a
   * second worker 0 that nobody opens.
   */
  private opened0 = false

  /**
   * Starts the launcher (the probe and the first worker in one command:
   * each command may be a whole new connection to the host); resolves as
   * {@link LaunchWatch.outcome} does.
   */
  private launch(hash: string): Promise<LaunchOutcome<Launched>> {
    const child = this.runner.spawn(launchCommand({ node: this.options.node, cacheDir: this.cacheDir }, hash, this.options.env, this.options.nodeArgs ?? []))
    const onData = (d: Buffer) => early.data.push(d)
    const onStderr = (t: string) => watch.stderr(t)
    const onClose = (code: number | null, signal: NodeJS.Signals | null) => {
      early.closed = { code, signal }
      watch.closed()
    }
    const early: Launched = {
      child,
      data: [],
      stderr: [],
      closed: undefined,
      detach: () => {
        child.stdout!.off('data', onData)
        child.stderr!.off('data', onStderr)
        child.off('close', onClose)
      },
    }
    const watch = new LaunchWatch({ name: this.host, node: this.options.node }, hash, early, () => this.runner.kill(child))
    child.stdin!.on('error', () => {})
    child.on('error', () => {})
    child.stdout!.on('data', onData)
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', onStderr)
    child.on('close', onClose)
    return watch.outcome
  }

  /** Probes the host (and uploads what is missing); clears the failure on success and records it otherwise. */
  private async prepare(): Promise<HostFacts> {
    try {
      if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
      const bundle = await workerBundle()
      if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
      // Extra node arguments may name a script of their own (a loader, say) that would not run the launcher: then the long way.
      // srun too: its launcher would wait in the queue like a worker, with the probe's deadline on it.
      let known: Probe | undefined
      if (this.options.node !== 'upload' && (this.options.nodeArgs ?? []).length === 0 && !this.launched && !this.opened0 && !this.runner.srun) {
        const { running, probe } = await this.launch(bundle.hash)
        if (running && this.closing) {
          // close() came while it started: it ends with its input, as the workers close() ended do.
          running.child.stdin!.end()
          throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
        }
        if (running) {
          this.launched = running
          this.facts = running.facts
          this.failure = undefined
          return running.facts
        }
        known = probe
      }
      const facts = await bootstrap(this.runner.exec, { name: this.host, node: this.options.node, cacheDir: this.cacheDir }, bundle, known)
      this.facts = facts
      this.failure = undefined
      return facts
    } catch (err) {
      this.failure = err as Error
      throw err
    }
  }

}
