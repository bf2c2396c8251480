#!/usr/bin/env node
/**
 * The `farpipe` command: a Unix pipe through a remote function.
 * `farpipe run tasks.ts#fn args...` prints what it yields, `farpipe pipe`
 * streams stdin into its `-` argument, `farpipe hosts` checks hosts. The
 * exit status says what went wrong (see {@link EXIT_CODES}).
 *
 * @module
 */
import { createReadStream, fstatSync } from 'node:fs'
import type { Readable } from 'node:stream'
import type { RemoteCall } from '../call/remote-call.ts'
import type { AnyFunction } from '../call/types.ts'
import { CancelError } from '../errors.ts'
import { input } from '../input.ts'
import type { PoolOptions } from '../pool/options.ts'
import type { Pool } from '../pool/pool.ts'
import { remoteInfo, type Remote } from '../remote.ts'
import type { LogEntry } from '../session.ts'
import { checkSshConfig, loadRemote, parseArgs, UsageError, type CallCommand, type HostsCommand, type HostsOptions } from './args.ts'
import { encodeItem, FormatError } from './format.ts'
import { ClosedOutput, feed, Output, Stderr, StdinError, type Counts } from './io.ts'
import type { HostInfo } from './probe.ts'
import { EXIT, messageOf, report } from './report.ts'

/**
 * The command's outputs, made before anything is written: each keeps an
 * 'error' listener for the life of the process, so a reader that goes away
 * (`| head`, `2>&1 | head`) never crashes the command, whatever writes next.
 */
const stdout = new Output(process.stdout)
/** Every message, log and progress line goes through it. */
const stderr = new Stderr(process.stderr)

/** `farpipe run` and `farpipe pipe`: one call, its items on stdout. */
async function callCommand(cmd: CallCommand): Promise<number> {
  const counts: Counts = { itemsIn: 0, bytesIn: 0, itemsOut: 0, bytesOut: 0 }
  // Remote logs go to stderr, never into the data on stdout.
  const onLog = (entry: LogEntry) => {
    stderr.print(`[${entry.where}] ${entry.line}\n`)
  }
  let call: RemoteCall<unknown, unknown, unknown> | undefined
  let cancelled: Promise<void> | undefined
  /**
   * The streams being written out (an item or a result that is a stream):
   * they outlive the call, so cancelling the call does not reach them.
   */
  const streams = new Set<ReadableStreamDefaultReader<unknown>>()
  /** Why the command stopped the call, once it did: a stream it cancelled then ends early, which is no success. */
  let stopped: { reason: unknown } | undefined
  /** Cancels the call, once it exists, and the streams being written; the first reason is the one the remote sees. */
  const cancel = (reason: unknown) => {
    stopped ??= { reason }
    if (call) cancelled ??= call.cancel(reason).catch(() => {})
    for (const reader of streams) reader.cancel(reason).catch(() => {})
  }
  // A reader of stdout or stderr that went away ends the pipeline: the call
  // is cancelled (its finally blocks run) and the command exits 0, as a
  // filter does when `head` has what it wants. An output that failed
  // otherwise is cancelled as well, and main() makes its status 1.
  let closed: string | undefined
  let interrupted = false
  const halt = (why: string) => {
    closed ??= why
    cancel(new CancelError(why))
  }
  const stdoutGone = () => halt(stdout.failure ? 'stdout failed' : 'stdout was closed')
  void stdout.closed.then(stdoutGone)
  void stderr.closed.then(() => halt(stderr.failure ? 'stderr failed' : 'stderr was closed'))
  const onSigint = () => {
    // A second Ctrl-C does not wait for the remote to confirm.
    if (interrupted || !call) process.exit(EXIT.interrupted)
    interrupted = true
    cancel(new CancelError('interrupted (SIGINT)'))
  }
  process.on('SIGINT', onSigint)

  let p: Pool | undefined
  let status: number = EXIT.ok
  try {
    // Whether or not there are hosts: a typo in -F is a usage error, not a silent run on local workers.
    if (cmd.sshConfig !== undefined) checkSshConfig(cmd.sshConfig)
    // The module first: a module that does not load is the error, and no host is connected to, nor worker started, for it.
    const { fn } = await loadRemote(cmd.target)
    // Loaded here, not at the top: `farpipe --help` and usage errors do not need them (about a third of the start-up).
    const [{ pool }, { coreOf }, { bundleModule }] = await Promise.all([import('../pool/pool.ts'), import('../call/remote-call.ts'), import('../bundle.ts')])
    // The bundle the first call ships (built already for a .ts module, which is imported as it) is made while the pool starts;
    // a failure there is the call's to report.
    bundleModule(remoteInfo(fn)!.module).catch(() => {})
    p = await pool({ ...poolHosts(cmd), workers: cmd.workers ?? 1, onLog })
    // A dropped connection pauses the call while the pool reconnects (resumeWindow): say so, and when it goes on.
    p.addEventListener('hostdown', (e) => stderr.print(`farpipe: ${e.detail.host}: connection lost, reconnecting…\n`))
    p.addEventListener('hostup', (e) => {
      if (e.detail.resumed) stderr.print(`farpipe: ${e.detail.host}: reconnected, the call goes on\n`)
    })
    const runner = p.with({
      ...(cmd.timeout !== undefined ? { timeout: cmd.timeout } : {}),
      ...(cmd.idleTimeout !== undefined ? { idleTimeout: cmd.idleTimeout } : {}),
      ...(cmd.highWaterMark !== undefined ? { highWaterMark: cmd.highWaterMark } : {}),
    })
    const args = cmd.args.map((a, i) => (i === cmd.stdinIndex ? input : a))
    const run = runner.run as (fn: Remote<AnyFunction>, ...args: unknown[]) => RemoteCall<unknown, unknown, unknown>
    call = run(fn, ...args)
    const current = call
    if (closed) cancel(new CancelError(closed)) // a reader went away before the call existed
    stderr.showProgress(counts)
    // The first of the input's fault and the call's failure is the one reported.
    let inputError: unknown
    let callFailed = false
    if (cmd.stdinIndex !== undefined) {
      feed(stdinStream(cmd.input), current.writable, cmd.input, counts).catch((err) => {
        // A call that ended also fails the writer: that is the call's error, reported as such.
        if ((err instanceof FormatError || err instanceof StdinError) && !callFailed) {
          inputError = err
          cancel(err)
        }
      })
    }
    /** Writes one item; an item that is a stream is written chunk by chunk, each chunk as an item (read as fast as stdout takes it). */
    const put = async (value: unknown, where: string): Promise<void> => {
      if (!(value instanceof ReadableStream)) {
        const data = encodeItem(value, where, cmd.output)
        counts.itemsOut++
        counts.bytesOut += data.length
        return stdout.write(data)
      }
      const reader = (value as ReadableStream<unknown>).getReader()
      streams.add(reader)
      try {
        for (let chunk = 0; ; chunk++) {
          const { done, value: v } = await reader.read()
          // A read pending when the stream was cancelled ends as if the stream had: it was cut short instead.
          if (done && stopped) throw stopped.reason
          if (done) return
          await put(v, `chunk ${chunk} of ${where} (a stream)`)
        }
      } catch (err) {
        // Its source on the other side stops (its cancel, a generator's finally, runs) rather than waiting for the pool to close.
        await reader.cancel(err).catch(() => {})
        throw err
      } finally {
        streams.delete(reader)
      }
    }
    let index = 0
    try {
      const reader = current.readable.getReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        await put(value, `item ${index++}`)
      }
      const result = await current.result
      // What the call did decides, not how the function was declared: a plain
      // function that returns a generator streams, and then its result is the
      // generator's return value, which is not an item (as for a function*).
      // A result that is a stream is written as yielded items are.
      if (!coreOf(current).streamed && result !== undefined) await put(result, 'the result')
    } catch (err) {
      callFailed = true
      if (err instanceof ClosedOutput) stdoutGone()
      else if (err instanceof FormatError) cancel(err)
      await cancelled
      if (interrupted) status = EXIT.interrupted
      else if (closed) status = EXIT.ok
      else if (inputError) status = report(inputError, stderr)
      else status = report(err, stderr)
    }
  } catch (err) {
    status = interrupted ? EXIT.interrupted : report(err, stderr)
  } finally {
    stderr.hideProgress()
    await cancelled
    await p?.close()
    process.off('SIGINT', onSigint)
  }
  return status
}

/** Bytes read from stdin at a time when it is a file and `--in bytes`: a read (and an item, and a frame) per MiB, not per 64 KiB. */
const FILE_READ_BYTES = 1024 * 1024

/**
 * Stdin: `process.stdin`, or, for raw bytes from a regular file (`< big.tar`),
 * a stream that reads it a MiB at a time (node's stdin reads 64 KiB: each
 * read a round trip to the thread pool, each chunk an item and a frame).
 */
function stdinStream(format: string): Readable {
  if (format === 'bytes') {
    try {
      if (fstatSync(0).isFile()) return createReadStream('', { fd: 0, autoClose: false, highWaterMark: FILE_READ_BYTES })
    } catch {
      // Not a file we can stat: the usual stdin.
    }
  }
  return process.stdin
}

/**
 * The pool options that say where to run and how to reach the hosts. A
 * `--known-hosts` policy goes on every host, where it beats the config's
 * StrictHostKeyChecking, as ssh's `-o` beats its config file. (The SSH
 * config itself is checked before, once: see {@link checkSshConfig}.)
 */
function poolHosts(cmd: HostsOptions, hosts = cmd.hosts): Pick<PoolOptions, 'hosts' | 'sshConfig'> {
  const policy = cmd.knownHosts
  return {
    ...(hosts.length > 0 ? { hosts: policy ? hosts.map((host) => ({ host, knownHosts: policy })) : hosts } : {}),
    ...(cmd.sshConfig !== undefined ? { sshConfig: cmd.sshConfig } : {}),
  }
}

// -- farpipe hosts --------------------------------------------------------------

/**
 * What probing one host found: its facts; or that it is unreachable (no
 * worker came up: it cannot be connected to, logged into, or run node); or
 * that it is reachable but the probe failed there.
 */
type Outcome = { host: string; info: HostInfo; workers: number } | { host: string; unreachable: string } | { host: string; failed: string }

async function probe(host: string, cmd: HostsCommand): Promise<Outcome> {
  const [{ pool }, { hostInfo }] = await Promise.all([import('../pool/pool.ts'), import('./probe.ts')])
  let p: Pool
  try {
    p = await pool({ ...poolHosts(cmd, [host]), ...(cmd.workers !== undefined ? { workers: cmd.workers } : {}), onLog: (e) => stderr.print(`[${e.where}] ${e.line}\n`) })
  } catch (err) {
    return { host, unreachable: messageOf(err) }
  }
  try {
    const info = await p.with({ timeout: 30_000 }).run(hostInfo)
    return { host, info, workers: p.hosts[0]?.workers ?? 0 }
  } catch (err) {
    // A worker is up, so the host is reachable: the probe threw, timed out, or lost its connection meanwhile.
    return { host, failed: messageOf(err) }
  } finally {
    // What the probe found stands even when the pool does not close cleanly.
    await p.close().catch(() => {})
  }
}

/**
 * Probes every host at once; prints them in the order given. The exit
 * status is the worst case among the hosts (HOSTS_HELP in help.ts says it):
 * 0 when every host answered, 1 when a reachable host's probe failed, 2
 * when a host is unreachable.
 */
export async function hostsCommand(cmd: HostsCommand): Promise<number> {
  // A bad -F is the command's mistake, said once, not on each host's line.
  try {
    if (cmd.sshConfig !== undefined) checkSshConfig(cmd.sshConfig)
  } catch (err) {
    return report(err, stderr)
  }
  // Nothing to cancel but the probes, whose connections end with the process.
  const onSigint = () => process.exit(EXIT.interrupted)
  process.on('SIGINT', onSigint)
  let outcomes: Outcome[]
  try {
    outcomes = await Promise.all(cmd.hosts.map((h) => probe(h, cmd)))
  } finally {
    process.off('SIGINT', onSigint)
  }
  const width = Math.max(...cmd.hosts.map((h) => h.length))
  try {
    for (const o of outcomes) {
      const name = o.host.padEnd(width)
      if ('unreachable' in o) await stdout.write(`${name}  unreachable: ${o.unreachable}\n`)
      else if ('failed' in o) await stdout.write(`${name}  probe failed: ${o.failed}\n`)
      else {
        const { node, platform, arch, cores, cacheDir } = o.info
        await stdout.write(`${name}  ok  node ${node}  ${platform}/${arch}  ${o.workers} workers (${cores} cores)  cache ${cacheDir}\n`)
      }
    }
  } catch (err) {
    // The reader of stdout has gone (`| head -1`): it has what it wanted; the status still says how the hosts are.
    if (!(err instanceof ClosedOutput)) throw err
  }
  if (outcomes.some((o) => 'unreachable' in o)) return EXIT.usage
  if (outcomes.some((o) => 'failed' in o)) return EXIT.failed
  return EXIT.ok
}

/**
 * The status once everything is written. An output that failed (a full
 * disk; not a reader that went away) lost what was written to it, which is
 * never a success. A failed stderr cannot be told about.
 */
async function settle(status: number): Promise<number> {
  await stdout.flush()
  if (!stdout.failure && !stderr.failure) return status
  if (stdout.failure) stderr.complain(`writing stdout failed: ${stdout.failure.message}`)
  return status === EXIT.ok ? EXIT.failed : status
}

async function main(argv: string[]): Promise<number> {
  let cmd
  try {
    cmd = parseArgs(argv)
  } catch (err) {
    return report(err, stderr)
  }
  if (cmd.command === 'help') {
    if (cmd.missing) {
      stderr.print(cmd.text)
      return EXIT.usage
    }
    await stdout.write(cmd.text).catch(() => {})
    return settle(EXIT.ok)
  }
  return settle(cmd.command === 'hosts' ? await hostsCommand(cmd) : await callCommand(cmd))
}

// Exits at once when done: stdin may still be open (the function stopped reading it), and nothing else is left to wait for.
main(process.argv.slice(2)).then(
  (status) => process.exit(status),
  (err) => {
    stderr.complain((err as Error)?.stack ?? String(err))
    process.exit(EXIT.failed)
  },
)
