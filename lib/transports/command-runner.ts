/**
 * Starting a command host's command: every command process of the command
 * transport (a worker, the probe, an upload, a kill) is the host's command
 * with `sh` appended, which reads its script from the first line of its
 * stdin. {@link CommandRunner.exec} runs one command line on the host that
 * way and tells a command that never reached the host's shell (refused,
 * unknown host, no such pod) apart from one that ran there and failed.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { TransportError, type TransportFailure } from '../errors.ts'
import { REMOTE_COMMAND, SCRIPT_READER, scriptLine, shq, type Exec, type ExecResult } from '../ssh/bootstrap.ts'
import type { CommandHost } from './command-host.ts'
import { StderrLines } from './transport.ts'
import { isSrun, srunCommand, SrunQueue, type CommandUse } from './slurm.ts'

/** What every probe, upload and kill command prints first: proof that the remote shell runs. */
const MARKER = 'farpipe:channel\n'
const MARKER_BYTES = Buffer.from(MARKER)

/** Guesses the kind of failure from what the command printed (OpenSSH's, kubectl's and docker's words). */
export function classify(text: string): TransportFailure {
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
function killNow(child: ChildProcess): void {
  child.kill('SIGKILL')
  for (const s of [child.stdin, child.stdout, child.stderr]) s?.destroy()
}

/** How long srun has, once sent SIGTERM, to take its job out of the queue (or end it) before it is killed. */
const SRUN_TERM_MS = 3000

/** srun hosts with commands running: stopped when this process is ended by a signal (see {@link onEndingSignal}). */
const srunRunners = new Set<CommandRunner>()
const ENDING_SIGNALS = ['SIGTERM', 'SIGHUP', 'SIGINT'] as const

/**
 * This process is being ended by a signal nobody else handles (`kill`,
 * `timeout`, systemd, a closed terminal): node would exit without its
 * 'exit' hooks, leaving srun commands whose jobs wait in the queue to run
 * later with nobody reading them. They are sent SIGTERM (srun takes its
 * job out of the queue), then the signal is raised again to end this
 * process as it would have. With a handler of the user's, nothing is done
 * here: that handler decides (and the exit hook still stops them).
 */
function onEndingSignal(signal: NodeJS.Signals): void {
  if (process.listeners(signal).some((l) => l !== onEndingSignal)) return
  for (const runner of srunRunners) for (const child of runner.children) child.kill('SIGTERM')
  for (const s of ENDING_SIGNALS) process.off(s, onEndingSignal)
  process.kill(process.pid, signal)
}

function watchSignals(runner: CommandRunner, on: boolean): void {
  const before = srunRunners.size
  if (on) srunRunners.add(runner)
  else srunRunners.delete(runner)
  if (before === 0 && srunRunners.size === 1) for (const s of ENDING_SIGNALS) process.on(s, onEndingSignal)
  if (before > 0 && srunRunners.size === 0) for (const s of ENDING_SIGNALS) process.off(s, onEndingSignal)
}

/** The command processes of one command host. */
export class CommandRunner {
  /** The program that opens the channel (the command's first word), and its arguments. */
  readonly program: string
  private readonly args: string[]
  private readonly remoteShell: boolean
  /** Every command process running: workers, and probe, upload and kill commands. */
  readonly children = new Set<ChildProcess>()
  /** Kills the command processes still running when this process exits (a worker stuck in a loop outlives its closed channel). */
  private readonly onExit = () => {
    for (const child of this.children) child.kill(this.srun ? 'SIGTERM' : 'SIGKILL')
  }
  /** The command is Slurm's srun (lib/transports/slurm.ts). */
  readonly srun: boolean

  constructor(
    /** The host's name, for messages. */
    private readonly host: string,
    private readonly options: CommandHost,
  ) {
    this.program = options.command[0]!
    this.args = options.command.slice(1)
    this.remoteShell = options.remoteShell ?? path.basename(this.program) === 'ssh'
    this.srun = isSrun(options.command)
  }

  /**
   * Stops a command process: at once, but srun with SIGTERM first (a
   * SIGKILLed srun leaves a job that waits in the queue there, to run later
   * with nobody reading it), then SIGKILL if it has not ended meanwhile.
   */
  kill(child: ChildProcess): void {
    if (!this.srun || child.exitCode !== null || child.signalCode !== null) return killNow(child)
    child.kill('SIGTERM')
    const later = setTimeout(() => killNow(child), SRUN_TERM_MS)
    later.unref()
    child.once('exit', () => clearTimeout(later))
  }

  /** srun's words about its queue, read out of a command's stderr (undefined for other commands). */
  queue(changed: (job: string | undefined) => void): SrunQueue | undefined {
    return this.srun ? new SrunQueue(changed) : undefined
  }

  /**
   * Starts the command with sh appended, which reads `script` from the first
   * line of its stdin (written here first): as the words `sh`, `-c`,
   * {@link SCRIPT_READER} for engines that pass an argv on, or as the one
   * word {@link REMOTE_COMMAND} for commands whose arguments a remote shell
   * parses (ssh), whatever shell that is. The command's own environment is
   * this process's: the workers get only `env`, in their script.
   */
  spawn(script: string, use: CommandUse = 'worker'): ChildProcess {
    const tail = this.remoteShell ? [REMOTE_COMMAND] : ['sh', '-c', SCRIPT_READER]
    const args = this.srun ? srunCommand(this.options.command, use).slice(1) : this.args
    const child = spawn(this.program, [...args, ...tail], { stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true })
    child.stdin!.write(scriptLine(script))
    if (this.children.size === 0) {
      process.on('exit', this.onExit)
      if (this.srun) watchSignals(this, true)
    }
    this.children.add(child)
    child.on('close', () => {
      this.children.delete(child)
      if (this.children.size === 0) {
        process.off('exit', this.onExit)
        if (this.srun) watchSignals(this, false)
      }
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
  readonly exec: Exec = (command, input) =>
    new Promise<ExecResult>((resolve, reject) => {
      const child = this.spawn(`printf '%s' ${shq(MARKER)}; ${command}`, 'exec')
      const out: Buffer[] = []
      let outBytes = 0
      let errText = ''
      let spawnError: Error | undefined
      let timedOut = false
      let reached = false
      const limit = this.options.connectTimeout ?? 20_000
      let timer: NodeJS.Timeout | undefined
      const arm = () => {
        if (limit > 0 && !reached)
          timer = setTimeout(() => {
            timedOut = true
            this.kill(child)
          }, limit)
      }
      arm()
      // A job waiting in the scheduler's queue has not failed to answer: the deadline counts from when it starts.
      const queue = this.queue((job) => {
        clearTimeout(timer)
        if (job === undefined) arm()
      })
      const lines = new StderrLines((text) => (errText += queue ? queue.filter(text) : text))
      child.stdout!.on('data', (d: Buffer) => {
        out.push(d)
        outBytes += d.byteLength
        if (outBytes >= MARKER_BYTES.byteLength) {
          reached = true
          clearTimeout(timer)
        }
      })
      child.stderr!.setEncoding('utf8')
      child.stderr!.on('data', (d: string) => lines.push(d))
      child.stdin!.on('error', () => {})
      child.on('error', (err) => (spawnError = err))
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        lines.flush()
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
            this.kill(child)
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
