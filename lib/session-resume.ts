/**
 * The caller's side of resuming a session (lib/replay.ts): the token and
 * window asked for in the hello, the worker's address from its answer, the
 * wait while the session has no channel (its calls paused), and the
 * handshake on a new channel (`resume`, answered by `resumed`).
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import { ProtocolError, TransportError } from './errors.ts'
import type { Channel } from './link.ts'
import { ReplayLog } from './replay.ts'
import { isWorkerEnd } from './transports/transport.ts'
import { Kind } from './wire/frame.ts'
import { payloads, type ResumeAnswer, type ResumeRequest, type WorkerHello } from './wire/payloads.ts'

/** What resuming needs of its session (its Link's own steps). */
export interface ResumeLink {
  /** `host/worker`, for messages. */
  readonly where: string
  /** The counts and kept bytes, once set. */
  replay: ReplayLog | undefined
  detachChannel(): void
  resumeOn(channel: Channel, peerReceived: number): void
  sendOnChannel(channel: Channel, kind: number, payload: Uint8Array): void
  /** The session dies with `error` (its window passed). */
  fail(error: TransportError): void
  /** Its channel dropped and it waits to be resumed. */
  detached(error: Error): void
  /** A new channel resumed it. */
  resumed(): void
}

/** One session's resuming. */
export class SessionResume {
  /** The token a resuming channel presents, and how long the worker waits for one (undefined: not resumable). */
  readonly ask: { token: string; window: number } | undefined
  /** Where a new channel reaches the worker (its hello said), once the session is resumable. */
  address: string | undefined
  /** Set while the session has no channel: why it dropped, why the last attempt failed (at first: why it dropped), since when, and the window's timer. */
  waiting: { first: Error; error: Error; since: number; timer: NodeJS.Timeout } | undefined
  /** A channel presented with `resume`, until the worker answers. */
  private attempt: { channel: Channel; resolve(): void; reject(e: Error): void } | undefined

  constructor(
    window: number,
    private readonly link: ResumeLink,
  ) {
    this.ask = window > 0 ? { token: randomBytes(16).toString('hex'), window } : undefined
  }

  /** The hello was sent: from here on every frame counts. */
  started(): void {
    if (this.ask) this.link.replay = new ReplayLog()
  }

  /** The worker's hello: a worker that cannot be reached again (an older one, no socket) makes the session an ordinary one. */
  hello(h: WorkerHello): void {
    if (this.link.replay && typeof h.resume?.address === 'string') this.address = h.resume.address
    else this.link.replay = undefined
  }

  /** See Session.resume. */
  resume(channel: Channel): Promise<void> {
    if (!this.waiting || !this.link.replay || !this.ask) return Promise.reject(new TransportError(`worker ${this.link.where}: there is nothing to resume`))
    this.attempt?.channel.destroy()
    return new Promise<void>((resolve, reject) => {
      this.attempt = { channel, resolve, reject }
      const ask: ResumeRequest = { token: this.ask!.token, received: this.link.replay!.received }
      this.link.sendOnChannel(channel, Kind.resume, payloads.json(ask))
    })
  }

  /** The worker answered `resume`: what it missed goes first, then the calls go on. */
  answered(answer: ResumeAnswer): void {
    const a = this.attempt
    if (!a || !this.waiting) throw new ProtocolError(`worker ${this.link.where} answered a resume that was not asked`)
    if (!Number.isSafeInteger(answer?.received)) throw new ProtocolError(`worker ${this.link.where} answered resume without its count`)
    this.attempt = undefined
    clearTimeout(this.waiting.timer)
    this.waiting = undefined
    this.link.resumeOn(a.channel, answer.received)
    a.resolve()
    this.link.resumed()
  }

  /** While waiting: why the last attempt to resume failed (it goes into the error if the window passes). */
  failed(error: Error): void {
    if (this.waiting) this.waiting.error = error
  }

  /**
   * The channel closed with `cause`. `waits` when the session goes on
   * waiting (the channel dropped, or one presented for a resume closed
   * before the answer); otherwise it dies, with `cause`: it was ended or
   * broke on purpose (`ending`, `corrupt`), the worker process itself ended,
   * the window passed, or the session is not resumable.
   */
  closed(cause: Error | undefined, ending: boolean, corrupt: boolean): { waits: true } | { waits: false; cause: Error | undefined } {
    const gaveUp = cause instanceof TransportError && cause.reason === 'resume'
    if (!this.address || ending || corrupt || gaveUp || isWorkerEnd(cause)) {
      // Found gone while re-attaching: the error says what happened first, then what re-attaching found.
      if (this.waiting && isWorkerEnd(cause) && !ending) {
        cause = new TransportError(`${this.waiting.first.message}; re-attaching found the worker gone (${cause!.message})`, { host: (cause as TransportError).host, reason: 'lost', cause })
      }
      this.stop(cause)
      return { waits: false, cause }
    }
    if (this.attempt) {
      const a = this.attempt
      this.attempt = undefined
      a.reject(cause ?? new TransportError(`worker ${this.link.where}: the channel closed before the worker answered resume`))
      return { waits: true }
    }
    if (!this.waiting) this.wait(cause ?? new TransportError(`the channel of worker ${this.link.where} closed`))
    return { waits: true }
  }

  /** The channel dropped: the calls wait for a new one, within the window. */
  private wait(error: Error): void {
    this.link.detachChannel()
    const window = this.ask!.window
    const timer = setTimeout(() => {
      const why = this.waiting?.error.message ?? 'the connection dropped'
      this.link.fail(new TransportError(`worker ${this.link.where} could not be resumed within ${window} ms (resumeWindow): ${why}`, { reason: 'resume', cause: error }))
    }, window)
    timer.unref?.()
    this.waiting = { first: error, error, since: Date.now(), timer }
    this.link.detached(error)
  }

  /** The session dies: no more waiting. */
  private stop(cause: Error | undefined): void {
    if (this.waiting) clearTimeout(this.waiting.timer)
    this.waiting = undefined
    this.attempt?.reject(cause ?? new TransportError(`worker ${this.link.where} is gone`))
    this.attempt = undefined
  }
}
