// A call survives a dropped connection: against a real OpenSSH sshd reached
// through a TCP proxy in this process (spec/fixtures/tcp-proxy.ts) that cuts
// every connection, refuses new ones for a while, or stalls them, and an
// sshd that is restarted. Every stream goes on where it was (nothing lost,
// nothing twice, the generator started once, the caller's source read
// once); past the window the call fails and the worker ends on its own.
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pool, TransportError, type LogEntry, type Pool, type PoolOptions } from 'farpipe'
import * as n from '../fixtures/nested.ts'
import * as r from '../fixtures/resume.ts'
import * as t from '../fixtures/tasks.ts'
import { startTcpProxy, type TcpProxy } from '../fixtures/tcp-proxy.ts'
import { markerPath, readMarker, rejection, running, sleep, tempDir, until, workerChildren } from '../helpers.ts'
import { noSshd, useClientHome, startSshd, type Sshd } from './sshd.ts'
import { finish, lines, start } from './cli.ts'

const MiB = 2 ** 20
const ALIAS = 'farpipe-resume-proxy'

if (!noSshd('resume')) {
  const sshd = await startSshd({ alias: 'farpipe-resume' })
  useClientHome(sshd.home)
  const proxy = await startTcpProxy({ host: sshd.host, port: sshd.port })
  sshd.viaProxy(proxy.port, ALIAS)
  specs(sshd, proxy)
}

/** How reading `it` on fails, once the items that arrived before the drop are read. */
function failure(it: AsyncIterator<unknown>): Promise<any> {
  return rejection((async () => {
    for (;;) if ((await it.next()).done) throw new Error('the call ended without failing')
  })())
}

/**
 * Starts an endless stream on `p` and reads its first 100 items, then takes
 * the network down for good (cut, new connections refused): the call's
 * iterator, the worker's pid, and the marker its `finally` writes.
 */
async function streamThenOutage(p: Pool, proxy: TcpProxy) {
  const marker = markerPath()
  const pid = await p.run(r.pid)
  const it = p.run(r.endless, markerPath(), marker)[Symbol.asyncIterator]()
  for (let i = 0; i < 100; i++) await it.next()
  proxy.refuse()
  proxy.cut()
  return { it, pid, marker }
}

/** Reads a call to its end, calling `drop` once the `at`-th item was read; returns the items. */
async function readAll<T>(call: AsyncIterable<T>, at: number, drop: () => unknown): Promise<T[]> {
  const got: T[] = []
  for await (const x of call) {
    got.push(x)
    if (got.length === at) await drop()
  }
  return got
}

function specs(sshd: Sshd, proxy: TcpProxy): void {
  const logs: LogEntry[] = []
  const open = (options: PoolOptions = {}) => pool({ hosts: [ALIAS], workers: 1, cacheDir: tempDir(), onLog: (l) => void logs.push(l), ...options })

  const s = suite('resume: a dropped connection')
  s.after.each(() => proxy.allow())

  s('a stream cut mid-way goes on where it was: every item once, in order, the generator started once; hostdown then hostup (resumed)', async () => {
    const starts = markerPath()
    const p = await open()
    const events: string[] = []
    p.addEventListener('hostdown', () => events.push('hostdown'))
    p.addEventListener('hostup', (e) => events.push(`hostup${(e as CustomEvent).detail.resumed ? ' resumed' : ''}`))
    try {
      const got = await readAll(p.run(r.counted, starts, 20_000), 3000, () => proxy.cut())
      assert.is(got.length, 20_000)
      assert.ok(got.every((v, i) => v === i), 'in order, none twice')
      assert.is(r.lines(starts), 1, 'the generator was started once')
      assert.equal(events, ['hostdown', 'hostup resumed'])
      const host = p.stats().hosts[0]!
      assert.is(host.resumes, 1)
      assert.ok(host.disconnectedMs > 0)
      assert.is(host.workers[0]!.exits, 0, 'the same worker process')
    } finally {
      await p.close()
    }
  })

  s('a bidirectional call cut: the caller\'s source is read once, and every answer arrives once, in order', async () => {
    const p = await open()
    try {
      let pulled = 0
      function* source() {
        for (let i = 0; i < 10_000; i++) {
          pulled++
          yield i
        }
      }
      const got = await readAll(p.run(r.doubled, source()), 2000, () => proxy.cut())
      assert.is(pulled, 10_000, 'each item of the source was read once')
      assert.equal(got, Array.from({ length: 10_000 }, (_, i) => i * 2))
      assert.is(p.stats().hosts[0]!.resumes, 1)
    } finally {
      await p.close()
    }
  })

  s('a nested body cut while it is read arrives whole (sha256 intact)', async () => {
    const p = await open()
    try {
      let index = 0
      for await (const item of p.run(n.files, 3, 4 * MiB)) {
        const h = createHash('sha256')
        let read = 0
        for await (const chunk of item.body) {
          h.update(chunk)
          read += chunk.byteLength
          if (index === 1 && read >= MiB && read - chunk.byteLength < MiB) proxy.cut()
        }
        assert.is(h.digest('hex'), n.bodyHash(item.seed, 4 * MiB), `body ${index}`)
        index++
      }
      assert.is(index, 3)
      assert.is(p.stats().hosts[0]!.resumes, 1)
    } finally {
      await p.close()
    }
  })

  s('many calls in flight on two workers, cut at once, all complete', async () => {
    const starts = markerPath()
    const p = await open({ workers: 2 })
    try {
      let total = 0
      const calls = Array.from({ length: 8 }, async () => {
        const got: number[] = []
        for await (const x of p.run(r.counted, starts, 5000)) {
          got.push(x)
          if (++total === 8000) proxy.cut()
        }
        return got
      })
      for (const got of await Promise.all(calls)) assert.ok(got.length === 5000 && got.every((v, i) => v === i))
      assert.is(r.lines(starts), 8, 'each generator started once')
      assert.ok(p.stats().hosts[0]!.workers.every((w) => w.exits === 0))
    } finally {
      await p.close()
    }
  })

  s('an outage: new calls wait for the host to come back and run; the producer makes nothing while the connection is down', async () => {
    const made = markerPath()
    const marker = markerPath()
    const p = await open()
    try {
      const call = p.run(r.endless, made, marker)
      const it = call[Symbol.asyncIterator]()
      for (let i = 0; i < 1000; i++) assert.is((await it.next()).value, i)
      proxy.refuse()
      proxy.cut()
      await until(() => p.stats().hosts[0]!.up === false, 10_000, 'the host to be down')
      assert.match(p.stats().hosts[0]!.error ?? '', 'its calls wait to resume')
      const waiting = p.run(t.add, 1, 2)
      // It goes on while it has credit, then waits: what it made stays the same.
      let last = readFileSync(made, 'utf8')
      for (let tries = 0; ; tries++) {
        await sleep(200)
        const now = readFileSync(made, 'utf8')
        if (now === last) break
        assert.ok(tries < 50, 'the producer never ran out of credit')
        last = now
      }
      await sleep(500)
      assert.is(readFileSync(made, 'utf8'), last, 'the producer waited for credit')
      proxy.allow()
      assert.is(await waiting, 3)
      for (let i = 1000; i < 3000; i++) assert.is((await it.next()).value, i)
      await it.return!()
      assert.instance(await rejection(call.result), Error)
    } finally {
      await p.close()
    }
  })

  s('an upload through a long outage: the local source is not read while the connection is down, and what is kept to resend stays within the window', async () => {
    const p = await open()
    try {
      const chunk = new Uint8Array(64 * 1024)
      let pulled = 0
      function* source() {
        for (let i = 0; i < 2000; i++) {
          pulled++
          yield chunk
        }
      }
      const total = p.run(r.byteCount, source())
      await until(() => pulled >= 300, 10_000, 'the upload to get going')
      proxy.refuse()
      proxy.cut()
      let last = pulled
      for (let tries = 0; ; tries++) {
        await sleep(200)
        if (pulled === last) break
        assert.ok(tries < 50, 'the source never stopped being read')
        last = pulled
      }
      await sleep(1000)
      assert.is(pulled, last, 'the source waits while the connection is down')
      const kept = p.stats().hosts[0]!.workers[0]!.resumeBytes
      assert.ok(kept <= 8 * MiB + 2 * chunk.byteLength, `kept ${kept} bytes to resend, more than the 8 MiB window`)
      proxy.allow()
      assert.is(await total, 2000 * chunk.byteLength)
      assert.is(pulled, 2000)
    } finally {
      await p.close()
    }
  })

  s('an sshd restarted (not only the network): the calls resume on the new one', async () => {
    const starts = markerPath()
    const p = await open()
    try {
      const got = await readAll(p.run(r.counted, starts, 20_000), 3000, () => sshd.restart())
      assert.ok(got.length === 20_000 && got.every((v, i) => v === i))
      assert.is(r.lines(starts), 1)
      assert.is(p.stats().hosts[0]!.resumes, 1)
    } finally {
      await p.close()
    }
  })

  s('an outage longer than the window: the call fails with TransportError (resume); on the host the worker cancels it (its finally runs) and exits', async () => {
    const p = await open({ resumeWindow: 1500 })
    try {
      const { it, pid, marker } = await streamThenOutage(p, proxy)
      const err = await failure(it)
      assert.instance(err, TransportError)
      assert.is(err.reason, 'resume')
      assert.match(err.message, 'resumeWindow')
      const done = await readMarker(marker)
      assert.is(done.pid, pid, 'the finally ran on the worker')
      await until(() => !running(pid), 10_000, 'the worker to exit')
    } finally {
      proxy.allow()
      await p.close()
    }
  })

  s('past its window, a worker whose call never settles on its cancel exits all the same (regression: it ran for ever)', async () => {
    const p = await open({ resumeWindow: 1000 })
    try {
      const pid = await p.run(r.pid)
      const call = p.run(r.hang)
      await sleep(300)
      proxy.refuse()
      proxy.cut()
      assert.instance(await rejection(call.result), TransportError)
      await until(() => !running(pid), 15_000, 'the worker to exit')
    } finally {
      proxy.allow()
      await p.close()
    }
  })

  s('a call cancelled during an outage: this side goes on, the other call on the worker resumes, and the remote finally runs at the resume (regression: the worker was given up as stuck)', async () => {
    const marker = markerPath()
    const p = await open({ defaults: { cancelGrace: 300 } })
    try {
      const pid = await p.run(r.pid)
      const a = p.run(r.endless, markerPath(), marker)[Symbol.asyncIterator]()
      const b = p.run(r.counted, markerPath(), 5000)[Symbol.asyncIterator]()
      for (let i = 0; i < 100; i++) {
        await a.next()
        assert.is((await b.next()).value, i)
      }
      proxy.refuse()
      proxy.cut()
      await until(() => p.stats().hosts[0]!.up === false, 10_000, 'the host to be down')
      await a.return!()
      // Past the grace and a retired worker's ping: before, the worker was destroyed here.
      await sleep(2500)
      proxy.allow()
      for (let i = 100; i < 5000; i++) assert.is((await b.next()).value, i)
      assert.is((await readMarker(marker)).pid, pid, 'the finally ran on the same worker')
      assert.is(await p.run(r.pid), pid)
      assert.is(p.stats().hosts[0]!.workers[0]!.exits, 0)
    } finally {
      await p.close()
    }
  })

  s('output printed during an outage is kept up to a bound; the rest is dropped and said at the resume (the worker\'s memory stays bounded)', async () => {
    const stop = markerPath()
    const seen: string[] = []
    const p = await open({ onLog: (l) => void seen.push(l.line) })
    try {
      const call = p.run(r.chatty, stop)
      await until(() => seen.length > 100, 10_000, 'output')
      proxy.refuse()
      proxy.cut()
      await until(() => p.stats().hosts[0]!.up === false, 10_000, 'the host to be down')
      await sleep(3000)
      proxy.allow()
      await until(() => seen.some((l) => l.includes('were dropped while the connection was down')), 30_000, 'the line saying what was dropped')
      writeFileSync(stop, '')
      const printed = await call
      assert.ok(seen.length < printed, `${seen.length} lines arrived of ${printed}`)
    } finally {
      writeFileSync(stop, '')
      await p.close()
    }
  })

  s('close() during an outage resolves; the worker ends on its own when its window passes', async () => {
    const p = await open({ resumeWindow: 2000 })
    const { it, pid, marker } = await streamThenOutage(p, proxy)
    await until(() => p.stats().hosts[0]!.up === false, 10_000, 'the host to be down')
    await p.close()
    // Failed by close() at once, not after the pool's grace and a cancel that could not be sent.
    assert.match((await failure(it)).message, 'was closed while its connection was down')
    assert.is((await readMarker(marker)).pid, pid, 'its finally ran')
    await until(() => !running(pid), 10_000, 'the worker to exit')
  })

  s('a connection to the worker\'s socket with a wrong token is refused, and the caller is told in a log line', async () => {
    const cacheDir = tempDir()
    const p = await open({ cacheDir })
    try {
      const pid = await p.run(r.pid)
      const socket = readdirSync(cacheDir).find((f) => f.startsWith(`r-${pid}-`) && f.endsWith('.sock'))
      assert.ok(socket, 'the worker listens on a socket in its cache directory')
      const payload = Buffer.from(JSON.stringify({ token: '0'.repeat(32), received: 0 }))
      const frame = Buffer.alloc(11 + payload.byteLength)
      frame.writeUInt32LE(7 + payload.byteLength, 0)
      frame[4] = 15 // resume
      payload.copy(frame, 11)
      const answer = await new Promise<Buffer>((resolve, reject) => {
        const c = connect(path.join(cacheDir, socket!))
        const got: Buffer[] = []
        c.on('data', (d) => got.push(d)).on('close', () => resolve(Buffer.concat(got))).on('error', reject)
        c.write(frame)
      })
      assert.is(answer.byteLength, 0, 'nothing is answered')
      await until(() => logs.some((l) => l.line.includes('wrong token')), 10_000, 'the log line')
      assert.is(await p.run(t.add, 2, 3), 5, 'the session goes on')
    } finally {
      await p.close()
    }
  })

  s('resumeWindow: 0 turns it off: a dropped connection fails the call at once', async () => {
    const p = await open({ resumeWindow: 0 })
    try {
      const it = p.run(r.endless, markerPath(), markerPath())[Symbol.asyncIterator]()
      await it.next()
      proxy.cut()
      const err = await failure(it)
      assert.instance(err, TransportError)
      assert.is.not(err.reason, 'resume')
    } finally {
      await p.close()
    }
  })

  s('map runs no item again whose call was resumed', async () => {
    const runs = markerPath()
    const p = await open({ workers: 2 })
    try {
      const results = p.map(r.doubleOnce, Array.from({ length: 300 }, (_, x) => ({ runs, x })), { concurrency: 8 })
      const got = await readAll(results, 100, () => proxy.cut())
      assert.equal(got, Array.from({ length: 300 }, (_, i) => i * 2))
      assert.is(results.progress.rerun, 0)
      assert.is(r.lines(runs), 300, 'each item ran once')
      assert.is(p.stats().hosts[0]!.resumes, 1)
    } finally {
      await p.close()
    }
  })

  s('farpipe run survives a drop: it says reconnecting on stderr, and every line comes once, in order', async () => {
    const starts = markerPath()
    const child = start(['run', 'resume.ts#counted', starts, '20000', '--host', ALIAS], { HOME: sshd.home })
    let newlines = 0
    child.stdout!.on('data', (d: Buffer) => {
      const before = newlines
      for (const byte of d) if (byte === 10) newlines++
      if (before < 3000 && newlines >= 3000) proxy.cut()
    })
    const done = await finish(child)
    assert.is(done.code, 0, done.stderr)
    assert.equal(lines(done.stdout), Array.from({ length: 20_000 }, (_, i) => String(i)))
    assert.match(done.stderr, 'connection lost, reconnecting…')
    assert.match(done.stderr, 'reconnected, the call goes on')
    assert.is(r.lines(starts), 1)
  })

  s('a second drop while re-attaching, at every moment of the new connection\'s handshake, is resumed too (regression: a crash of the caller\'s process)', async () => {
    const starts = markerPath()
    const p = await open()
    try {
      const it = p.run(r.counted, starts, 1e9)[Symbol.asyncIterator]()
      let expect = 0
      const read = async (n: number) => {
        for (let k = 0; k < n; k++) assert.is((await it.next()).value, expect++)
      }
      await read(1000)
      // Before: ssh2 threw "Not connected" out of the stream-local forward's callback, 60-80 ms into the new connection.
      for (let delay = 0; delay <= 150; delay += 10) {
        const before = proxy.accepted
        proxy.cut()
        await until(() => proxy.accepted > before, 10_000, 'a new connection')
        await sleep(delay)
        proxy.cut()
        await read(500)
      }
      await it.return!()
      assert.is(r.lines(starts), 1)
    } finally {
      await p.close()
    }
  })

  s('a bad resumeWindow is refused with its name', async () => {
    for (const bad of [-1, 'soon', Infinity, Number.NaN]) {
      const err = await rejection(pool({ hosts: [ALIAS], resumeWindow: bad as number }))
      assert.instance(err, Error)
      assert.match(err.message, 'resumeWindow')
    }
  })

  s.run()

  // The same through a command host: `ssh` started per worker, its relay run through ssh too.
  const c = suite('resume: a command host through the system ssh client')
  const viaSsh = { name: 'via-ssh', command: ['ssh', '-F', `${sshd.home}/.ssh/config`, '-o', 'BatchMode=yes', ALIAS] }
  const openVia = (options: PoolOptions = {}) => pool({ hosts: [viaSsh], workers: 1, cacheDir: tempDir(), onLog: (l) => void logs.push(l), ...options })
  c.after.each(() => proxy.allow())
  // The proxy's listener would keep the process alive once the specs are done.
  c.after(async () => {
    await proxy.close()
    await sshd.stop()
  })

  c('streams cut mid-way go on where they were: every item once, in order, the generator started once, the source read once, the same worker', async () => {
    const starts = markerPath()
    const p = await openVia()
    try {
      const pid = await p.run(r.pid)
      let pulled = 0
      function* source() {
        for (let i = 0; i < 10_000; i++) {
          pulled++
          yield i
        }
      }
      const [got, answers] = await Promise.all([readAll(p.run(r.counted, starts, 20_000), 3000, () => proxy.cut()), readAll(p.run(r.doubled, source()), 0, () => {})])
      assert.ok(got.length === 20_000 && got.every((v, i) => v === i), 'in order, none twice')
      assert.is(r.lines(starts), 1, 'the generator was started once')
      assert.is(pulled, 10_000, 'each item of the source was read once')
      assert.equal(answers, Array.from({ length: 10_000 }, (_, i) => i * 2))
      assert.is(p.stats().hosts[0]!.resumes, 1)
      assert.is(await p.run(r.pid), pid, 'the same worker process')
    } finally {
      await p.close()
    }
  })

  c('a worker that dies (its connection still up) fails its call with how it ended, without waiting out the window; the next call runs on a new worker', async () => {
    const p = await openVia({ resumeWindow: 60_000 })
    try {
      const pid = await p.run(r.pid)
      const it = p.run(r.endless, markerPath(), markerPath())[Symbol.asyncIterator]()
      await it.next()
      process.kill(pid, 'SIGKILL')
      const err = await failure(it)
      assert.instance(err, TransportError)
      // Not 'resume': that would be the window passing.
      assert.is(err.reason, 'lost')
      assert.match(err.message, /^worker via-ssh\/0 exited with code 255.*; re-attaching found the worker gone \(worker via-ssh\/0 is gone: its relay found no worker/)
      assert.is.not(await p.run(r.pid), pid)
    } finally {
      await p.close()
    }
  })

  c('an outage longer than the window: TransportError (resume), the finally runs on the host, the worker exits; close() leaves no command running', async () => {
    const p = await openVia({ resumeWindow: 1500 })
    try {
      const { it, pid, marker } = await streamThenOutage(p, proxy)
      const err = await failure(it)
      assert.instance(err, TransportError)
      assert.is(err.reason, 'resume')
      assert.match(err.message, 'resumeWindow')
      assert.is((await readMarker(marker)).pid, pid, 'the finally ran on the worker')
      await until(() => !running(pid), 10_000, 'the worker to exit')
    } finally {
      proxy.allow()
      await p.close()
    }
    assert.equal(sshClients(), [], 'no ssh command left running')
  })

  c('close() during an outage resolves, leaves no command running, and the worker ends at its window', async () => {
    const p = await openVia({ resumeWindow: 2000 })
    const { it, pid, marker } = await streamThenOutage(p, proxy)
    await until(() => p.stats().hosts[0]!.up === false, 10_000, 'the host to be down')
    await p.close()
    assert.instance(await failure(it), Error)
    assert.equal(sshClients(), [], 'no ssh command left running')
    proxy.allow()
    assert.is((await readMarker(marker)).pid, pid, 'its finally ran')
    await until(() => !running(pid), 10_000, 'the worker to exit')
  })

  c.run()
}

/** The ssh clients this process started that still run. */
function sshClients(): number[] {
  const cmdline = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    } catch {
      return ''
    }
  }
  return workerChildren()
    .filter((c) => c.state !== 'Z' && cmdline(c.pid).startsWith('ssh\0'))
    .map((c) => c.pid)
}
