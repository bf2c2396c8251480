// Faults: a worker killed mid-output and mid-input, a worker stopped
// (SIGSTOP) while the caller waits, an sshd session stopped, the TCP
// connection cut or stalled. Each gives the right error within its bound
// (idleTimeout, cancelGrace, keepalive), the pool goes on, nothing is left.
import { createServer, createConnection, type Server, type Socket } from 'node:net'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pool, TimeoutError, TransportError, type HostOptions, type Pool, type PoolOptions } from 'farpipe'
import * as h from '../fixtures/hardening.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, rejection, running, sleep, tempDir, until } from '../helpers.ts'
import { findSshd, startSshd, type Sshd } from './sshd.ts'


/** A source of numbers that records whether it was cancelled. */
function watchedSource(): { stream: ReadableStream<number>; cancelled: () => boolean; pulled: () => number } {
  let cancelled = false
  let pulled = 0
  const stream = new ReadableStream<number>({
    pull: async (c) => {
      await sleep(1)
      c.enqueue(pulled++)
    },
    cancel: () => void (cancelled = true),
  })
  return { stream, cancelled: () => cancelled, pulled: () => pulled }
}

interface Target {
  name: string
  open(options?: PoolOptions): Promise<Pool>
}

function faults(target: Target): void {
  const s = suite(`${target.name}: faults`)

  s('a worker killed mid-output fails the call with TransportError; the pool goes on', async () => {
    const p = await target.open({ workers: 1, cacheDir: tempDir() })
    try {
      const pid = await p.run(h.pid)
      const call = p.run(t.slowItems, 1000, 5)
      const it = call[Symbol.asyncIterator]()
      await it.next()
      process.kill(pid, 'SIGKILL')
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      await rejection(collect({ [Symbol.asyncIterator]: () => it }))
      assert.is(await p.run(t.add, 2, 3), 5)
    } finally {
      await p.close()
    }
  })

  s('a worker killed mid-input fails the call and cancels the local source', async () => {
    const p = await target.open({ workers: 1, cacheDir: tempDir() })
    try {
      const pid = await p.run(h.pid)
      const source = watchedSource()
      const call = p.run(h.total, source.stream)
      await until(() => source.pulled() > 20, 10_000, 'the input to flow')
      process.kill(pid, 'SIGKILL')
      assert.instance(await rejection(call.result), TransportError)
      await until(() => source.cancelled(), 10_000, 'the source to be cancelled')
      assert.is(await p.run(t.add, 1, 1), 2)
    } finally {
      await p.close()
    }
  })

  s('a stopped worker: idleTimeout fails the call, the worker is replaced after the grace, the pool goes on', async () => {
    const logs: string[] = []
    const p = await target.open({ workers: 1, cacheDir: tempDir(), defaults: { cancelGrace: 300 }, onLog: (e) => void logs.push(e.line) })
    let pid = 0
    try {
      pid = await p.run(h.pid)
      const call = p.with({ idleTimeout: 300 }).run(t.slowItems, 1000, 5)
      const it = call[Symbol.asyncIterator]()
      await it.next()
      process.kill(pid, 'SIGSTOP')
      assert.instance(await rejection(call.result), TimeoutError)
      await call.cancel()
      await until(() => !running(pid), 10_000, `the stopped worker ${pid} to be killed`)
      assert.ok(logs.some((l) => l.includes('did not confirm its cancellation within 300 ms')))
      assert.is.not(await p.run(h.pid), pid)
    } finally {
      if (running(pid)) process.kill(pid, 'SIGKILL')
      await p.close()
    }
  })

  // Found by the faults bench: a call sent to the stopped worker during the
  // cancel's grace hung for ever, and the retired worker waited for it.
  s('a call sent to a stopped worker during the grace fails once the worker is found unresponsive', async () => {
    const p = await target.open({ workers: 1, cacheDir: tempDir(), defaults: { cancelGrace: 300 }, onLog: () => {} })
    let pid = 0
    try {
      pid = await p.run(h.pid)
      const call = p.with({ idleTimeout: 300 }).run(t.slowItems, 1000, 5)
      await call[Symbol.asyncIterator]().next()
      process.kill(pid, 'SIGSTOP')
      assert.instance(await rejection(call.result), TimeoutError)
      const next = p.run(h.pid)
      const err = await rejection(next)
      assert.instance(err, TransportError)
      assert.match(err.message, 'stopped answering')
      await until(() => !running(pid), 10_000, `the stopped worker ${pid} to be killed`)
      assert.is.not(await p.run(h.pid), pid)
    } finally {
      if (running(pid)) process.kill(pid, 'SIGKILL')
      await p.close()
    }
  })

  s('a stopped worker with other calls on it: each call times out on its own, close() still settles', async () => {
    const p = await target.open({ workers: 1, cacheDir: tempDir(), defaults: { cancelGrace: 200 }, onLog: () => {} })
    let pid = 0
    try {
      pid = await p.run(h.pid)
      process.kill(pid, 'SIGSTOP')
      const calls = [p.with({ timeout: 300 }).run(t.add, 1, 2), p.with({ idleTimeout: 300 }).run(t.countAsync, 3)]
      for (const c of calls) assert.instance(await rejection(c.result), TimeoutError)
    } finally {
      await p.close()
      if (running(pid)) process.kill(pid, 'SIGKILL')
    }
  })

  s.run()
}

// The sshd starts before any suite is registered: uvu runs the suites registered when the module has loaded.
const sshd = findSshd() ? await startSshd({ alias: 'farpipe-faults' }) : undefined
faults({ name: 'local', open: (options) => pool(options) })
if (sshd) {
  process.env.HOME = sshd.home
  delete process.env.SSH_AUTH_SOCK
  process.on('exit', () => void sshd.stop())
  faults({ name: 'ssh', open: (options) => pool({ hosts: [sshd.alias], ...options }) })
  network(sshd)
} else {
  console.log('sshd not installed: skipping the SSH faults')
}

/** A TCP proxy to the sshd that can cut its connections or stall them (stop forwarding, as a dead link does). */
async function proxy(port: number): Promise<{ port: number; cut(): void; stall(): void; close(): Promise<void> }> {
  const pairs = new Set<[Socket, Socket]>()
  let stalled = false
  const server: Server = createServer((client) => {
    const upstream = createConnection(port, '127.0.0.1')
    const pair: [Socket, Socket] = [client, upstream]
    pairs.add(pair)
    const forward = (from: Socket, to: Socket) => from.on('data', (d) => void (stalled || to.write(d)))
    forward(client, upstream)
    forward(upstream, client)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as { port: number }).port,
    cut: () => {
      for (const [a, b] of pairs) {
        a.resetAndDestroy()
        b.resetAndDestroy()
      }
    },
    stall: () => void (stalled = true),
    close: async () => {
      for (const [a, b] of pairs) {
        a.destroy()
        b.destroy()
      }
      await new Promise((r) => server.close(r))
    },
  }
}

function network(sshd: Sshd): void {
  // With resume off (resumeWindow: 0): a drop fails the calls on it; spec/e2e/resume.spec.ts has the default.
  const n = suite('ssh: network faults')
  const host = (port: number, more: Partial<HostOptions> = {}): HostOptions => ({
    host: '127.0.0.1',
    port,
    user: sshd.user,
    identityFile: sshd.clientKey,
    // The proxy's port is not in known_hosts; the key is the harness's own sshd.
    knownHosts: 'off',
    ...more,
  })

  n('a cut TCP connection fails the calls on it with TransportError (reason lost); the next call reconnects', async () => {
    const px = await proxy(sshd.port)
    const p = await pool({ hosts: [host(px.port)], workers: 1, cacheDir: tempDir(), resumeWindow: 0 })
    try {
      const call = p.run(t.slowItems, 1000, 5)
      await call[Symbol.asyncIterator]().next()
      px.cut()
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.match(err.message, '127.0.0.1')
      assert.is(await p.run(t.add, 4, 4), 8)
    } finally {
      await p.close()
      await px.close()
    }
  })

  n('a stalled TCP connection fails the calls on it within the keepalive bound', async () => {
    const px = await proxy(sshd.port)
    const p = await pool({ hosts: [host(px.port, { keepaliveInterval: 200, keepaliveCountMax: 2 })], workers: 1, cacheDir: tempDir(), resumeWindow: 0 })
    try {
      const call = p.run(t.slowItems, 1000, 5)
      await call[Symbol.asyncIterator]().next()
      px.stall()
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.match(err.message, 'did not answer')
    } finally {
      await p.close()
      await px.close()
    }
  })

  n('a stopped sshd session process fails the call within the keepalive bound, and close() settles', async () => {
    const p = await pool({ hosts: [{ host: sshd.alias, keepaliveInterval: 200, keepaliveCountMax: 2 }], workers: 1, cacheDir: tempDir(), resumeWindow: 0 })
    const stopped: number[] = []
    try {
      const call = p.run(t.slowItems, 1000, 5)
      await call[Symbol.asyncIterator]().next()
      for (const pid of sshd.sessionPids()) {
        process.kill(pid, 'SIGSTOP')
        stopped.push(pid)
      }
      assert.instance(await rejection(call.result), TransportError)
    } finally {
      await p.close()
      for (const pid of stopped) process.kill(pid, 'SIGKILL')
    }
  })

  n.run()
}
