/**
 * Resuming: the sessions of a host whose connection dropped wait (their
 * calls paused, see lib/replay.ts) while the host reconnects; once it is
 * connected again each gets a new channel to its worker process, which kept
 * running, and goes on where it was. A session that cannot be reached
 * within its window dies as any other (its calls fail with a
 * `TransportError`, reason `resume`).
 *
 * @module
 */
import { TransportError } from '../errors.ts'
import type { Session } from '../session.ts'
import type { Host, Hosts, Slot } from './hosts.ts'

/** The default `resumeWindow` (ms). */
export const DEFAULT_RESUME_WINDOW = 30_000
/** A failed attempt to re-attach a session is tried again after this long, while the host is up. */
const REATTACH_RETRY_MS = 500
/** Attempts that fail in a row on a host that is up: then its worker is taken to be gone, and the session fails without waiting out its window. */
const REATTACH_TRIES = 4

/** What the resumer needs from the pool. */
export interface ResumerOwner {
  readonly closed: boolean
  /** Calls waiting may go on (a session resumed). */
  drain(): void
}

/** Re-attaches the sessions of hosts that come back. */
export class Resumer {
  /** Sessions being given a new channel now (one attempt at a time each). */
  private readonly attempting = new Set<Session>()
  /** Attempts that failed in a row, per session. */
  private readonly failed = new WeakMap<Session, number>()

  constructor(
    private readonly hosts: Hosts,
    private readonly owner: ResumerOwner,
  ) {}

  /** Wires a slot's new session: when its channel drops it waits here to be resumed. */
  watch(slot: Slot, session: Session): void {
    session.onDetach = (error) => this.hosts.detached(slot.host, session, error)
    session.onResume = () => {
      this.hosts.settled(slot.host, session, true)
      this.owner.drain()
    }
  }

  /** The session died (its window passed, or the pool closed): it no longer waits. */
  forget(slot: Slot, session: Session): void {
    this.hosts.settled(slot.host, session, false)
  }

  /** `host` is connected again: each session waiting on it gets a new channel. */
  reconnected(host: Host): void {
    for (const session of host.resuming) {
      const slot = host.slots.find((s) => s.session === session)
      if (slot) void this.attempt(slot, session)
    }
  }

  private async attempt(slot: Slot, session: Session): Promise<void> {
    const { transport } = slot.host
    if (this.attempting.has(session) || !session.detached || !session.resumeAddress || !transport.reattach) return
    this.attempting.add(session)
    try {
      const channel = await transport.reattach(slot.index, session.resumeAddress, {
        data: (chunk) => session.data(chunk),
        close: (err) => session.close(err),
        stderr: (text) => session.stderr(text),
      })
      if (this.owner.closed || !session.detached) {
        channel.destroy()
        return
      }
      await session.resume(channel)
      this.failed.delete(session)
      channel.unref?.()
    } catch (err) {
      const error = err as Error
      const tries = (this.failed.get(session) ?? 0) + 1
      this.failed.set(session, tries)
      const failure = new TransportError(`re-attaching failed: ${error.message}`, { host: transport.host, reason: 'resume', cause: error })
      if (tries >= REATTACH_TRIES && transport.up) {
        // The host answers but the worker does not: it is gone (killed, or its host rebooted).
        session.abandon(new TransportError(`worker ${session.where}: its host is back but the worker could not be re-attached (${tries} attempts; is it gone?): ${error.message}`, { host: transport.host, reason: 'resume', cause: error }))
        return
      }
      session.resumeFailed(failure)
      // The attempt found the host unreachable again: it reconnects (and re-attaches once it has).
      if (!transport.up) this.hosts.dropped(slot.host, failure)
      // Tried again while the window lasts; a host that dropped again is re-attached when it reconnects.
      setTimeout(() => {
        if (!this.owner.closed && session.detached && transport.up) void this.attempt(slot, session)
      }, REATTACH_RETRY_MS).unref()
    } finally {
      this.attempting.delete(session)
    }
  }
}
