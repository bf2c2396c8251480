/**
 * Watching the launcher (bootstrap's probe and worker 0 in one command)
 * until it has said whether the host is ready: its facts line, read from its
 * stderr however that is cut ({@link LaunchReport}), and the outcome a
 * transport waits for ({@link LaunchWatch}): worker 0 running, the probe of a
 * host not ready, or nothing.
 *
 * @module
 */
import { TransportError } from '../errors.ts'
import { FACTS_MARK, readProbe, wantedNode, type HostFacts, type Probe } from './bootstrap.ts'

/**
 * What starting the launcher gave: worker 0 running (its channel or process,
 * whatever the transport keeps, and the facts), or the probe it reported
 * before it exited (the host is not ready: the long way may reuse it), or
 * neither (it said nothing: node missing, or too old to run it).
 */
export interface LaunchOutcome<T = unknown> {
  running?: T & { facts: HostFacts }
  probe?: Probe
}

/**
 * The longest facts line read (the marker and a small JSON object; a
 * cache directory path of PATH_MAX characters, each escaped, still fits).
 */
export const MAX_FACTS_LINE = 65536

/**
 * Reads the launcher's stderr up to its facts line (see bootstrap's `LAUNCH_JS`):
 * then gives the probe it makes, and the other text that came with it
 * (what a login script or the worker wrote), which belongs to the worker.
 */
export class LaunchReport {
  private text = ''
  constructor(
    private readonly host: { name: string; node?: string },
    private readonly hash: string,
  ) {}

  /**
   * Feeds stderr text; once the facts line is complete, returns the probe and
   * the rest of the text. A facts line still without its end past
   * {@link MAX_FACTS_LINE} is refused: the probe is then an error, and the
   * rest is the text before it.
   */
  feed(chunk: string): { probe: Probe; rest: string } | undefined {
    this.text += chunk
    const at = this.text.indexOf(FACTS_MARK)
    const end = at < 0 ? -1 : this.text.indexOf('\n', at)
    if (end < 0) {
      // Noise before the line (a chatty login script) is not kept without bound.
      if (at < 0 && this.text.length > 65536) this.text = this.text.slice(-4096)
      // Nor is a facts line that does not end: a launcher that writes one is not one we can read.
      if (at >= 0 && this.text.length - at > MAX_FACTS_LINE) {
        const rest = this.text.slice(0, at)
        this.text = ''
        const error = new TransportError(
          `the launcher on ${this.host.name} wrote a facts line of more than ${MAX_FACTS_LINE} characters without its end (it is a small JSON object); is something else writing to its stderr?`,
          { host: this.host.name, reason: 'node' },
        )
        return { probe: { ok: false, error }, rest }
      }
      return undefined
    }
    const probe = readProbe({ code: 0, stdout: Buffer.from(this.text.slice(at + FACTS_MARK.length, end)), stderr: '' }, this.host, wantedNode(this.host.node), this.hash)
    return { probe, rest: this.text.slice(0, at) + this.text.slice(end + 1) }
  }
}

/** How long the launcher (the probe and worker 0 in one command) has to report the host's facts. */
export const LAUNCH_TIMEOUT_MS = 10_000

/**
 * Waits for the launcher's verdict, for a transport that started it: give
 * it the launcher's stderr text and its end; {@link outcome} settles with
 * worker 0 running (`early`, with the facts), or the probe it reported
 * before exiting, or nothing (it said nothing, or nothing within
 * {@link LAUNCH_TIMEOUT_MS}: then `stop` is called). What comes after the
 * facts line is kept in `early.stderr`, for the worker's log.
 */
export class LaunchWatch<T extends { stderr: string[] }> {
  readonly outcome: Promise<LaunchOutcome<T>>
  private resolve!: (o: LaunchOutcome<T>) => void
  private readonly report: LaunchReport
  private decided = false
  /** Set once worker 0 runs: its stderr is kept for its log until the pool opens it (only the last {@link MAX_FACTS_LINE} characters). */
  private running = false
  private kept = 0
  private readonly timer: NodeJS.Timeout

  constructor(host: { name: string; node?: string }, hash: string, private readonly early: T, stop: () => void) {
    this.report = new LaunchReport(host, hash)
    this.outcome = new Promise((r) => (this.resolve = r))
    this.timer = setTimeout(() => {
      if (!this.decide()) return
      stop()
      this.resolve({})
    }, LAUNCH_TIMEOUT_MS)
  }

  /** Text the launcher wrote to its stderr. */
  stderr(text: string): void {
    if (this.decided) return this.keep(text)
    const got = this.report.feed(text)
    if (!got) return
    this.decide()
    this.running = got.probe.ok && got.probe.worker
    this.keep(got.rest)
    // Ready: the launcher is becoming the worker. Not ready: it exits by itself, and the host is prepared the long way.
    // The record itself is handed on, not a copy: the transport goes on writing what happens to the launcher
    // into it (its exit, its close) until the pool opens worker 0, which must see a death that came first.
    this.resolve(got.probe.ok && got.probe.worker ? { running: Object.assign(this.early, { facts: got.probe.facts }) } : { probe: got.probe })
  }

  /** Keeps worker 0's stderr for its log, the oldest dropped past the bound; a launcher that is not worker 0 has no log. */
  private keep(text: string): void {
    if (!this.running || !text) return
    const stderr = this.early.stderr
    stderr.push(text)
    this.kept += text.length
    while (this.kept > MAX_FACTS_LINE && stderr.length > 1) this.kept -= stderr.shift()!.length
  }

  /** The launcher ended (or could not start). */
  closed(): void {
    if (this.decide()) this.resolve({})
  }

  private decide(): boolean {
    if (this.decided) return false
    this.decided = true
    clearTimeout(this.timer)
    return true
  }
}
