/**
 * What the command tells the user when a command fails: a message on
 * stderr, and the exit status that goes with it (the table is
 * {@link EXIT_CODES} in help.ts, printed by `--help`).
 *
 * @module
 */
import { FarpipeError, HostKeyError, RemoteError, TimeoutError } from '../errors.ts'
import { UsageError } from './args.ts'
import { FormatError } from './format.ts'
import { StdinError, type Stderr } from './io.ts'

/** Exit statuses (documented in `--help` and the README). */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const

/** The library's advice for a host key that is not known yet, which a user of the command cannot follow as written. */
const LIBRARY_ACCEPT_NEW = "pass knownHosts: 'accept-new'"
/** The same advice in the command's terms. */
const COMMAND_ACCEPT_NEW = 'run again with --known-hosts accept-new (it records the key)'

/**
 * The message of `err` as a user of the command should read it. A host key
 * error's advice is written for library users (`knownHosts: 'accept-new'`,
 * a host option): the command names its own option instead, also where
 * the error is quoted in another one's message (a pool whose hosts are all
 * down lists why for each). The error itself is left as it is, for the
 * library's users.
 */
export function messageOf(err: unknown): string {
  const message = (err as Error)?.message ?? String(err)
  return holdsHostKeyError(err) ? message.replaceAll(LIBRARY_ACCEPT_NEW, COMMAND_ACCEPT_NEW) : message
}

/** True when `err` is a HostKeyError or holds one: as its `cause`, or among an AggregateError's `errors`. */
function holdsHostKeyError(err: unknown, depth = 0): boolean {
  if (!(err instanceof Error) || depth > 8) return false
  if (err instanceof HostKeyError) return true
  if (err instanceof AggregateError && err.errors.some((e) => holdsHostKeyError(e, depth + 1))) return true
  return holdsHostKeyError(err.cause, depth + 1)
}

/** Prints what the user needs to know about `err`; returns the exit status it means. */
export function report(err: unknown, stderr: Stderr): number {
  if (err instanceof UsageError || err instanceof FormatError || err instanceof StdinError) {
    stderr.complain(err.message)
    return EXIT.usage
  }
  if (err instanceof RemoteError) {
    stderr.complain(`the remote function threw: ${err.message}`)
    if (err.remoteStack) stderr.print(`${err.remoteStack}\n`)
    return EXIT.failed
  }
  if (err instanceof TimeoutError) {
    stderr.complain(err.message)
    return EXIT.failed
  }
  // Transport, host key, protocol and serialization errors, a module that does not bundle: the setup, not the function.
  if (err instanceof FarpipeError) {
    stderr.complain(messageOf(err))
    return EXIT.usage
  }
  stderr.complain((err as Error)?.stack ?? String(err))
  return EXIT.failed
}
