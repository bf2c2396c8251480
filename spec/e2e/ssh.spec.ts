// farpipe over SSH against a real OpenSSH sshd on loopback: the whole core
// suite again, then what only SSH has (host keys, logins, jump hosts, dropped
// and silent connections, bootstrap).
import { chmodSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { collect, freePort, rejection, tempDir, until } from '../helpers.ts'
import { HostKeyError, pool, TransportError, type Pool, type PoolOptions } from 'farpipe'
import * as t from '../fixtures/tasks.ts'
import { coreSuites } from './core.ts'
import { noSshd, useClientHome, startAgent, startSshd, type Sshd } from './sshd.ts'

if (!noSshd('ssh')) {
  const sshd = await startSshd({ alias: 'farpipe-test' })
  useClientHome(sshd.home)

  const open = (options: PoolOptions = {}) => pool({ hosts: [sshd.alias], ...options })
  coreSuites({ name: 'ssh', host: sshd.alias, open })
  sshSuites(sshd, open)
}

function sshSuites(sshd: Sshd, open: (options?: PoolOptions) => Promise<Pool>): void {
  const s = suite('ssh: hosts, keys and logins')
  const knownHosts = path.join(sshd.home, '.ssh', 'known_hosts')

  s('takes ssh://user@host:port destinations as well as aliases', async () => {
    const p = await pool({ hosts: [`ssh://${sshd.user}@127.0.0.1:${sshd.port}`], workers: 1, cacheDir: tempDir() })
    try {
      const ctx = await p.run(t.whereAmI)
      assert.match(ctx.host, '127.0.0.1')
      assert.is(await p.run(t.add, 2, 3), 5)
    } finally {
      await p.close()
    }
  })

  s('refuses bad destinations with a clear error before connecting', async () => {
    for (const bad of ['', '-oProxyCommand=evil', 'ssh://host/path', 'user@', 'host:99999']) {
      const err = await rejection(pool({ hosts: [bad] }))
      assert.instance(err, TypeError, `destination ${JSON.stringify(bad)}`)
    }
  })

  s('a host key that differs from known_hosts is refused with its fingerprint', async () => {
    const other = await startSshd({ alias: 'farpipe-changed', home: sshd.home, hostKeyType: 'ed25519', trustHostKey: false })
    try {
      // Claim another key for its port: the presented key is then "changed".
      writeFileSync(knownHosts, `${readFileSync(knownHosts, 'utf8')}[127.0.0.1]:${other.port} ${sshd.hostKeyPublic}\n`)
      const err = await rejection(pool({ hosts: [other.alias], workers: 1, cacheDir: tempDir() }))
      assert.instance(err, HostKeyError)
      assert.is(err.fingerprint, other.hostKeyFingerprint)
      assert.match(err.message, 'HAS CHANGED')
      assert.match(err.message, other.hostKeyFingerprint)
    } finally {
      await other.stop()
    }
  })

  s("an unknown host key is refused under 'strict', and appended to known_hosts under 'accept-new'", async () => {
    const other = await startSshd({ alias: 'farpipe-new', home: sshd.home, trustHostKey: false })
    try {
      const err = await rejection(pool({ hosts: [other.alias], workers: 1, cacheDir: tempDir() }))
      assert.instance(err, HostKeyError)
      assert.is(err.fingerprint, other.hostKeyFingerprint)
      assert.match(err.message, 'is not known')
      const before = readFileSync(knownHosts, 'utf8')
      const p = await pool({ hosts: [{ host: other.alias, knownHosts: 'accept-new' }], workers: 1, cacheDir: tempDir() })
      assert.is(await p.run(t.add, 1, 1), 2)
      await p.close()
      const after = readFileSync(knownHosts, 'utf8')
      assert.ok(after.length > before.length, 'a line was appended')
      assert.match(after, `[127.0.0.1]:${other.port}`)
      // Now known: strict connects.
      const q = await pool({ hosts: [other.alias], workers: 1, cacheDir: tempDir() })
      assert.is(await q.run(t.add, 2, 2), 4)
      await q.close()
    } finally {
      await other.stop()
    }
  })

  s('a failed login names the host, the user and the methods tried', async () => {
    const stranger = path.join(tempDir(), 'id_stranger')
    const { execFileSync } = await import('node:child_process')
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', stranger])
    // Not the alias: its config block names the right key, which would be tried too.
    const err = await rejection(pool({ hosts: [{ host: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, identityFile: stranger }], workers: 1 }))
    assert.instance(err, TransportError)
    assert.is(err.reason, 'auth')
    assert.match(err.message, `authentication failed for ${sshd.user}@127.0.0.1:${sshd.port}`)
    assert.match(err.message, 'id_stranger')
  })

  s('an encrypted key works with its passphrase and is reported without one', async () => {
    const dir = tempDir()
    const key = path.join(dir, 'id_locked')
    const { execFileSync } = await import('node:child_process')
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'sesame', '-f', key])
    const auth = path.join(sshd.dir, 'authorized_keys')
    writeFileSync(auth, `${readFileSync(auth, 'utf8')}${readFileSync(`${key}.pub`, 'utf8')}`)
    const host = `ssh://${sshd.user}@127.0.0.1:${sshd.port}`
    const err = await rejection(pool({ hosts: [{ host, identityFile: key }], workers: 1 }))
    assert.match(err.message, 'encrypted, and no passphrase was given')
    const p = await pool({ hosts: [{ host, identityFile: key, passphrase: 'sesame' }], workers: 1, cacheDir: tempDir() })
    assert.is(await p.run(t.add, 3, 3), 6)
    await p.close()
  })

  s('logs in through ssh-agent', async () => {
    const agent = await startAgent(sshd.clientKey)
    // No usable key file: only the agent can sign.
    const host = { host: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, identityFile: '/nonexistent/key' }
    try {
      const without = await rejection(pool({ hosts: [{ ...host, agent: false }], workers: 1 }))
      assert.is(without.reason, 'auth')
      const p = await pool({ hosts: [{ ...host, agent: agent.socket }], workers: 1, cacheDir: tempDir() })
      assert.is(await p.run(t.add, 4, 4), 8)
      await p.close()
    } finally {
      await agent.stop()
    }
  })

  s('a refused port, an unknown host name and a missing node are distinct, clear errors', async () => {
    const port = await freePort()
    const refused = await rejection(pool({ hosts: [`ssh://127.0.0.1:${port}`] }))
    assert.instance(refused, TransportError)
    assert.is(refused.reason, 'refused')
    assert.match(refused.message, `refused the connection`)
    const dns = await rejection(pool({ hosts: ['no-such-host.invalid'] }))
    assert.is(dns.reason, 'dns')
    assert.match(dns.message, 'cannot resolve the host name no-such-host.invalid')
    const node = await rejection(pool({ hosts: [{ host: sshd.alias, node: '/nonexistent/node' }] }))
    assert.is(node.reason, 'node')
    assert.match(node.message, 'node was not found on farpipe-test')
  })

  s('a host that never answers the handshake fails within the connect timeout', async () => {
    // Accepts the TCP connection and then says nothing, as a hung host would.
    const silent = createServer(() => {})
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    const port = (silent.address() as { port: number }).port
    try {
      const err = await rejection(pool({ hosts: [{ host: `ssh://127.0.0.1:${port}`, connectTimeout: 500 }] }))
      assert.instance(err, TransportError)
      assert.is(err.reason, 'timeout')
      assert.match(err.message, 'did not complete the SSH handshake within 500 ms')
    } finally {
      silent.close()
    }
  })

  s('a node that is too old is refused with the version found', async () => {
    const fake = path.join(tempDir(), 'old-node')
    writeFileSync(fake, `#!/bin/sh\nprintf '{"node":"v18.19.0","platform":"linux","arch":"x64","cores":2,"cacheDir":"/tmp","worker":false}'\n`)
    chmodSync(fake, 0o755)
    const err = await rejection(pool({ hosts: [{ host: sshd.alias, node: fake }] }))
    assert.is(err.reason, 'node')
    assert.match(err.message, 'node on farpipe-test is v18.19.0, farpipe needs 20 or later')
  })

  s('a pool with an unreachable host stays usable on the others', async () => {
    const port = await freePort()
    const logs: string[] = []
    const p = await pool({ hosts: [sshd.alias, `ssh://127.0.0.1:${port}`], workers: 1, cacheDir: tempDir(), onLog: (e) => void logs.push(e.line) })
    try {
      const [good, bad] = p.hosts
      assert.is(good!.up, true)
      assert.is(bad!.up, false)
      assert.is((bad!.error as TransportError).reason, 'refused')
      assert.ok(logs.some((l) => l.includes('unreachable, calls go to the other hosts')))
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) => p.run(t.add, i, i)))
      assert.equal(results, [0, 2, 4, 6, 8])
    } finally {
      await p.close()
    }
  })

  s.run()

  const c = suite('ssh: connections')

  c('runs through a jump host (ProxyJump) to a second sshd', async () => {
    const target = await startSshd({ alias: 'farpipe-behind', home: sshd.home })
    try {
      const config = path.join(sshd.home, '.ssh', 'config')
      writeFileSync(config, `${readFileSync(config, 'utf8')}\nHost farpipe-via-jump\n  HostName 127.0.0.1\n  Port ${target.port}\n  User ${target.user}\n  IdentityFile ${sshd.clientKey}\n  ProxyJump ${sshd.alias}\n`)
      const p = await pool({ hosts: ['farpipe-via-jump'], workers: 1, cacheDir: tempDir() })
      try {
        assert.equal(await collect(p.run(t.countAsync, 3)), [0, 1, 2])
        assert.is((await p.run(t.whereAmI)).host, 'farpipe-via-jump')
      } finally {
        await p.close()
      }
    } finally {
      await target.stop()
    }
  })

  // These two with resume off (resumeWindow: 0): by default the calls resume on a new connection (spec/e2e/resume.spec.ts).
  c('killing the sshd session process mid-stream fails the call with TransportError naming the host, and the next call reconnects', async () => {
    const p = await open({ workers: 1, cacheDir: tempDir(), resumeWindow: 0 })
    try {
      const call = p.run(t.slowItems, 1000, 20)
      const it = call[Symbol.asyncIterator]()
      await it.next()
      const pids = sshd.sessionPids()
      assert.ok(pids.length > 0, 'a session process serves the pool')
      for (const pid of pids) process.kill(pid, 'SIGKILL')
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.match(err.message, sshd.alias)
      assert.is(await p.run(t.add, 1, 2), 3)
    } finally {
      await p.close()
    }
  })

  c('a peer that goes silent fails the calls on it within the keepalive bound', async () => {
    const p = await pool({ hosts: [{ host: sshd.alias, keepaliveInterval: 200, keepaliveCountMax: 2 }], workers: 1, cacheDir: tempDir(), resumeWindow: 0 })
    const stopped: number[] = []
    try {
      const call = p.run(t.slowItems, 1000, 20)
      await call[Symbol.asyncIterator]().next()
      for (const pid of sshd.sessionPids()) {
        process.kill(pid, 'SIGSTOP')
        stopped.push(pid)
      }
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.match(err.message, 'did not answer')
    } finally {
      for (const pid of stopped) process.kill(pid, 'SIGKILL')
      await p.close()
    }
  })

  c('streams survive key re-exchanges in both directions (regression: an asynchronous host key check corrupted the stream at rekey)', async () => {
    const rekeying = await startSshd({ alias: 'farpipe-rekey', home: sshd.home, extraConfig: 'RekeyLimit 1M' })
    try {
      const p = await pool({ hosts: [rekeying.alias], workers: 1, cacheDir: tempDir() })
      try {
        const chunk = new Uint8Array(64 * 1024)
        const total = 48 * 1024 * 1024
        let back = 0
        for await (const c of p.run(t.echoBytes, (function* () { for (let n = 0; n < total; n += chunk.byteLength) yield chunk })())) back += c.byteLength
        assert.is(back, total)
      } finally {
        await p.close()
      }
      assert.not.match(rekeying.log(), 'Bad packet length')
    } finally {
      await rekeying.stop()
    }
  })

  c('a second run uploads nothing: the worker and the bundles are found in the cache', async () => {
    const cacheDir = tempDir()
    const p1 = await open({ workers: 1, cacheDir })
    assert.is(await p1.run(t.add, 1, 1), 2)
    await p1.close()
    assert.is(statSync(cacheDir).mode & 0o777, 0o700)
    const files = readdirSync(cacheDir).filter((f) => f.endsWith('.mjs'))
    assert.ok(files.some((f) => f.startsWith('worker-')), files.join(', '))
    const inodes = new Map(files.map((f) => [f, statSync(path.join(cacheDir, f)).ino]))
    const p2 = await open({ workers: 2, cacheDir })
    assert.is(await p2.run(t.add, 2, 2), 4)
    await p2.close()
    for (const [f, ino] of inodes) assert.is(statSync(path.join(cacheDir, f)).ino, ino, `${f} was written again`)
  })

  c("node: 'upload' ships this machine's node to a host that has none, once", async () => {
    // A host whose login PATH has the basic tools but no node.
    const bin = tempDir()
    // sha256sum lets bootstrap check the cached node by its hash (without it, node is uploaded again each time).
    for (const tool of ['mkdir', 'chmod', 'uname', 'ls', 'cat', 'mv', 'env', 'sh', 'sha256sum']) symlinkSync(`/usr/bin/${tool}`, path.join(bin, tool))
    const bare = await startSshd({ alias: 'farpipe-bare', home: sshd.home, env: { PATH: bin } })
    try {
      const missing = await rejection(pool({ hosts: [bare.alias], workers: 1 }))
      assert.is(missing.reason, 'node')
      assert.match(missing.message, "node: 'upload'")
      const cacheDir = tempDir()
      const p = await pool({ hosts: [{ host: bare.alias, node: 'upload' }], workers: 1, cacheDir })
      const { execPath } = await p.run(t.readEnv, 'PATH')
      await p.close()
      assert.ok(execPath.startsWith(cacheDir), `workers run ${execPath}`)
      const shipped = readdirSync(cacheDir).filter((f) => f.startsWith('node-'))
      assert.is(shipped.length, 1)
      const ino = statSync(path.join(cacheDir, shipped[0]!)).ino
      const q = await pool({ hosts: [{ host: bare.alias, node: 'upload' }], workers: 1, cacheDir })
      assert.is(await q.run(t.add, 1, 1), 2)
      await q.close()
      assert.is(statSync(path.join(cacheDir, shipped[0]!)).ino, ino, 'uploaded again')
    } finally {
      await bare.stop()
    }
  })

  c('more workers than one connection may carry get a second connection (sshd allows 10 sessions by default)', async () => {
    const strict = await startSshd({ alias: 'farpipe-maxsessions', home: sshd.home, extraConfig: 'MaxSessions 10' })
    try {
      const p = await pool({ hosts: [strict.alias], workers: 12, cacheDir: tempDir() })
      try {
        const seen = new Set<number>()
        const calls = Array.from({ length: 48 }, () => p.run(t.pause, 100).then(() => p.run(t.whereAmI)))
        for (const ctx of await Promise.all(calls)) seen.add(ctx.worker)
        assert.is(p.size, 12)
        assert.ok(seen.size > 8, `calls ran on ${seen.size} workers`)
      } finally {
        await p.close()
      }
    } finally {
      await strict.stop()
    }
  })

  c('passes environment variables to the workers', async () => {
    const p = await pool({ hosts: [{ host: sshd.alias, env: { FARPIPE_GREETING: "it's here; $(no expansion)" } }], workers: 1, cacheDir: tempDir() })
    try {
      assert.is((await p.run(t.readEnv, 'FARPIPE_GREETING')).value, "it's here; $(no expansion)")
    } finally {
      await p.close()
    }
  })

  c('worker output comes back prefixed with the host', async () => {
    const lines: string[] = []
    const p = await open({ workers: 1, cacheDir: tempDir(), onLog: (e) => void lines.push(`[${e.where}] ${e.line}`) })
    try {
      await collect(p.run(t.chatty))
      await until(() => lines.length >= 4, 10_000, 'log lines')
      assert.ok(lines.includes(`[${sshd.alias}/0] hello from console.log`), lines.join('\n'))
    } finally {
      await p.close()
    }
  })

  c.run()
}

