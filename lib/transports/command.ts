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
 * down until the next probe succeeds.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { TransportError, type TransportFailure } from '../errors.ts'
import type { Channel } from '../link.ts'
import { bootstrap, launchCommand, REMOTE_COMMAND, SCRIPT_READER, scriptLine, shq, workerCommand, type Exec, type ExecResult, type HostFacts, type Probe } from '../ssh/bootstrap.ts'
import { LaunchWatch, type LaunchOutcome } from '../ssh/launch.ts'
import { workerBundle } from '../worker/locate.ts'
import { checkCommandHost, type CommandHost, type CommandTransportOptions } from './command-host.ts'
import { StderrLines, StderrTail, type Transport, type TransportEvents } from './transport.ts'

export { checkCommandHost, type CommandHost, type CommandTransportOptions } from './command-host.ts'

/** Lines of a command's stderr kept to explain its failure. */
const STDERR_TAIL = 20
/** What every probe, upload and kill command prints first: proof that the remote shell runs. */
const MARKER = 'farpipe:channel\n'
const MARKER_BYTES = Buffer.from(MARKER)

/** Guesses the kind of failure from what the command printed (OpenSSH's, kubectl's and docker's words). */
function classify(text: string): TransportFailure {
  if (/connection refused/i.test(text)) return 'refused'
  if (/could not resolve hostname|name or service not known|nodename nor servname|no such host/i.test(text)) return 'dns'
  if (/permission denied|unauthorized|forbidden|host key verification failed/i.test(text)) return 'auth'
  if (/timed out|timeout/i.test(text)) return 'timeout'
  if (/no route to host|network is unreachable/i.test(text)) return 'unreachable'
  return 'closed'
}

/** The last lines of a command's stderr, for a message: at most `lines` lines and 1000 characters. */
function tailOf(text: string, lines = 5): string {
  const last = text.split('\n').map((l) => l.trim()).filter(Boolean).slice(-lines).join(' | ')
  return last.length > 1000 ? `…${last.slice(-1000)}` : last
}

/**
 * Kills a command process and lets go of its pipes, so that it counts as
 * closed once it has exited even when a child it started (and that
 * outlives it) still holds them.
 */
function kill(child: ChildProcess): void {
  child.kill('SIGKILL')
  for (const s of [child.stdin, child.stdout, child.stderr]) s?.destroy()
}

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
  private readonly program: string
  private readonly args: string[]
  private readonly remoteShell: boolean
  private readonly options: CommandHost
  private facts: HostFacts | undefined
  private connecting: Promise<HostFacts> | undefined
  private failure: Error | undefined
  private closing = false
  /** Every command process running: workers, and probe, upload and kill commands. */
  private readonly children = new Set<ChildProcess>()
  /** Kills the command processes still running when this process exits (a worker stuck in a loop outlives its closed channel). */
  private readonly onExit = () => {
    for (const child of this.children) child.kill('SIGKILL')
  }

  /** Throws a TypeError naming the host when an option is not what it should be. */
  constructor(options: CommandTransportOptions) {
    this.options = checkCommandHost(options)
    this.host = options.name
    this.cacheDir = options.cacheDir
    this.program = options.command[0]!
    this.args = options.command.slice(1)
    this.remoteShell = options.remoteShell ?? path.basename(this.program) === 'ssh'
  }

  get up(): boolean {
    return this.failure === undefined
  }

  /** Runs the probe (and the upload of the worker bundle, when missing) through the command; resolves with the workers to run. */
  async connect(): Promise<number> {
    const facts = await this.prepared()
    return this.options.workers ?? facts.cores
  }

  async open(index: number, events: TransportEvents): Promise<Channel> {
    if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
    const facts = this.facts ?? (await this.prepared())
    if (this.closing) throw new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' })
    const where = `${this.host}/${index}`
    const early = index === 0 ? this.launched : undefined
    if (early) {
      this.launched = undefined
      early.detach()
    }
    const child = early?.child ?? this.spawn(workerCommand(facts, this.options.env, this.options.nodeArgs ?? []))
    if (index === 0) this.worker0 = child
    const tail = new StderrTail(STDERR_TAIL)
    const lines = new StderrLines((text) => events.stderr(text))
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
      if (this.worker0 === child) this.worker0 = undefined
      const how = spawnError
        ? `could not start ${this.program}: ${spawnError.message}`
        : destroyed
          ? 'was destroyed'
          : signal
            ? `was killed by ${signal}`
            : `exited with code ${code}`
      const last = tail.describe()
      const silent = !heard && !destroyed && !this.closing
      const error = new TransportError(`worker ${where} ${how}${silent ? ' before it said anything' : ''}${last}`, {
        host: this.host,
        reason: silent ? classify(tail.text) : 'lost',
        cause: spawnError,
      })
      // Nothing came through: the channel to the host may be gone. The pool probes it again before it sends more calls there.
      if (silent) this.failure = error
      lines.flush()
      events.close(error)
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
        kill(child)
      },
      unref: () => {
        child.unref()
        for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?(): void } | null)?.unref?.()
      },
      kill: (pid) => {
        if (!Number.isSafeInteger(pid) || pid < 2) return
        // Killing the local command does not stop a worker stuck in a loop on the host: a kill run there does.
        this.exec(`kill -KILL ${pid} 2>/dev/null`).catch(() => {})
      },
    }
  }

  async close(): Promise<void> {
    this.closing = true
    if (this.launched) {
      this.launched.child.stdin!.end()
      this.launched = undefined
    }
    // The workers were sent the end of their input: give them a moment to exit, then kill their commands.
    const waits = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          const t = setTimeout(() => kill(child), 5000)
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
   * Worker 0's command once the pool opened it, while it runs. A probe of
   * the host meanwhile (the pool reconnects a host that failed) goes the
   * long way: a launcher would start a second worker 0 that nobody opens.
   */
  private worker0: ChildProcess | undefined

  /**
   * Starts the launcher (the probe and the first worker in one command:
   * each command may be a whole new connection to the host); resolves as
   * {@link LaunchWatch.outcome} does.
   */
  private launch(hash: string): Promise<LaunchOutcome<Launched>> {
    const child = this.spawn(launchCommand({ node: this.options.node, cacheDir: this.cacheDir }, hash, this.options.env, this.options.nodeArgs ?? []))
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
    const watch = new LaunchWatch({ name: this.host, node: this.options.node }, hash, early, () => kill(child))
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
      let known: Probe | undefined
      if (this.options.node !== 'upload' && (this.options.nodeArgs ?? []).length === 0 && !this.launched && !this.worker0) {
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
      const facts = await bootstrap(this.exec, { name: this.host, node: this.options.node, cacheDir: this.cacheDir }, bundle, known)
      this.facts = facts
      this.failure = undefined
      return facts
    } catch (err) {
      this.failure = err as Error
      throw err
    }
  }

  /**
   * Starts the command with sh appended, which reads `script` from the first
   * line of its stdin (written here first): as the words `sh`, `-c`,
   * {@link SCRIPT_READER} for engines that pass an argv on, or as the one
   * word {@link REMOTE_COMMAND} for commands whose arguments a remote shell
   * parses (ssh), whatever shell that is. The command's own environment is
   * this process's: the workers get only `env`, in their script.
   */
  private spawn(script: string): ChildProcess {
    const tail = this.remoteShell ? [REMOTE_COMMAND] : ['sh', '-c', SCRIPT_READER]
    const child = spawn(this.program, [...this.args, ...tail], { stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true })
    child.stdin!.write(scriptLine(script))
    if (this.children.size === 0) process.on('exit', this.onExit)
    this.children.add(child)
    child.on('close', () => {
      this.children.delete(child)
      if (this.children.size === 0) process.off('exit', this.onExit)
    })
    return child
  }

  /** The command line as given, for messages. */
  private get display(): string {
    return this.options.command.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : shq(w))).join(' ')
  }

  /**
   * Runs one command line on the host through the command (bootstrap's
   * probe and uploads, and kills). The remote shell prints a marker before
   * the command runs, so a command that fails before reaching the host
   * (refused, unknown host, no such pod, no `sh` there) is told apart from a
   * command that ran there and failed, and rejects with what it printed.
   */
  private exec: Exec = (command, input) =>
    new Promise<ExecResult>((resolve, reject) => {
      const child = this.spawn(`printf '%s' ${shq(MARKER)}; ${command}`)
      const out: Buffer[] = []
      let outBytes = 0
      let errText = ''
      let spawnError: Error | undefined
      let timedOut = false
      const limit = this.options.connectTimeout ?? 20_000
      const timer =
        limit > 0
          ? setTimeout(() => {
              timedOut = true
              kill(child)
            }, limit)
          : undefined
      child.stdout!.on('data', (d: Buffer) => {
        out.push(d)
        outBytes += d.byteLength
        if (outBytes >= MARKER_BYTES.byteLength) clearTimeout(timer)
      })
      child.stderr!.setEncoding('utf8')
      child.stderr!.on('data', (d: string) => (errText += d))
      child.stdin!.on('error', () => {})
      child.on('error', (err) => (spawnError = err))
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        const stdout = Buffer.concat(out)
        if (stdout.subarray(0, MARKER_BYTES.byteLength).equals(MARKER_BYTES)) {
          resolve({ code, stdout: stdout.subarray(MARKER_BYTES.byteLength), stderr: errText })
          return
        }
        reject(this.channelError({ code, signal, stdout, stderr: errText, spawnError, timedOut, limit }))
      })
      if (spawnError || child.pid === undefined) return
      if (input === undefined) child.stdin!.end()
      else if (Buffer.isBuffer(input)) child.stdin!.end(input)
      else
        fs.createReadStream(input.file)
          .on('error', (err) => {
            errText += `cannot read ${input.file}: ${err.message}\n`
            kill(child)
          })
          .pipe(child.stdin!)
    })

  /** Why a command did not reach the host's shell, from how it ended and what it printed. */
  private channelError(r: {
    code: number | null
    signal: NodeJS.Signals | null
    stdout: Buffer
    stderr: string
    spawnError: Error | undefined
    timedOut: boolean
    limit: number
  }): TransportError {
    const through = `${this.host} through \`${this.display}\``
    if (r.spawnError) {
      const missing = (r.spawnError as NodeJS.ErrnoException).code === 'ENOENT' ? ` (no program ${JSON.stringify(this.program)} on this machine's PATH)` : ''
      return new TransportError(`cannot reach ${through}: ${r.spawnError.message}${missing}`, { host: this.host, reason: 'closed', cause: r.spawnError })
    }
    const said = tailOf(r.stderr)
    const printed = said ? `; it printed: ${said}` : '; it printed nothing on stderr'
    if (r.timedOut) {
      return new TransportError(`cannot reach ${through}: no answer from the remote shell within ${r.limit} ms (connectTimeout)${printed}`, { host: this.host, reason: 'timeout' })
    }
    const at = r.stdout.indexOf(MARKER_BYTES)
    if (at > 0) {
      const first = JSON.stringify(r.stdout.subarray(0, Math.min(at, 200)).toString('utf8'))
      return new TransportError(`something on ${this.host} printed to stdout before farpipe's command ran (a login script?): ${first}; the channel must carry only what the command prints`, { host: this.host, reason: 'closed' })
    }
    const how = r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`
    return new TransportError(`cannot reach ${through}: the command ${how} before a shell ran there${printed}`, { host: this.host, reason: classify(r.stderr) })
  }
}
