/**
 * What the command tells the user when a command fails: a message on
 * stderr, and the exit status that goes with it (the table is
 * {@link EXIT_CODES} in help.ts, printed by `--help`).
 *
 * @module
 */
import { FarpipeError, RemoteError, TimeoutError } from '../errors.ts'
import { UsageError } from './args.ts'
import { FormatError } from './format.ts'
import { StdinError, type Stderr } from './io.ts'

/** Exit statuses (documented in `--help` and the README). */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const

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
    stderr.complain(err.message)
    return EXIT.usage
  }
  stderr.complain((err as Error)?.stack ?? String(err))
  return EXIT.failed
}
