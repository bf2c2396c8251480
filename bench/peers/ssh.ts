/**
 * SSH anchors for the benchmarks: what the same loopback sshd delivers to
 * the OpenSSH client, to a bare ssh2 channel, and to a hand-written
 * JSON-lines pipe over ssh2, measured in the same run as farpipe so the
 * report can say how close farpipe comes to each.
 *
 * How the clocks run:
 * - Byte transfers time the data phase only. Downloads start at the first
 *   chunk received and stop at the last (counting the bytes after the first
 *   chunk). Uploads start at the first byte
 *   written and stop when the remote command has exited (OpenSSH: the client
 *   process exits; ssh2: the channel closes). So that uploads do not start
 *   writing into buffers while the connection or remote shell is still being
 *   set up, their remote command first prints one marker byte and then execs
 *   the measured command (`printf R; exec cat > /dev/null`); writing starts
 *   once the marker arrives. The exec costs no extra process.
 * - `setupMs` (OpenSSH only) is spawn to first byte (downloads) or to the
 *   marker (uploads): fork, handshake, auth and remote shell startup.
 * - JSON lines run from the exec call to the last item parsed, remote node
 *   startup included, as a caller of such a pipe would see it.
 *
 * Every channel's stderr is read (and kept for error messages): it shares
 * the channel window with stdout, so an unread stderr could stall stdout.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Writable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import ssh2 from 'ssh2'
import type { ClientChannel, Client as ClientType, NegotiatedAlgorithms } from 'ssh2'
import type { Sshd } from '../../spec/e2e/sshd.ts'

const { Client } = ssh2

/** numbers: integers 0..n-1; objects: `{ i, name: 'item' + i, ok: true }`. */
export type ItemKind = 'numbers' | 'objects'

/** The anchors one sshd offers; see the module comment for what each clock covers. */
export interface SshAnchors {
  /** OpenSSH client: `ssh <alias> 'head -c <bytes> /dev/zero'` with stdout going to a consumer that only counts bytes (not buffered). MiB/s of the data phase: from the first byte received to the last (report connection setup separately as `setupMs`). */
  opensshDown(bytes: number): Promise<{ mibps: number; setupMs: number }>
  /** OpenSSH client: `ssh <alias> 'cat > /dev/null'` fed `bytes` bytes (64 KiB chunks from a Buffer, respecting backpressure). MiB/s of the data phase (from the first byte written until the remote command exited). */
  opensshUp(bytes: number): Promise<{ mibps: number; setupMs: number }>
  /** A bare ssh2 exec channel on an already-open ssh2 connection (setNoDelay(true), same cipher negotiation as default ssh2): `head -c <bytes> /dev/zero`, counting bytes in 'data' events. MiB/s from the first byte received to the last, as for OpenSSH. */
  ssh2Down(bytes: number): Promise<number>
  /** Bare ssh2 exec channel: `cat > /dev/null`, writing 64 KiB chunks and awaiting 'drain' when write() returns false. MiB/s from the first byte written (once the remote command runs) until the channel closes. */
  ssh2Up(bytes: number): Promise<number>
  /** Bare ssh2 exec channel running `cat`: write `bytes` in 64 KiB chunks and read them back concurrently. MiB/s (bytes one way / time from the first byte written, once `cat` runs, until the channel closes with every byte back). */
  ssh2Echo(bytes: number): Promise<number>
  /** The hand-written baseline: over a bare ssh2 exec channel, the remote runs `node -e <script> <n> <kind>` that writes n items as newline-delimited JSON in large writes (batch lines into ~64 KiB strings/buffers, respecting stdout backpressure); the caller splits lines (across chunk boundaries) and JSON.parses each. Items/s from the exec call to the last item parsed. */
  jsonLinesDown(n: number, kind: ItemKind): Promise<number>
  /** The cipher ssh2 and OpenSSH negotiated (e.g. 'aes128-gcm@openssh.com'), for the report. The OpenSSH client is pinned to ssh2's cipher, so the two agree. */
  ciphers(): Promise<{ ssh2: string; openssh: string }>
  /** Ends the ssh2 connection (the OpenSSH anchors hold none open). Safe to call twice. */
  close(): Promise<void>
}

const MiB = 1024 * 1024
/** Upload chunk size, as the brief for every anchor says. */
const CHUNK = 64 * 1024
/** One zero-filled chunk that every upload writes again and again (its contents never change, so queued references to it are fine). */
const ZEROS = Buffer.alloc(CHUNK)

/** Tells the uploader the remote command is running; see the module comment. */
const MARKER = 'R'
const withMarker = (cmd: string) => `printf ${MARKER}; exec ${cmd}`

/** How much stderr to keep for an error message. */
const STDERR_LIMIT = 4096

/**
 * The remote half of the JSON-lines baseline, run as `node -e <this> <n> <kind>`
 * (with -e, process.argv[1] is the first argument). Lines are batched into
 * strings of about 64 KiB, and a write that returns false waits for 'drain'.
 */
const JSON_LINES_SCRIPT = `
const n = Number(process.argv[1]), objects = process.argv[2] === 'objects', out = process.stdout
let i = 0
function pump() {
  while (i < n) {
    let s = ''
    if (objects) for (; i < n && s.length < 65536; i++) s += JSON.stringify({ i, name: 'item' + i, ok: true }) + '\\n'
    else for (; i < n && s.length < 65536; i++) s += JSON.stringify(i) + '\\n'
    if (!out.write(s)) return void out.once('drain', pump)
  }
}
pump()
`.trim()

/** Single-quotes `s` for a POSIX shell. */
const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`

const appendLimited = (kept: string, more: Buffer) => (kept.length < STDERR_LIMIT ? kept + more.toString('utf8', 0, STDERR_LIMIT - kept.length) : kept)

/** Warns when ssh2 runs without its native crypto addon, which would make every ssh2 anchor slower than a normal install. */
function checkSsh2Addon(): void {
  const require = createRequire(import.meta.url)
  const addon = path.join(path.dirname(require.resolve('ssh2')), 'protocol', 'crypto', 'build', 'Release', 'sshcrypto.node')
  if (!existsSync(addon)) {
    console.warn(`warning: ssh2's native crypto addon is missing (${addon}); the ssh2 anchors use the slower JavaScript crypto`)
    return
  }
  // The file can exist and still fail to load (built for another Node ABI).
  const crypto = require(path.join(path.dirname(require.resolve('ssh2')), 'protocol', 'crypto.js')) as { bindingAvailable?: boolean }
  if (!crypto.bindingAvailable) console.warn(`warning: ssh2 could not load its native crypto addon (${addon}); the ssh2 anchors use the slower JavaScript crypto`)
}

/** Resolves once `w` drains; rejects if it errors or closes first. Backpressure as one pending promise. */
function drained(w: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    // A stream that already failed or closed will never drain.
    if (!w.writable) return reject(new Error('the stream stopped taking writes (closed, ended or failed)'))
    const done = (err?: Error) => {
      w.off('drain', onDrain)
      w.off('error', onError)
      w.off('close', onClose)
      if (err) reject(err)
      else resolve()
    }
    const onDrain = () => done()
    const onError = (err: Error) => done(err)
    const onClose = () => done(new Error('the stream closed while a write waited for drain'))
    w.on('drain', onDrain)
    w.on('error', onError)
    w.on('close', onClose)
  })
}

/** Writes `bytes` zero bytes to `w` in 64 KiB chunks, awaiting 'drain' whenever write() returns false, then ends it. */
async function writeZeros(w: Writable, bytes: number): Promise<void> {
  for (let sent = 0; sent < bytes; ) {
    const n = Math.min(CHUNK, bytes - sent)
    sent += n
    if (!w.write(n === CHUNK ? ZEROS : ZEROS.subarray(0, n))) await drained(w)
  }
  w.end()
}

const mibps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000)

/** Rejects counts that are not positive integers: they go into shell commands, and zero would divide by zero. */
function checkCount(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${what} must be a positive integer, got ${value}`)
}

/**
 * Times a download's data phase from the first chunk received to the last.
 * The bytes of the first chunk arrived before the clock started, so the
 * rate counts only the bytes after it.
 */
class DownClock {
  received = 0
  firstChunk = 0
  first = 0
  last = 0

  data(length: number): void {
    this.last = performance.now()
    if (this.received === 0) {
      this.first = this.last
      this.firstChunk = length
    }
    this.received += length
  }

  /** MiB/s, after checking that exactly `expected` bytes came, in more than one chunk. */
  mibps(what: string, expected: number): number {
    if (this.received !== expected) throw new Error(`${what}: received ${this.received} bytes, expected ${expected}`)
    if (this.last === this.first) throw new RangeError(`${what}: all ${expected} bytes came in one chunk, too few to time`)
    return mibps(this.received - this.firstChunk, this.last - this.first)
  }
}

// ── OpenSSH client ───────────────────────────────────────────────────────

/** A running `ssh <alias> <command>` with stderr collected and its exit as a promise. */
interface SshChild {
  child: ChildProcess & { stdout: NonNullable<ChildProcess['stdout']> }
  /** Resolves with the exit code when the client exits; rejects if it cannot be spawned. */
  exited: Promise<number | null>
  stderr(): string
}

/** How to reach the sshd with the OpenSSH client: its config, and the cipher options that pin it to ssh2's choice. */
interface OpenSsh {
  sshd: Sshd
  /** `-o Ciphers=...` (and `-o MACs=...` for a non-AEAD cipher). */
  pin: string[]
}

function spawnSsh({ sshd, pin }: OpenSsh, args: string[], stdin: 'pipe' | 'ignore'): SshChild {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: sshd.home }
  delete env.SSH_AUTH_SOCK
  delete env.SSH_AGENT_PID
  const argv = ['-F', path.join(sshd.home, '.ssh', 'config'), '-o', 'BatchMode=yes', ...pin, ...args]
  const child = spawn('ssh', argv, { env, stdio: [stdin, 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr = appendLimited(stderr, d)))
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    // 'close', not 'exit': stdout may still hold data when the process has exited.
    child.once('close', (code) => resolve(code))
  })
  return { child: child as SshChild['child'], exited, stderr: () => stderr }
}

function sshFailed(what: string, code: number | null, stderr: string): Error {
  return new Error(`${what}: ssh exited with ${code}${stderr ? `; stderr: ${stderr.trim()}` : ''}`)
}

async function opensshDown(ssh: OpenSsh, bytes: number): Promise<{ mibps: number; setupMs: number }> {
  const start = performance.now()
  const run = spawnSsh(ssh, [ssh.sshd.alias, `head -c ${bytes} /dev/zero`], 'ignore')
  const clock = new DownClock()
  run.child.stdout.on('data', (d: Buffer) => clock.data(d.length))
  const code = await run.exited
  const what = `ssh ${ssh.sshd.alias} 'head -c ${bytes} /dev/zero'`
  if (code !== 0) throw sshFailed(what, code, run.stderr())
  return { mibps: clock.mibps(what, bytes), setupMs: clock.first - start }
}

async function opensshUp(ssh: OpenSsh, bytes: number): Promise<{ mibps: number; setupMs: number }> {
  const start = performance.now()
  const run = spawnSsh(ssh, [ssh.sshd.alias, withMarker('cat > /dev/null')], 'pipe')
  const what = `ssh ${ssh.sshd.alias} 'cat > /dev/null'`
  const stdin = run.child.stdin!
  // ssh may exit early (auth failure); the exit code below says why, not EPIPE.
  stdin.on('error', () => {})
  const ready = new Promise<void>((resolve, reject) => {
    run.child.stdout.once('data', () => resolve())
    run.exited.then((code) => reject(sshFailed(`${what} exited before it was ready`, code, run.stderr())), reject)
  })
  await ready
  const first = performance.now()
  // Caught at once: a write fails when ssh dies, and then the exit code says why.
  let writeError: unknown
  const writing = writeZeros(stdin, bytes).catch((err: unknown) => (writeError = err ?? new Error('write failed')))
  const code = await run.exited
  const end = performance.now()
  if (code !== 0) throw sshFailed(what, code, run.stderr())
  await writing
  if (writeError) throw writeError
  return { mibps: mibps(bytes, end - first), setupMs: first - start }
}

/** The cipher (and MAC, unless implied by an AEAD cipher) `ssh -v` reports for each direction. */
async function opensshCipher(ssh: OpenSsh): Promise<string> {
  const run = spawnSsh(ssh, ['-v', ssh.sshd.alias, 'true'], 'ignore')
  run.child.stdout.resume()
  // Keep all of the -v output, not only the first STDERR_LIMIT characters.
  let log = ''
  run.child.stderr!.on('data', (d: Buffer) => (log += d))
  const code = await run.exited
  if (code !== 0) throw sshFailed(`ssh -v ${ssh.sshd.alias} true`, code, run.stderr())
  const pick = (dir: string) => {
    const m = new RegExp(`kex: ${dir} cipher: (\\S+) MAC: (\\S+)`).exec(log)
    if (!m) throw new Error(`ssh -v did not report the ${dir} cipher`)
    return m[2] === '<implicit>' ? m[1]! : `${m[1]} + ${m[2]}`
  }
  return bothWays(pick('server->client'), pick('client->server'))
}

/** One name when both directions agree, else 'down / up'. */
const bothWays = (down: string, up: string) => (down === up ? down : `${down} (down) / ${up} (up)`)

// ── ssh2 ─────────────────────────────────────────────────────────────────

async function connectSsh2(sshd: Sshd): Promise<{ client: ClientType; negotiated: NegotiatedAlgorithms }> {
  const client = new Client()
  let negotiated: NegotiatedAlgorithms | undefined
  client.once('handshake', (n) => (negotiated = n))
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve())
    client.once('error', reject)
    client.once('close', () => reject(new Error(`ssh2: 127.0.0.1:${sshd.port} closed before the connection was ready`)))
    client.connect({
      host: '127.0.0.1',
      port: sshd.port,
      username: sshd.user,
      privateKey: readFileSync(sshd.clientKey),
      // An anchor on a loopback sshd the harness just started: nothing to verify.
      hostVerifier: () => true,
      keepaliveInterval: 0,
    })
  })
  client.setNoDelay(true)
  if (!negotiated) throw new Error('ssh2 was ready without a handshake event')
  return { client, negotiated }
}

/**
 * Opens an exec channel for `command`, reads its stderr, and gives back the
 * channel and a promise that resolves when it closes with exit code 0 (and
 * rejects otherwise, or when the connection goes away first).
 */
function exec(client: ClientType, command: string): Promise<{ channel: ClientChannel; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, channel) => {
      if (err) return reject(err)
      let stderr = ''
      channel.stderr.on('data', (d: Buffer) => (stderr = appendLimited(stderr, d)))
      const closed = new Promise<void>((resolve, reject) => {
        const onGone = () => reject(new Error(`ssh2: the connection closed while running ${command}`))
        client.once('close', onGone)
        channel.once('error', reject)
        channel.once('close', (code: number | null, signal?: string) => {
          client.off('close', onGone)
          if (code === 0) resolve()
          else reject(new Error(`ssh2: ${command} exited with ${code ?? `signal ${signal}`}${stderr ? `; stderr: ${stderr.trim()}` : ''}`))
        })
      })
      // Handled by whoever awaits it; never an unhandled rejection meanwhile.
      closed.catch(() => {})
      resolve({ channel, closed })
    })
  })
}

async function ssh2Down(client: ClientType, bytes: number): Promise<number> {
  const { channel, closed } = await exec(client, `head -c ${bytes} /dev/zero`)
  const clock = new DownClock()
  channel.on('data', (d: Buffer) => clock.data(d.length))
  await closed
  return clock.mibps(`ssh2 head -c ${bytes} /dev/zero`, bytes)
}

/** Resolves on the first data event of `channel` (the marker). */
function marker(channel: ClientChannel, closed: Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.once('data', () => resolve())
    closed.then(() => reject(new Error('ssh2: the channel closed before the remote command was ready')), reject)
  })
}

async function ssh2Up(client: ClientType, bytes: number): Promise<number> {
  const { channel, closed } = await exec(client, withMarker('cat > /dev/null'))
  await marker(channel, closed)
  channel.resume()
  const first = performance.now()
  await Promise.all([writeZeros(channel, bytes), closed])
  return mibps(bytes, performance.now() - first)
}

async function ssh2Echo(client: ClientType, bytes: number): Promise<number> {
  const { channel, closed } = await exec(client, withMarker('cat'))
  await marker(channel, closed)
  let echoed = 0
  channel.on('data', (d: Buffer) => (echoed += d.length))
  const first = performance.now()
  await Promise.all([writeZeros(channel, bytes), closed])
  const ms = performance.now() - first
  if (echoed !== bytes) throw new Error(`ssh2 cat: echoed ${echoed} of ${bytes} bytes`)
  return mibps(bytes, ms)
}

async function jsonLinesDown(client: ClientType, n: number, kind: ItemKind): Promise<number> {
  const start = performance.now()
  const { channel, closed } = await exec(client, `node -e ${shellQuote(JSON_LINES_SCRIPT)} ${n} ${kind}`)
  const decoder = new StringDecoder('utf8')
  let rest = ''
  let count = 0
  let lastItem: unknown
  let end = 0
  channel.on('data', (d: Buffer) => {
    // Only the unfinished tail of the previous chunk is carried over, never the whole stream.
    const text = rest + decoder.write(d)
    let from = 0
    for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', from)) {
      lastItem = JSON.parse(text.slice(from, nl))
      count++
      from = nl + 1
    }
    rest = text.slice(from)
    end = performance.now()
  })
  await closed
  const lastIndex = kind === 'numbers' ? lastItem : (lastItem as { i?: unknown } | undefined)?.i
  if (count !== n || rest !== '' || lastIndex !== n - 1) {
    throw new Error(`JSON lines: parsed ${count} of ${n} ${kind} (last ${JSON.stringify(lastItem)}, ${rest.length} characters left over)`)
  }
  return n / ((end - start) / 1000)
}

// ── the anchors ──────────────────────────────────────────────────────────

/** Connects ssh2 to `sshd` (kept open for the ssh2 anchors) and returns the anchors; close() ends the connection. */
export async function startSshAnchors(sshd: Sshd): Promise<SshAnchors> {
  checkSsh2Addon()
  const { client, negotiated } = await connectSsh2(sshd)
  // OpenSSH would pick chacha20-poly1305 where ssh2 picks AES-GCM (when the
  // CPU has AES instructions); a comparison of transports wants one cipher,
  // so the OpenSSH client is pinned to the one ssh2 negotiated.
  const { cipher, mac } = negotiated.sc
  const openssh: OpenSsh = { sshd, pin: ['-o', `Ciphers=${cipher}`, ...(mac ? ['-o', `MACs=${mac}`] : [])] }
  // Errors after ready reach whichever run is in flight through 'close'; without a listener they would throw.
  client.on('error', () => {})
  let gone = false
  client.once('close', () => (gone = true))
  let closing: Promise<void> | undefined
  // Each measurement checks its count first; async, so a bad count rejects rather than throws.
  const bytesThen =
    <T>(run: (bytes: number) => Promise<T>) =>
    async (bytes: number): Promise<T> => {
      checkCount('bytes', bytes)
      return run(bytes)
    }
  return {
    opensshDown: bytesThen((bytes) => opensshDown(openssh, bytes)),
    opensshUp: bytesThen((bytes) => opensshUp(openssh, bytes)),
    ssh2Down: bytesThen((bytes) => ssh2Down(client, bytes)),
    ssh2Up: bytesThen((bytes) => ssh2Up(client, bytes)),
    ssh2Echo: bytesThen((bytes) => ssh2Echo(client, bytes)),
    jsonLinesDown: async (n, kind) => {
      checkCount('n', n)
      if (kind !== 'numbers' && kind !== 'objects') throw new RangeError(`kind must be 'numbers' or 'objects', got ${String(kind)}`)
      return jsonLinesDown(client, n, kind)
    },
    ciphers: async () => {
      // ssh2 reports no MAC for AEAD ciphers, as ssh -v says '<implicit>'.
      const ssh2Cipher = (d: NegotiatedAlgorithms['sc']) => (d.mac ? `${d.cipher} + ${d.mac}` : d.cipher)
      return { ssh2: bothWays(ssh2Cipher(negotiated.sc), ssh2Cipher(negotiated.cs)), openssh: await opensshCipher(openssh) }
    },
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        if (gone) return resolve()
        client.once('close', () => resolve())
        client.end()
      })),
  }
}
