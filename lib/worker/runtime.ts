/**
 * The worker's runtime: the far end of a session. It loads bundles (from its
 * cache, or asks the caller for them), answers pings, and routes each call's
 * frames to its {@link RunningCall} (call.ts), which runs the function and
 * pumps what it yields within the caller's credit: the items of the
 * caller's streams to the call's inputs (call-inputs.ts), credit and cancels
 * of the streams it sends to its senders (call-senders.ts).
 *
 * Nothing here touches the process: `main.ts` wires it to stdio, and the
 * memory transport runs it in the caller's own process.
 *
 * @module
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { pathToFileURL } from 'node:url'
import { readValue } from '../codec/values.ts'
import { streamsInItems } from '../codec/items.ts'
import { context } from '../context.ts'
import { FarpipeError, ProtocolError, TransportError } from '../errors.ts'
import { Link, type Channel } from '../link.ts'
import { RunningCall } from './call.ts'
import type { CallRuntime } from './call-runtime.ts'
import type { Limits } from '../options.ts'
import { remoteInfo } from '../remote.ts'
import { publishRuntime } from '../runtime-exports.ts'
import { needsContext } from '../bundle.ts'
import { asBuffer, Kind, kindName, PROTOCOL_VERSION, type Frame } from '../wire/frame.ts'
import { payloads, type CallerHello, type CallHeader, type ResumeAnswer, type ResumeRequest, type WorkerHello } from '../wire/payloads.ts'
import { ReplayLog } from '../replay.ts'

/** The default bundle cache: `$XDG_CACHE_HOME/farpipe` or `~/.cache/farpipe`. */
export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache')
  return path.join(base, 'farpipe')
}

/** The worker end of a session. */
/** Characters of log output kept to send while the connection is down; past them it is dropped (and counted). */
const LOG_KEPT_DETACHED = 1024 * 1024

/** How long calls have to settle once a session's resume window passed, before the worker exits regardless. */
const WINDOW_EXIT_GRACE_MS = 3000

export class WorkerRuntime extends Link implements CallRuntime {
  private hello: CallerHello | undefined
  private cacheDir = ''
  private readonly calls = new Map<number, RunningCall>()
  private readonly modules = new Map<string, Promise<Record<string, unknown>>>()
  /** Bundles whose code never names `context()` nor prints: their calls run without AsyncLocalStorage (see bundle.ts `needsContext`). */
  readonly contextFree = new Set<string>()
  private readonly bundleWaiters = new Map<string, { resolve(code: Buffer): void; reject(e: unknown): void }[]>()
  private cacheReady: Promise<void> | undefined
  private exitHook: (() => void) | undefined
  /**
   * Opens the place where a new channel can reach this worker after its
   * channel drops (main.ts: a unix socket) and returns its address; absent
   * where there is none (the memory transport, a local worker).
   */
  listen: ((cacheDir: string) => string | undefined) | undefined
  /** Set when the caller asked for a resumable session and this worker can be reached again. */
  private resumable: { token: Buffer; window: number } | undefined
  /** While the session has no channel: ends it when the window passes with no caller back. */
  private waiting: NodeJS.Timeout | undefined
  /** The caller said `bye`: the end of input that follows is the session's end, not a dropped channel. */
  private bye = false

  constructor(channel: Channel, limits?: Partial<Limits>) {
    super(limits)
    this.attach(channel)
    publishRuntime()
  }

  /** Called once the link is closed and every call has settled. */
  onExit(hook: () => void): void {
    this.exitHook = hook
  }

  /** The host name the caller gave (for log prefixes). */
  get where(): string {
    return this.hello ? `${this.hello.host}/${this.hello.worker}` : 'worker'
  }

  /** Sends a line the remote code printed. `fd` is 1 or 2. */
  log(fd: number, text: string): void {
    if (this.closedWith || !this.hello) return
    if (this.waiting) {
      // Log lines carry no credit: while the connection is down, what code prints would be kept without bound
      // to be sent again. The first LOG_KEPT_DETACHED bytes are kept; the rest is counted, and said at the resume.
      if (this.loggedDetached.bytes + text.length > LOG_KEPT_DETACHED) {
        this.droppedDetached.lines++
        this.droppedDetached.bytes += text.length
        return
      }
      this.loggedDetached.bytes += text.length
    }
    this.send(Kind.log, context().callId, 0, payloads.log(fd, text))
  }

  /** Log text kept while detached, and what was dropped past {@link LOG_KEPT_DETACHED}. */
  private loggedDetached = { bytes: 0 }
  private droppedDetached = { lines: 0, bytes: 0 }

  protected frame(f: Frame): void {
    if (f.kind === Kind.hello) return this.onHello(payloads.readJson<CallerHello>(f.payload))
    if (!this.hello) throw new ProtocolError(`a ${kindName(f.kind)} frame arrived before hello`)
    if (f.kind === Kind.bye) {
      this.bye = true
      return
    }
    if (f.kind === Kind.ping) return this.send(Kind.pong, 0, 0, undefined, true)
    if (f.kind === Kind.call) return this.onCall(f)
    if (f.kind === Kind.bundle) return this.onBundle(f.payload)
    const call = this.calls.get(f.call)
    // Frames for a call that has just finished are in flight by design: drop
    // them, and stop the streams their items name (nobody will read those).
    if (!call) {
      if (f.kind === Kind.data) streamsInItems(f.payload, (id) => this.send(Kind.cancel, f.call, id))
      return
    }
    switch (f.kind) {
      case Kind.data: return call.inputs.data(f.stream, f.payload, f.owned)
      case Kind.end: return call.inputs.end(f.stream)
      case Kind.error: return call.inputs.error(f.stream, readValue(f.payload))
      case Kind.cancel:
        if (f.stream !== 0) return call.senders.cancel(f.stream, f.payload.byteLength ? readValue(f.payload) : undefined)
        return call.cancel(f.payload.byteLength ? readValue(f.payload) : undefined)
      case Kind.credit: return call.credit(f.stream, payloads.readCredit(f.payload))
      default: throw new ProtocolError(`unexpected ${kindName(f.kind)} frame from the caller`)
    }
  }

  /** True while the session has no channel and waits for its caller to come back. */
  get detached(): boolean {
    return this.waiting !== undefined
  }

  /** True when `channel` is the one the session runs on now (a channel replaced by a resume is not). */
  current(channel: Channel): boolean {
    return this.channel === channel
  }

  protected closed(cause?: Error): void {
    if (this.closedWith) return
    if (this.resumable && !this.bye && !this.corrupt && !(cause instanceof TransportError && cause.reason === 'resume')) {
      // The channel dropped: the calls go on where they can (a producer stops when its credit runs out) and wait for the caller.
      if (this.waiting) return
      this.detachChannel()
      const { window } = this.resumable
      this.waiting = setTimeout(() => {
        this.closed(new TransportError(`no caller resumed the session within ${window} ms (its resumeWindow)`, { reason: 'resume' }))
      }, window)
      return
    }
    clearTimeout(this.waiting)
    this.waiting = undefined
    this.closedWith = cause ? FarpipeError.from(cause) : new FarpipeError('the caller closed the session')
    for (const waiters of this.bundleWaiters.values()) for (const w of waiters) w.reject(this.closedWith)
    this.bundleWaiters.clear()
    const running = [...this.calls.values()]
    for (const c of running) c.close(this.closedWith)
    Promise.allSettled(running.map((c) => c.settled)).then(() => this.exitHook?.())
    // Past its window no caller can come back: calls that do not settle on their cancel (code that never
    // looks up) get the same grace as when the caller goes away, then the process goes regardless.
    if (cause instanceof TransportError && cause.reason === 'resume') setTimeout(() => this.exitHook?.(), WINDOW_EXIT_GRACE_MS).unref()
  }

  private onHello(hello: CallerHello): void {
    if (this.hello) throw new ProtocolError('a second hello arrived')
    if (hello.v !== PROTOCOL_VERSION) {
      throw new ProtocolError(`the caller speaks protocol ${hello.v}, this worker ${PROTOCOL_VERSION}`)
    }
    this.hello = hello
    this.adopt(hello.limits)
    this.cacheDir = (hello.cacheDir ?? '').replace(/^~(?=\/|$)/, () => os.homedir()) || defaultCacheDir() // a leading ~ or ~/ is this user's home, as in bootstrap's probe
    const mine: WorkerHello = {
      v: PROTOCOL_VERSION,
      node: process.version,
      pid: process.pid,
      platform: process.platform,
      arch: process.arch,
      cacheDir: this.cacheDir,
    }
    const ask = hello.resume
    const address = ask && this.listen && /^[0-9a-f]{32}$/.test(ask.token) && Number.isSafeInteger(ask.window) && ask.window > 0 ? this.listen(this.cacheDir) : undefined
    if (address) mine.resume = { address }
    this.send(Kind.hello, 0, 0, payloads.json(mine))
    this.flush()
    // From here on every frame counts: the session can resume on a new channel.
    if (address) {
      this.resumable = { token: Buffer.from(ask!.token, 'hex'), window: ask!.window }
      this.replay = new ReplayLog()
    }
  }

  /**
   * A new channel presents `request` (its first frame, `resume`): with the
   * session's token, the session goes on over it from where the caller's
   * count says (what it missed first), and the channel it ran on, if it
   * still seemed open (a connection half dead), is let go. Throws
   * TransportError for a wrong token or a session that cannot resume.
   */
  resumeFrom(channel: Channel, request: ResumeRequest): void {
    if (!this.resumable || this.closedWith) throw new TransportError('this worker has no session to resume')
    const token = typeof request?.token === 'string' && /^[0-9a-f]{32}$/.test(request.token) ? Buffer.from(request.token, 'hex') : Buffer.alloc(16)
    if (!timingSafeEqual(token, this.resumable.token)) throw new TransportError('a channel presented a wrong token for this session')
    if (!this.replay!.canResumeFrom(request.received)) throw new ProtocolError(`the caller asked to resume from byte ${request.received}, which this worker cannot give (it sent ${this.replay!.sent})`)
    const old = this.channel
    if (old) {
      this.detachChannel()
      old.destroy()
    }
    clearTimeout(this.waiting)
    this.waiting = undefined
    const answer: ResumeAnswer = { received: this.replay!.received }
    this.sendOnChannel(channel, Kind.resumed, payloads.json(answer))
    this.resumeOn(channel, request.received)
    const dropped = this.droppedDetached
    this.loggedDetached = { bytes: 0 }
    this.droppedDetached = { lines: 0, bytes: 0 }
    if (dropped.lines > 0) this.log(2, `farpipe worker: ${dropped.lines} writes (${dropped.bytes} characters) of output were dropped while the connection was down (past ${LOG_KEPT_DETACHED} kept)\n`)
  }

  private onCall(f: Frame): void {
    if (this.calls.has(f.call)) throw new ProtocolError(`call ${f.call} started twice`)
    const b = asBuffer(f.payload)
    const headerBytes = b.byteLength >= 4 ? b.readUInt32LE(0) : -1
    if (headerBytes < 0 || 4 + headerBytes > b.byteLength) throw new ProtocolError(`call ${f.call}: a call frame of ${b.byteLength} bytes is shorter than its header`)
    const header = payloads.readJson<CallHeader>(b.subarray(4, 4 + headerBytes))
    const call = new RunningCall(this, f.call, header, this.hello!)
    this.calls.set(f.call, call)
    // Streamed arguments exist from now on: their items may already be on the way.
    let args: unknown[]
    try {
      args = readValue(b.subarray(4 + headerBytes), { fromId: (id) => call.inputs.open(id) }) as unknown[]
    } catch (err) {
      call.fail(err, true)
      return
    }
    void call.run(args)
  }

  /** Forgets a finished call. */
  ended(id: number): void {
    this.calls.delete(id)
  }

  // -- bundles --------------------------------------------------------------

  /** The remote function `name` of bundle `hash`, loading the bundle if needed. */
  async load(hash: string, name: string, moduleName: string): Promise<Function> {
    let mod = this.modules.get(hash)
    if (!mod) {
      mod = this.loadModule(hash, moduleName)
      this.modules.set(hash, mod)
      mod.catch(() => this.modules.delete(hash))
    }
    const ns = await mod
    const fn = ns[name]
    if (typeof fn !== 'function' || !remoteInfo(fn)) {
      throw new FarpipeError(`${moduleName} has no export ${name} made with remote() (on ${this.where})`)
    }
    return fn
  }

  private async loadModule(hash: string, moduleName: string): Promise<Record<string, unknown>> {
    if (!/^[0-9a-f]{64}$/.test(hash)) throw new ProtocolError(`bad bundle hash ${JSON.stringify(hash)}`)
    await (this.cacheReady ??= ensurePrivateDir(this.cacheDir))
    const file = path.join(this.cacheDir, `${hash}.mjs`)
    let code = await readIfHash(file, hash)
    if (!code) {
      code = await this.fetchBundle(hash)
      const got = sha256(code)
      if (got !== hash) throw new ProtocolError(`bundle ${hash} arrived with hash ${got}`)
      const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
      await fs.writeFile(tmp, code, { mode: 0o600 })
      await fs.rename(tmp, file)
    }
    if (!needsContext(code)) this.contextFree.add(hash)
    try {
      return (await import(pathToFileURL(file).href)) as Record<string, unknown>
    } catch (err) {
      throw new FarpipeError(`loading ${moduleName} on ${this.where} failed: ${(err as Error)?.message ?? err}`, { cause: err })
    }
  }

  private fetchBundle(hash: string): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      let waiters = this.bundleWaiters.get(hash)
      if (!waiters) {
        waiters = []
        this.bundleWaiters.set(hash, waiters)
        this.send(Kind.need, 0, 0, Buffer.from(hash, 'utf8'))
      }
      waiters.push({ resolve, reject })
    })
  }

  private onBundle(payload: Uint8Array): void {
    const { hash, code } = payloads.readBundle(payload)
    const waiters = this.bundleWaiters.get(hash)
    this.bundleWaiters.delete(hash)
    const copy = Buffer.from(code)
    for (const w of waiters ?? []) w.resolve(copy)
  }
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex')
}

/** The file's bytes if their hash is `hash`, else undefined. */
async function readIfHash(file: string, hash: string): Promise<Buffer | undefined> {
  try {
    const code = await fs.readFile(file)
    return sha256(code) === hash ? code : undefined
  } catch {
    return undefined
  }
}

/** Creates the cache directory with mode 0700, or tightens it; refuses one owned by someone else. */
async function ensurePrivateDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  const st = await fs.stat(dir)
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
    throw new FarpipeError(`cache directory ${dir} belongs to uid ${st.uid}, not to this user (${process.getuid()})`)
  }
  if ((st.mode & 0o077) !== 0) await fs.chmod(dir, 0o700)
}
