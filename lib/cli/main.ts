#!/usr/bin/env node
/**
 * The `farpipe` command: a Unix pipe through a remote function.
 * `farpipe run tasks.ts#fn args...` prints what it yields, `farpipe pipe`
 * streams stdin into its `-` argument, `farpipe hosts` checks hosts. The
 * exit status says what went wrong (see {@link EXIT_CODES}).
 *
 * @module
 */
import { coreOf, type AnyFunction, type RemoteCall } from '../call.ts'
import { CancelError, FarpipeError, RemoteError, TimeoutError } from '../errors.ts'
import { input } from '../input.ts'
import { pool, type Pool } from '../pool.ts'
import type { Remote } from '../remote.ts'
import type { LogEntry } from '../session.ts'
import { loadRemote, parseArgs, UsageError, type CallCommand, type HostsCommand } from './args.ts'
import { ClosedOutput, encodeItem, feed, FormatError, Output, Progress, type Counts } from './io.ts'
import { hostInfo, type HostInfo } from './probe.ts'

/** Exit statuses (documented in `--help` and the README). */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const

/** Prints `farpipe: message` on stderr. */
export function complain(message: string): void {
  process.stderr.write(`farpipe: ${message}\n`)
}

/** The exit status for an error of a call, after printing what the user needs to know. */
function report(err: unknown): number {
  if (err instanceof UsageError || err instanceof FormatError) {
    complain(err.message)
    return EXIT.usage
  }
  if (err instanceof RemoteError) {
    complain(`the remote function threw: ${err.message}`)
    if (err.remoteStack) process.stderr.write(`${err.remoteStack}\n`)
    return EXIT.failed
  }
  if (err instanceof TimeoutError) {
    complain(err.message)
    return EXIT.failed
  }
  // Transport, host key, protocol and serialization errors, a module that does not bundle: the setup, not the function.
  if (err instanceof FarpipeError) {
    complain(err.message)
    return EXIT.usage
  }
  complain((err as Error)?.stack ?? String(err))
  return EXIT.failed
}

/** `farpipe run` and `farpipe pipe`: one call, its items on stdout. */
async function callCommand(cmd: CallCommand): Promise<number> {
  const counts: Counts = { itemsIn: 0, bytesIn: 0, itemsOut: 0, bytesOut: 0 }
  let progress: Progress | undefined
  // Remote logs go to stderr, never into the data on stdout.
  const onLog = (entry: LogEntry) => {
    progress?.clear()
    process.stderr.write(`[${entry.where}] ${entry.line}\n`)
  }
  let call: RemoteCall<unknown, unknown, unknown> | undefined
  let stop: 'epipe' | 'sigint' | undefined
  let cancelled: Promise<void> = Promise.resolve()
  const halt = (why: 'epipe' | 'sigint') => {
    if (stop) return
    stop = why
    if (call) cancelled = call.cancel(new CancelError(why === 'sigint' ? 'interrupted (SIGINT)' : 'stdout was closed')).catch(() => {})
  }
  const onSigint = () => {
    // A second Ctrl-C does not wait for the remote to confirm.
    if (stop === 'sigint' || !call) process.exit(EXIT.interrupted)
    halt('sigint')
  }
  process.on('SIGINT', onSigint)

  let p: Pool | undefined
  let status: number = EXIT.ok
  const output = new Output(process.stdout)
  void output.closed.then(() => halt('epipe'))
  try {
    const { fn } = await loadRemote(cmd.target)
    p = await pool({ ...(cmd.hosts.length > 0 ? { hosts: cmd.hosts } : {}), workers: cmd.workers ?? 1, onLog })
    const runner = p.with({
      ...(cmd.timeout !== undefined ? { timeout: cmd.timeout } : {}),
      ...(cmd.idleTimeout !== undefined ? { idleTimeout: cmd.idleTimeout } : {}),
      ...(cmd.highWaterMark !== undefined ? { highWaterMark: cmd.highWaterMark } : {}),
    })
    const args = cmd.args.map((a, i) => (i === cmd.stdinIndex ? input : a))
    const run = runner.run as (fn: Remote<AnyFunction>, ...args: unknown[]) => RemoteCall<unknown, unknown, unknown>
    call = run(fn, ...args)
    const current = call
    if (stop) halt(stop) // Ctrl-C or EPIPE before the call existed
    progress = new Progress(counts)
    let inputError: unknown
    if (cmd.stdinIndex !== undefined) {
      feed(process.stdin, current.writable, cmd.format, cmd.bytes, counts).catch((err) => {
        // A call that ended also fails the writer; only the input's own mistakes are reported.
        if (err instanceof FormatError) {
          inputError = err
          cancelled = current.cancel(err).catch(() => {})
        }
      })
    }
    let index = 0
    try {
      const reader = current.readable.getReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        const data = encodeItem(value, index++, cmd.format, cmd.bytes)
        counts.itemsOut++
        counts.bytesOut += data.length
        await output.write(data)
      }
      const result = await current.result
      // What the call did decides, not how the function was declared: a plain
      // function that returns a generator streams, and then its result is the
      // generator's return value, which is not an item (as for a function*).
      if (!coreOf(current).streamed && result !== undefined) await output.write(encodeItem(result, index, cmd.format, cmd.bytes))
    } catch (err) {
      if (err instanceof FormatError || err instanceof ClosedOutput) cancelled = current.cancel(err).catch(() => {})
      await cancelled
      if (stop === 'epipe') status = EXIT.ok
      else if (stop === 'sigint') status = EXIT.interrupted
      else if (inputError) status = report(inputError)
      else if (output.failure) status = report(output.failure)
      else status = report(err)
    }
  } catch (err) {
    status = stop === 'sigint' ? EXIT.interrupted : report(err)
  } finally {
    progress?.stop()
    await cancelled
    await p?.close()
    process.off('SIGINT', onSigint)
  }
  await output.flush()
  return status
}

// -- farpipe hosts --------------------------------------------------------------

type Outcome = { host: string; info: HostInfo; workers: number } | { host: string; error: string }

async function probe(host: string, workers: number | undefined): Promise<Outcome> {
  try {
    const p = await pool({ hosts: [host], ...(workers !== undefined ? { workers } : {}), onLog: (e) => process.stderr.write(`[${e.where}] ${e.line}\n`) })
    try {
      const info = await p.with({ timeout: 30_000 }).run(hostInfo)
      return { host, info, workers: p.hosts[0]?.workers ?? 0 }
    } finally {
      await p.close()
    }
  } catch (err) {
    return { host, error: (err as Error)?.message ?? String(err) }
  }
}

/** Probes every host at once; prints them in the order given. Exit status 0 when all are reachable, else 2. */
export async function hostsCommand(cmd: HostsCommand): Promise<number> {
  const outcomes = await Promise.all(cmd.hosts.map((h) => probe(h, cmd.workers)))
  const width = Math.max(...cmd.hosts.map((h) => h.length))
  for (const o of outcomes) {
    const name = o.host.padEnd(width)
    if ('error' in o) {
      process.stdout.write(`${name}  unreachable: ${o.error}\n`)
    } else {
      const { node, platform, arch, cores, cacheDir } = o.info
      process.stdout.write(`${name}  ok  node ${node}  ${platform}/${arch}  ${o.workers} workers (${cores} cores)  cache ${cacheDir}\n`)
    }
  }
  return outcomes.every((o) => !('error' in o)) ? 0 : 2
}

async function main(argv: string[]): Promise<number> {
  let cmd
  try {
    cmd = parseArgs(argv)
  } catch (err) {
    return report(err)
  }
  if (cmd.command === 'help') {
    if (cmd.missing) {
      process.stderr.write(cmd.text)
      return EXIT.usage
    }
    process.stdout.write(cmd.text)
    return EXIT.ok
  }
  if (cmd.command === 'hosts') return hostsCommand(cmd)
  return callCommand(cmd)
}

// Exits at once when done: stdin may still be open (the function stopped reading it), and nothing else is left to wait for.
main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (err) => {
    complain((err as Error)?.stack ?? String(err))
    process.exit(EXIT.failed)
  },
)
