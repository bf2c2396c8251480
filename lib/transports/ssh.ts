/**
 * The SSH transport: worker processes on another host, each on its own exec
 * channel of an ssh2 connection. The host is prepared once (node found, cache
 * made, worker bundle uploaded if missing); a dropped connection fails every
 * call on it with a `TransportError` naming the host, and the next call
 * reconnects.
 *
 * One connection carries up to 8 worker channels: OpenSSH's sshd allows 10
 * sessions per connection by default (MaxSessions), so a host with more
 * workers gets a second connection rather than refused channels.
 *
 * @module
 */
import * as fs from 'node:fs'
import type { Client, ClientChannel } from 'ssh2'
import type { Channel } from '../link.ts'
import { bootstrap, checkCacheDir, launchCommand, relayCommand, REMOTE_COMMAND, scriptLine, workerCommand, type Exec, type HostFacts, type Probe } from '../ssh/bootstrap.ts'
import { LaunchWatch, type LaunchOutcome } from '../ssh/launch.ts'
import type { ResolvedHost } from '../ssh/config.ts'
import { TransportError } from '../errors.ts'
import { connect, type Connection } from '../ssh/connect.ts'
import { workerBundle } from '../worker/locate.ts'
import { StderrLines, StderrTail, workerEnded, type Transport, type TransportEvents } from './transport.ts'

/** Worker channels per SSH connection (sshd's default MaxSessions is 10; two stay free for bootstrap commands). */
const CHANNELS_PER_CONNECTION = 8
/** Lines of a worker's stderr kept to explain its death. */
const STDERR_TAIL = 20

/** Options the pool passes down to an SSH host. */
export interface SshTransportOptions {
  /** Workers when the host does not say. @default the host's core count */
  workers?: number
  /** Extra arguments for node on the host. @default [] */
  nodeArgs?: string[]
  /** Bundle cache on the host when the host does not say. @default `~/.cache/farpipe` there */
  cacheDir?: string
}

/** Worker 0 as the launcher left it: its channel, and what it said before the pool took it. */
interface Launched {
  ch: ClientChannel
  data: Buffer[]
  stderr: string[]
  exit: { code: number | null; signal: string | undefined } | undefined
  closed: boolean
  /** Removes the launcher's own listeners from the channel (and only those: ssh2's stay). */
  detach(): void
}

interface Group {
  connection: Promise<Connection> | undefined
  /** Channels opened on the current connection, closed with its error if it drops. */
  channels: Set<{ close(error: Error): void }>
}

/** The largest channel data the server takes in one packet (OpenSSH: 32 KiB). */
function packetSize(ch: ClientChannel): number {
  const size = (ch as unknown as { outgoing?: { packetSize?: number } }).outgoing?.packetSize
  return typeof size === 'number' && size > 0 ? size : 32 * 1024
}

/** Pieces up to this size may be copied to share a packet; larger ones are only ever sliced. */
const JOIN_LIMIT = 2048

/**
 * Cuts a batch into writes of one SSH packet each (ssh2 makes a packet per
 * write, and every packet costs encryption, random padding and a system
 * call). A large buffer is sliced into packet-sized views and never copied;
 * small pieces between large ones (frame headers, say) are joined into one
 * packet. So a frame header and a 64 KiB chunk make three packets: one short
 * and two full. Topping up the header's packet with 32 KiB of the chunk
 * would save that short packet, but the copy and the garbage it leaves cost
 * the caller more (measured: 8% more CPU per MiB uploaded).
 */
export function packets(chunks: Uint8Array[], size: number): Uint8Array[] {
  const out: Uint8Array[] = []
  let pending: Uint8Array[] = []
  let pendingBytes = 0
  const emit = () => {
    if (pendingBytes === 0) return
    out.push(pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes))
    pending = []
    pendingBytes = 0
  }
  for (const chunk of chunks) {
    let at = 0
    while (chunk.byteLength - at > JOIN_LIMIT) {
      emit()
      const take = Math.min(size, chunk.byteLength - at)
      out.push(chunk.subarray(at, at + take))
      at += take
    }
    while (at < chunk.byteLength) {
      const take = Math.min(size - pendingBytes, chunk.byteLength - at)
      pending.push(chunk.subarray(at, at + take))
      pendingBytes += take
      at += take
      if (pendingBytes === size) emit()
    }
  }
  emit()
  return out
}

/**
 * Starts `script` on a new exec channel (no pty): the login shell runs
 * {@link REMOTE_COMMAND}, whose sh reads the script from the channel's first
 * line, written here before anything else.
 */
function execScript(client: Client, script: string, done: (err: Error | undefined, ch: ClientChannel) => void): void {
  try {
    client.exec(REMOTE_COMMAND, { pty: false }, (err, ch) => {
      if (!err) ch.write(scriptLine(script))
      done(err, ch)
    })
  } catch (err) {
    // ssh2 throws at once on a connection that has just closed ("Not connected"): the same failure, reported the same way.
    done(err as Error, undefined as unknown as ClientChannel)
  }
}

/** Runs bootstrap's commands on exec channels of an ssh2 connection (no pty). */
function sshExec(client: Client): Exec {
  return (script, input) =>
    new Promise((resolve, reject) => {
      execScript(client, script, (err, ch) => {
        if (err) return reject(err)
        const out: Buffer[] = []
        let errText = ''
        let code: number | null = null
        ch.on('data', (d: Buffer) => out.push(d))
        // stderr shares the channel window with stdout: always read it.
        ch.stderr.on('data', (d: Buffer) => (errText += d.toString('utf8')))
        ch.on('exit', (c: number | null) => (code = c))
        ch.on('close', () => resolve({ code, stdout: Buffer.concat(out), stderr: errText }))
        if (input === undefined) ch.end()
        else if (Buffer.isBuffer(input)) ch.end(input)
        else fs.createReadStream(input.file).pipe(ch)
      })
    })
}

/** Worker processes on one SSH host. */
export class SshTransport implements Transport {
  readonly host: string
  /** The bundle cache on the host: its own `cacheDir`, else the pool's; the worker and the bundles share it. */
  readonly cacheDir: string | undefined
  private readonly groups: Group[] = []
  private facts: HostFacts | undefined
  private failure: Error | undefined
  private closing = false

  constructor(private readonly spec: ResolvedHost, private readonly options: SshTransportOptions = {}) {
    this.host = spec.name
    this.cacheDir = spec.cacheDir ?? options.cacheDir
    checkCacheDir(this.cacheDir, this.host)
  }

  get up(): boolean {
    return this.failure === undefined
  }

  /** Connects (through any jump hosts), prepares the host, and says how many workers it runs. */
  async connect(): Promise<number> {
    await this.prepared()
    return this.spec.workers ?? this.options.workers ?? this.facts!.cores
  }

  /** The first connection, with the host prepared (facts known). */
  private async prepared(): Promise<Connection> {
    const conn = await this.connection(0)
    if (!this.facts) {
      try {
        await (this.preparing ??= this.prepare(conn).finally(() => (this.preparing = undefined)))
      } catch (err) {
        // A host that cannot run workers is down until tried again, on a new connection.
        this.failure = err as Error
        conn.end()
        throw err
      }
    }
    return conn
  }

  private preparing: Promise<void> | undefined
  /** Worker 0, started together with the probe, until the pool opens it. */
  private launched: Launched | undefined

  /**
   * Prepares the host. The first worker is started with the probe folded in
   * (one exec, one node start: see bootstrap's launcher); when the host is
   * not ready for it (node missing or old, the worker bundle not uploaded
   * yet, `node: 'upload'`), the host is prepared the long way.
   */
  private async prepare(conn: Connection): Promise<void> {
    const bundle = await workerBundle()
    // Extra node arguments may name a script of their own (a loader, say) that would not run the launcher: then the long way.
    let known: Probe | undefined
    if (this.spec.node !== 'upload' && (this.options.nodeArgs ?? []).length === 0) {
      const { running, probe } = await this.launch(conn, bundle.hash)
      if (running) {
        this.facts = running.facts
        this.launched = running
        return
      }
      known = probe
    }
    this.facts = await bootstrap(sshExec(conn.client), { name: this.host, node: this.spec.node, cacheDir: this.cacheDir }, bundle, known)
  }

  /** Starts the launcher; resolves as {@link LaunchWatch.outcome} does (nothing when the channel would not open). */
  private launch(conn: Connection, hash: string): Promise<LaunchOutcome<Launched>> {
    const host = { node: this.spec.node, cacheDir: this.cacheDir }
    const command = launchCommand(host, hash, this.spec.env, this.options.nodeArgs ?? [])
    return new Promise((resolve) => {
      execScript(conn.client, command, (err, ch) => {
        if (err) return resolve({})
        const onData = (d: Buffer) => early.data.push(d)
        const onStderr = (t: string) => watch.stderr(t)
        const onExit = (code: number | null, signal?: string) => (early.exit = { code, signal })
        const onClose = () => {
          early.closed = true
          watch.closed()
        }
        const early: Launched = {
          ch,
          data: [],
          stderr: [],
          exit: undefined,
          closed: false,
          detach: () => {
            ch.off('data', onData)
            ch.stderr.off('data', onStderr)
            ch.off('exit', onExit)
            ch.off('close', onClose)
          },
        }
        const watch = new LaunchWatch({ name: this.host, node: this.spec.node }, hash, early, () => ch.close())
        ch.on('data', onData)
        ch.stderr.setEncoding('utf8')
        ch.stderr.on('data', onStderr)
        ch.on('exit', onExit)
        ch.on('close', onClose)
        resolve(watch.outcome)
      })
    })
  }

  async open(index: number, events: TransportEvents): Promise<Channel> {
    const group = this.group(Math.floor(index / CHANNELS_PER_CONNECTION))
    await this.prepared()
    const conn = await this.connection(Math.floor(index / CHANNELS_PER_CONNECTION))
    const where = `${this.host}/${index}`
    const early = index === 0 ? this.launched : undefined
    if (early) this.launched = undefined
    const ch = early?.ch ?? await new Promise<ClientChannel>((resolve, reject) => {
      const command = workerCommand(this.facts!, this.spec.env, this.options.nodeArgs ?? [])
      execScript(conn.client, command, (err, stream) => {
        if (err) {
          const hint = /open failure|prohibited/i.test(err.message) ? ' (sshd may allow fewer sessions per connection: see MaxSessions)' : ''
          reject(new TransportError(`cannot start worker ${where}: ${err.message}${hint}`, { host: this.host, reason: 'closed', cause: err }))
        } else resolve(stream)
      })
    })
    early?.detach()
    return this.channelOf(ch, index, conn, group, events, early)
  }

  /**
   * A new channel to worker `index`, which still runs (its connection
   * dropped): a stream-local forward to its resume socket, or, where sshd
   * refuses those (`AllowStreamLocalForwarding no`), a relay run with exec.
   */
  async reattach(index: number, address: string, events: TransportEvents): Promise<Channel> {
    const n = Math.floor(index / CHANNELS_PER_CONNECTION)
    const group = this.group(n)
    await this.prepared()
    const conn = await this.connection(n)
    const where = `${this.host}/${index}`
    const ch = await new Promise<ClientChannel>((resolve, reject) => {
      const forward = (done: (err: Error | undefined, stream?: ClientChannel) => void) => {
        try {
          conn.client.openssh_forwardOutStreamLocal(address, (err, stream) => done(err, stream as ClientChannel))
        } catch (err) {
          done(err as Error)
        }
      }
      forward((err, stream) => {
        if (!err) return resolve(stream!)
        // The connection dropped again meanwhile: no relay either; the pool reconnects and tries again.
        if (conn.dead) return reject(new TransportError(`cannot reach worker ${where} again: ${err.message}`, { host: this.host, reason: 'closed', cause: err }))
        execScript(conn.client, relayCommand(this.facts!, address), (err2, relay) => {
          if (err2) reject(new TransportError(`cannot reach worker ${where} again: ${err.message}; its relay: ${err2.message}`, { host: this.host, reason: 'closed', cause: err2 }))
          else resolve(relay)
        })
      })
    })
    return this.channelOf(ch, index, conn, group, events)
  }

  /** The ssh2 channel of worker `index` as a farpipe {@link Channel}: its stderr read, its close explained. */
  private channelOf(ch: ClientChannel, index: number, conn: Connection, group: Group, events: TransportEvents, early?: Launched): Channel {
    const where = `${this.host}/${index}`
    const tail = new StderrTail(STDERR_TAIL)
    const lines = new StderrLines((text) => events.stderr(text))
    let exit: { code: number | null; signal: string | undefined } | undefined
    let closed = false
    const close = (error: Error) => {
      if (closed) return
      closed = true
      group.channels.delete(member)
      lines.flush()
      events.close(error)
    }
    const member = { close }
    group.channels.add(member)
    ch.on('data', (chunk: Buffer) => events.data(chunk))
    // stderr shares the channel's window with stdout: always read it (a stream-local channel has none).
    ch.stderr?.setEncoding('utf8')
    ch.stderr?.on('data', (text: string) => {
      tail.push(text)
      lines.push(text)
    })
    ch.on('exit', (code: number | null, signal?: string) => (exit = { code, signal }))
    if (early) {
      // What worker 0 said before the pool took it: replayed in order.
      exit = early.exit
      for (const text of early.stderr) {
        tail.push(text)
        lines.push(text)
      }
      for (const d of early.data) events.data(d)
    }
    const onClose = () => {
      if (exit) {
        const how = exit.signal ? `was killed by SIG${exit.signal}` : `exited with code ${exit.code}`
        const last = tail.describe()
        close(workerEnded(new TransportError(`worker ${where} ${how}${last}`, { host: this.host, reason: 'lost' })))
        return
      }
      // No exit status: the connection itself is probably going; let its error (which says why) win.
      const settle = setTimeout(() => close(new TransportError(`the channel of worker ${where} closed without an exit status`, { host: this.host, reason: 'lost' })), 100)
      void conn.closed.then((err) => {
        clearTimeout(settle)
        close(err)
      })
    }
    ch.on('close', onClose)
    if (early?.closed) onClose()
    // Writes made in one tick are gathered and cut into whole packets together
    // (a credit frame and a batch, or several flushes, share packets).
    let queued: Uint8Array[] = []
    const drain = () => {
      const chunks = queued
      queued = []
      for (const packet of packets(chunks, packetSize(ch))) ch.write(packet)
    }
    const enqueue = (chunks: Uint8Array[]) => {
      if (queued.length === 0) process.nextTick(drain)
      for (const c of chunks) queued.push(c)
    }
    return {
      write: (chunk) => enqueue([chunk]),
      writev: enqueue,
      // What was written this tick goes before the end (a `bye` must reach the worker before its input ends).
      end: () => {
        if (queued.length > 0) drain()
        ch.end()
      },
      destroy: () => {
        // Closing the channel does not stop a worker that is stuck in a loop
        // or stopped: ask sshd to kill it first (the "signal" request).
        try {
          ch.signal('KILL')
        } catch {
          // An old sshd may refuse signal requests; closing is all that is left.
        }
        ch.close()
        close(workerEnded(new TransportError(`worker ${where} was destroyed`, { host: this.host, reason: 'lost' })))
      },
      unref: () => conn.unref(),
      kill: (pid) => {
        if (!Number.isSafeInteger(pid) || pid < 2) return
        // sshd refuses signal requests for forced commands; a kill run over the same connection works everywhere.
        execScript(conn.client, `kill -KILL ${pid} 2>/dev/null`, (err, stream) => {
          if (!err) stream.on('data', () => {}).on('close', () => {}).end().stderr.resume()
        })
      },
    }
  }

  async close(): Promise<void> {
    this.closing = true
    this.launched?.ch.close()
    this.launched = undefined
    const settled = await Promise.allSettled(this.groups.flatMap((g) => (g.connection ? [g.connection] : [])))
    const conns = settled.flatMap((c) => (c.status === 'fulfilled' ? [c.value] : []))
    // The workers were sent the end of their input: give their channels a moment to close, then hang up.
    const deadline = Date.now() + 2000
    while (this.groups.some((g) => g.channels.size > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    for (const c of conns) c.end()
  }

  private group(n: number): Group {
    return (this.groups[n] ??= { connection: undefined, channels: new Set() })
  }

  /** Connection `n` of this host, connecting (and, for the first, preparing the host) when needed. */
  private connection(n: number): Promise<Connection> {
    const g = this.group(n)
    if (this.closing) return Promise.reject(new TransportError(`the pool of ${this.host} is closing`, { host: this.host, reason: 'closed' }))
    if (g.connection) return g.connection
    const attempt = (async () => {
      const conn = await connect(this.spec)
      void conn.closed.then((err) => {
        if (g.connection === attempt) g.connection = undefined
        if (!this.closing) this.failure = err
        for (const ch of [...g.channels]) ch.close(err)
      })
      this.failure = undefined
      return conn
    })()
    g.connection = attempt
    attempt.catch((err) => {
      if (g.connection === attempt) g.connection = undefined
      this.failure = err
    })
    return attempt
  }
}
