// The TCP proxy fixture (spec/fixtures/tcp-proxy.ts) against a local echo
// server, then against a real sshd with the harness's proxy alias and
// restart(): the fixtures the dropped-connection specs stand on must
// themselves be shown to cut, refuse, stall and restart what they claim.
import { readFileSync } from 'node:fs'
import { createConnection, createServer, type Server, type Socket } from 'node:net'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { findSshd, startSshd, type Sshd } from './e2e/sshd.ts'
import { startTcpProxy, type TcpProxy } from './fixtures/tcp-proxy.ts'
import { running, sleep, until } from './helpers.ts'

// ── a local echo server and a client that records what happens ─────────────

/** An echo server on loopback that keeps its sockets and what they received. */
interface Echo {
  port: number
  sockets: Socket[]
  /** Bytes received on each socket, in order. */
  received: Buffer[][]
  /** The error code each socket failed with, if any. */
  errors: (string | undefined)[]
  close(): Promise<void>
}

async function startEcho(): Promise<Echo> {
  const echo: Echo = { port: 0, sockets: [], received: [], errors: [], close: async () => {} }
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    const i = echo.sockets.push(socket) - 1
    echo.received[i] = []
    socket.on('data', (d: Buffer) => echo.received[i]!.push(d))
    socket.on('error', (err: NodeJS.ErrnoException) => (echo.errors[i] = err.code))
    socket.pipe(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  echo.port = (server.address() as { port: number }).port
  echo.close = () =>
    new Promise<void>((resolve) => {
      for (const s of echo.sockets) s.destroy()
      server.close(() => resolve())
    })
  return echo
}

/** A client connection and everything it saw. */
interface Client {
  socket: Socket
  data: () => Buffer
  connected: boolean
  closed: boolean
  error?: string
}

function connect(port: number): Client {
  const chunks: Buffer[] = []
  const socket = createConnection({ host: '127.0.0.1', port, allowHalfOpen: true })
  const c: Client = { socket, data: () => Buffer.concat(chunks), connected: false, closed: false }
  socket.on('connect', () => (c.connected = true))
  socket.on('data', (d: Buffer) => chunks.push(d))
  socket.on('error', (err: NodeJS.ErrnoException) => (c.error = err.code))
  socket.on('close', () => (c.closed = true))
  return c
}

/** Connects and waits for one byte to come back through the echo, so the connection is known to be forwarded end to end. */
async function echoed(port: number): Promise<Client> {
  const c = connect(port)
  c.socket.write('.')
  await until(() => c.data().length === 1 || c.closed, 5000, 'the first byte to come back')
  assert.is(c.data().toString(), '.', `connection through the proxy failed: ${c.error ?? 'closed'}`)
  return c
}

/** `n` bytes in which every offset holds a different run of values, so a reordering or a lost chunk shows. */
function pattern(n: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 8)) & 0xff
  return b
}

// ── the proxy alone ─────────────────────────────────────────────────────────

const local = suite('tcp proxy')
let echo: Echo
let proxy: TcpProxy

local.before.each(async () => {
  echo = await startEcho()
  proxy = await startTcpProxy({ host: '127.0.0.1', port: echo.port })
})
local.after.each(async () => {
  await proxy.close()
  await echo.close()
})

local('forwards bytes both ways in order', async () => {
  const sent = pattern(4 * 1024 * 1024)
  const c = connect(proxy.port)
  for (let at = 0; at < sent.length; at += 65536) c.socket.write(sent.subarray(at, at + 65536))
  c.socket.end()
  await until(() => c.closed, 10_000, 'the echo to end')
  assert.is(c.error, undefined)
  assert.ok(c.data().equals(sent), `got ${c.data().length} of ${sent.length} bytes, or in another order`)
  assert.is(proxy.accepted, 1)
  await until(() => proxy.open === 0, 5000, 'the finished connection to leave open')
})

local('holds back a writer while the reader on the other side reads nothing (backpressure)', async () => {
  const total = 64 * 1024 * 1024
  const c = connect(proxy.port)
  // The client reads nothing: the echo's replies fill the buffers back to
  // it, the echo stops reading, and a proxy that honours backpressure stops
  // reading the client. One that buffered instead would pass all 64 MiB on.
  c.socket.pause()
  const chunk = Buffer.alloc(1024 * 1024, 1)
  for (let i = 0; i < total / chunk.length; i++) c.socket.write(chunk)
  const received = () => echo.received[0]?.reduce((n, b) => n + b.length, 0) ?? 0
  let last = -1
  // Until the flow has stopped: no growth for 200 ms.
  while (received() !== last) {
    last = received()
    await sleep(200)
  }
  assert.ok(received() < total, `the echo received all ${total} bytes while the client read none`)
  c.socket.resume()
  await until(() => c.data().length === total, 20_000, 'every byte to come back once the client reads')
})

local('an end from the caller still lets the reply through (half-close)', async () => {
  const c = connect(proxy.port)
  c.socket.end('last words')
  await until(() => c.closed, 5000, 'the echo to end')
  assert.is(c.data().toString(), 'last words')
})

local('cut() resets both sides of every open connection', async () => {
  const a = await echoed(proxy.port)
  const b = await echoed(proxy.port)
  assert.is(proxy.open, 2)
  proxy.cut()
  assert.is(proxy.open, 0)
  await until(() => a.closed && b.closed && echo.sockets.every((s) => s.destroyed), 5000, 'both sides to close')
  // A reset, not an orderly end: the way a dropped network looks.
  assert.is(a.error, 'ECONNRESET')
  assert.is(b.error, 'ECONNRESET')
  assert.equal(echo.errors, ['ECONNRESET', 'ECONNRESET'])
})

local('after cut(), new connections go through', async () => {
  await echoed(proxy.port)
  proxy.cut()
  const c = await echoed(proxy.port)
  assert.is(c.closed, false)
  assert.is(proxy.accepted, 2)
})

local('refuse() resets new connections until allow(), and leaves open ones alone', async () => {
  const before = await echoed(proxy.port)
  proxy.refuse()
  const refused = connect(proxy.port)
  refused.socket.write('x')
  await until(() => refused.closed, 5000, 'the refused connection to close')
  assert.is(refused.error, 'ECONNRESET')
  assert.is(refused.data().length, 0)
  assert.is(proxy.refused, 1)
  assert.is(echo.sockets.length, 1, 'a refused connection reached the target')
  // The one open before refuse() still echoes.
  before.socket.write('!')
  await until(() => before.data().length === 2, 5000, 'the open connection to echo')
  proxy.allow()
  await echoed(proxy.port)
  assert.is(proxy.accepted, 2)
})

local('outage(ms) cuts, refuses meanwhile, and lets connections through once it resolves', async () => {
  const before = await echoed(proxy.port)
  const outage = proxy.outage(300)
  await until(() => before.closed, 5000, 'the open connection to be cut')
  assert.is(before.error, 'ECONNRESET')
  const during = connect(proxy.port)
  await until(() => during.closed, 5000, 'the connection made during the outage to close')
  assert.is(during.error, 'ECONNRESET')
  await outage
  const after = await echoed(proxy.port)
  assert.is(after.closed, false)
  assert.is(proxy.refused, 1)
})

local('stall() holds bytes both ways without closing; resume() delivers them in order', async () => {
  const c = await echoed(proxy.port)
  proxy.stall()
  c.socket.write('held ')
  c.socket.write('in order')
  // Nothing says when bytes that go nowhere have not arrived; a while is all there is.
  await sleep(200)
  assert.is(echo.received[0]!.map(String).join(''), '.', 'bytes crossed a stalled proxy')
  assert.is(c.data().toString(), '.')
  assert.is(c.closed, false)
  assert.is(echo.sockets[0]!.destroyed, false)
  assert.is(proxy.open, 1)
  proxy.resume()
  await until(() => c.data().length === 1 + 'held in order'.length, 5000, 'the held bytes')
  assert.is(c.data().toString(), '.held in order')
})

local('stall() holds bytes coming back from the target too', async () => {
  const c = await echoed(proxy.port)
  proxy.stall()
  echo.sockets[0]!.write('from the target')
  await sleep(200)
  assert.is(c.data().toString(), '.')
  proxy.resume()
  await until(() => c.data().toString() === '.from the target', 5000, 'the held reply')
})

local('connections opened after stall() are forwarded', async () => {
  const stalled = await echoed(proxy.port)
  proxy.stall()
  const fresh = await echoed(proxy.port)
  assert.is(fresh.closed, false)
  stalled.socket.write('x')
  await sleep(100)
  assert.is(stalled.data().toString(), '.')
})

local('a target that refuses resets the caller, and the process carries on', async () => {
  await echo.close()
  const c = connect(proxy.port)
  await until(() => c.closed, 5000, 'the caller to be closed')
  assert.is(c.error, 'ECONNRESET')
  await until(() => proxy.open === 0, 5000, 'the failed pair to leave open')
  assert.is(proxy.accepted, 1)
})

local('close() ends open connections and stops listening', async () => {
  const c = await echoed(proxy.port)
  await proxy.close()
  // An orderly end: the client, half-open, sees its reads end.
  await until(() => c.socket.readableEnded, 5000, 'the open connection to end')
  assert.is(proxy.open, 0)
  const after = connect(proxy.port)
  await until(() => after.closed, 5000, 'a connection to a closed proxy to fail')
  assert.is(after.error, 'ECONNREFUSED')
})

local.run()

// ── a real sshd behind the proxy ────────────────────────────────────────────

const ssh = suite('tcp proxy in front of sshd')
const installed = findSshd() !== undefined
if (!installed) console.log('sshd not installed: skipping the tcp proxy specs against sshd')
/** Registers a case, or counts it as skipped when there is no sshd. */
const it = installed ? ssh : ssh.skip

const proxied = 'farpipe-test-proxied'
let sshd: Sshd
let front: TcpProxy

if (installed) {
  ssh.before(async () => {
    sshd = await startSshd()
    front = await startTcpProxy({ host: sshd.host, port: sshd.port })
    sshd.viaProxy(front.port, proxied)
  })
  ssh.after(async () => {
    await front?.close()
    await sshd?.stop()
  })
}

it('viaProxy() writes a Host block that OpenSSH reaches the sshd through, trusting its key', async () => {
  const before = front.accepted
  const r = await sshd.ssh(['echo', 'hi'], { alias: proxied })
  assert.is(r.stderr, '')
  assert.is(r.code, 0)
  assert.is(r.stdout.toString(), 'hi\n')
  assert.is(front.accepted, before + 1)
  const config = readFileSync(path.join(sshd.home, '.ssh', 'config'), 'utf8')
  assert.match(config, `Host ${proxied}\n  HostName 127.0.0.1\n  Port ${front.port}\n  HostKeyAlias [${sshd.host}]:${sshd.port}\n`)
})

it('viaProxy() refuses an alias the config already has', () => {
  assert.throws(() => sshd.viaProxy(front.port, proxied), new RegExp(`already has a Host ${proxied}`))
})

it('the proxied alias trusts only the sshd key: another key behind the proxy is refused', async () => {
  const other = await startSshd({ alias: 'farpipe-test-other', home: sshd.home, trustHostKey: false })
  const impostor = await startTcpProxy({ host: other.host, port: other.port })
  try {
    sshd.viaProxy(impostor.port, 'farpipe-test-impostor')
    const r = await sshd.ssh(['echo', 'hi'], { alias: 'farpipe-test-impostor' })
    assert.is(r.code, 255)
    assert.match(r.stderr, 'Host key verification failed')
  } finally {
    await impostor.close()
    await other.stop()
  }
})

it('cut() makes a running ssh exit with 255', async () => {
  const session = sshd.ssh(['sleep', '30'], { alias: proxied, timeout: 20_000 })
  await until(() => front.open === 1, 5000, 'the ssh connection through the proxy')
  // Wait for the command itself, so the cut lands on a session, not a login.
  await until(() => sshd.sessionPids().length > 0 && commandsOf(sshd).includes('sleep'), 10_000, 'sleep to run')
  front.cut()
  const r = await session
  assert.is(r.code, 255, r.stderr)
  assert.match(r.stderr, /reset|closed|broken pipe/i)
})

it('restart() kills the sshd processes but keeps the commands they started, and takes connections again', async () => {
  const oldPid = sshd.pid
  const r = await sshd.ssh(['nohup sleep 30 >/dev/null 2>&1 & echo $!'], { alias: proxied })
  assert.is(r.code, 0, r.stderr)
  const sleeper = Number(r.stdout.toString().trim())
  assert.ok(running(sleeper), `sleep ${sleeper} runs`)
  // A connection open across the restart: it must be dropped.
  const held = sshd.ssh(['sleep', '30'], { alias: proxied, timeout: 20_000 })
  await until(() => commandsOf(sshd).includes('sleep'), 10_000, 'the held session to run sleep')
  const sessions = sshd.sessionPids()
  const heldSleep = commandPids(sshd, 'sleep')
  assert.ok(sessions.length > 0)
  assert.is(heldSleep.length, 1)

  await sshd.restart()

  assert.is.not(sshd.pid, oldPid)
  assert.ok(running(sshd.pid), 'the new listener runs')
  for (const p of sessions) assert.not.ok(running(p), `sshd session ${p} survived the restart`)
  assert.ok(running(sleeper), 'the nohup sleep was killed with its sshd')
  for (const p of heldSleep) assert.ok(running(p), `the held session's sleep ${p} was killed with its sshd`)
  assert.is((await held).code, 255)
  const again = await sshd.ssh(['echo', 'back'], { alias: proxied })
  assert.is(again.code, 0, again.stderr)
  assert.is(again.stdout.toString(), 'back\n')
  const direct = await sshd.ssh(['echo', 'direct'])
  assert.is(direct.stdout.toString(), 'direct\n')
})

it('stop() after a restart kills the commands restart() kept', async () => {
  const r = await sshd.ssh(['nohup sleep 30 >/dev/null 2>&1 & echo $!'], { alias: proxied })
  const sleeper = Number(r.stdout.toString().trim())
  await sshd.restart()
  assert.ok(running(sleeper))
  await sshd.stop()
  await until(() => !running(sleeper), 5000, 'the kept sleep to be killed by stop()')
  // And a stopped sshd still restarts, as before.
  await sshd.restart()
  const again = await sshd.ssh(['echo', 'up'])
  assert.is(again.stdout.toString(), 'up\n')
})

ssh.run()

/** The comm of every process under the sshd's session processes (what connections run). */
function commandsOf(s: Sshd): string[] {
  return commandPids(s).map(comm)
}

/** Pids of the non-sshd children of the sshd's session processes, optionally only those named `name`. */
function commandPids(s: Sshd, name?: string): number[] {
  const out: number[] = []
  for (const session of s.sessionPids()) {
    for (const child of children(session)) if (!comm(child).startsWith('sshd') && (name === undefined || comm(child) === name)) out.push(child)
  }
  return out
}

function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return ''
  }
}
