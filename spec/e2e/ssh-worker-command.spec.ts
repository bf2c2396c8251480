// What reaches the host's command line and file system over a real sshd:
// paths and values with spaces and shell syntax in them, the environment of
// workers, where bundles are cached, the uploaded node binary, and keepalive
// settings that must not cut a healthy connection.
import { createHash, randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { FarpipeError, pool, SshTransport, TransportError, type PoolOptions } from 'farpipe'
import { resolveHost } from '../../lib/ssh/config.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, rejection, running, sleep, tempDir, until } from '../helpers.ts'
import { noSshd, useClientHome, startSshd, type Sshd } from './sshd.ts'

if (!noSshd('ssh: worker command')) {
  const sshd = await startSshd({ alias: 'farpipe-cmd' })
  useClientHome(sshd.home)
  commandSuite(sshd)
  cacheSuite(sshd)
  keepaliveSuite(sshd)
  uploadSuite(sshd)
}

/** Strings a shell would do something with if they reached it unquoted; each would create `marker`. */
function hostile(marker: string): string[] {
  return [
    `'; touch ${marker} #`,
    `$(touch ${marker})`,
    `\`touch ${marker}\``,
    `x\ntouch ${marker}\n`,
    `"; touch ${marker}; echo "`,
    `a  b\tc $(touch ${marker})`,
    `\\'\\"$HOME*?[a]{b,c}~!`,
  ]
}

/** The node processes the sshd's sessions run (its workers, and any launcher), by pid. */
function nodesOf(sshd: Sshd): number[] {
  const sessions = new Set(sshd.sessionPids())
  const out: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (state !== 'Z' && sessions.has(Number(ppid)) && readFileSync(`/proc/${name}/comm`, 'utf8').trim() === 'node') out.push(Number(name))
    } catch {
      // gone meanwhile
    }
  }
  return out.sort()
}

/** Files in `dir` named like a bundle (`<sha256>.mjs`). */
const bundlesIn = (dir: string) => (existsSync(dir) ? readdirSync(dir).filter((f) => /^[0-9a-f]{64}\.mjs$/.test(f)) : [])

/** Runs `fn` on a one-worker pool of `options`, closing it after. */
async function withPool<T>(options: PoolOptions, fn: (p: Awaited<ReturnType<typeof pool>>) => T | PromiseLike<T>): Promise<T> {
  const p = await pool({ workers: 1, ...options })
  try {
    return await fn(p)
  } finally {
    await p.close()
  }
}

function commandSuite(sshd: Sshd): void {
  const c = suite('ssh: the worker command line')

  c('a node path and an env value with two spaces in a row reach the worker unchanged (regression: collapsed to one space)', async () => {
    const dir = path.join(tempDir(), 'a  b')
    mkdirSync(dir)
    const node = path.join(dir, 'node')
    symlinkSync(process.execPath, node)
    const host = { host: sshd.alias, node, env: { FARPIPE_TWO: 'two  spaces', FARPIPE_EDGES: '  padded  ' } }
    await withPool({ hosts: [host], cacheDir: tempDir() }, async (p) => {
      assert.is((await p.run(t.readEnv, 'FARPIPE_TWO')).value, 'two  spaces')
      assert.is((await p.run(t.readEnv, 'FARPIPE_EDGES')).value, '  padded  ')
    })
  })

  c('hostile strings in every option that reaches a remote command line run nothing, and work or fail clearly', async () => {
    const marker = path.join(tempDir(), `pwned-${randomBytes(4).toString('hex')}`)
    const bad = hostile(marker)

    // env values: passed as data, read back exactly.
    const env = Object.fromEntries(bad.map((v, i) => [`FARPIPE_HOSTILE_${i}`, v]))
    await withPool({ hosts: [{ host: sshd.alias, env }], cacheDir: tempDir() }, async (p) => {
      for (const [name, value] of Object.entries(env)) assert.is((await p.run(t.readEnv, name)).value, value, name)
    })

    for (const value of bad) {
      const what = JSON.stringify(value)
      // env names: refused before connecting.
      const named = await rejection(pool({ hosts: [{ host: sshd.alias, env: { [value]: '1' } }], workers: 1 }))
      assert.instance(named, TypeError, `env name ${what}`)
      assert.match(named.message, `bad variable name ${JSON.stringify(value)}`)

      // node: not found, named as such.
      const node = await rejection(pool({ hosts: [{ host: sshd.alias, node: value }], workers: 1, cacheDir: tempDir() }))
      assert.instance(node, TransportError, `node ${what}`)
      assert.is(node.reason, 'node')
      assert.match(node.message, 'node was not found on farpipe-cmd')

      // cacheDir: a directory of that name, holding the worker and the bundles; refused up front where node could not load from it.
      const cacheDir = path.join(tempDir(), value)
      if (value.includes('\\')) {
        const refused = await rejection(pool({ hosts: [{ host: sshd.alias, cacheDir }], workers: 1 }))
        assert.instance(refused, TypeError, `cacheDir ${what}`)
        assert.match(refused.message, `cacheDir ${JSON.stringify(cacheDir)} contains a backslash`)
      } else {
        await withPool({ hosts: [{ host: sshd.alias, cacheDir }] }, async (p) => assert.is(await p.run(t.add, 1, 2), 3, `cacheDir ${what}`))
        assert.ok(readdirSync(cacheDir).some((f) => f.startsWith('worker-')), `cacheDir ${what} holds the worker`)
        assert.is(bundlesIn(cacheDir).length, 1, `cacheDir ${what} holds the bundle`)
      }

      // user: refused as a name, or by the server; never a shell word.
      const user = await rejection(pool({ hosts: [{ host: `ssh://127.0.0.1:${sshd.port}`, user: value, identityFile: sshd.clientKey }], workers: 1 }))
      assert.ok(user instanceof TypeError || (user instanceof TransportError && user.reason === 'auth'), `user ${what}: ${user}`)
      assert.match(user.message, user instanceof TypeError ? 'option user must be a user name' : 'authentication failed')

      // nodeArgs: one quoted word for node, which takes it as the script to run and fails; the worker's exit is reported.
      const args = await rejection(withPool({ hosts: [sshd.alias], nodeArgs: [value], cacheDir: tempDir(), onLog: () => {} }, (p) => p.run(t.add, 1, 1)))
      assert.instance(args, FarpipeError, `nodeArgs ${what}`)
      assert.match(args.message, 'worker farpipe-cmd/0 exited with code 1')

      assert.not.ok(existsSync(marker), `something ran ${what}`)
    }
    assert.not.ok(existsSync(marker))
  })

  c("the caller's environment does not reach SSH workers, only what env gives", async () => {
    process.env.FARPIPE_CALLER_SECRET = 'not for the workers'
    try {
      await withPool({ hosts: [{ host: sshd.alias, env: { FARPIPE_GIVEN: 'yes' } }], cacheDir: tempDir() }, async (p) => {
        assert.is((await p.run(t.readEnv, 'FARPIPE_CALLER_SECRET')).value, undefined)
        assert.is((await p.run(t.readEnv, 'FARPIPE_GIVEN')).value, 'yes')
        // The remote HOME is the host's, not the caller's.
        assert.is((await p.run(t.readEnv, 'HOME')).value, sshd.remoteHome)
      })
    } finally {
      delete process.env.FARPIPE_CALLER_SECRET
    }
  })

  c.run()
}

function cacheSuite(sshd: Sshd): void {
  const c = suite('ssh: the bundle cache on the host')

  c("a host's own cacheDir holds its bundles, not the pool's cacheDir (regression: only the worker went there)", async () => {
    const hostDir = tempDir()
    const poolDir = tempDir()
    await withPool({ hosts: [{ host: sshd.alias, cacheDir: hostDir }], cacheDir: poolDir }, async (p) => assert.is(await p.run(t.add, 2, 3), 5))
    assert.ok(readdirSync(hostDir).some((f) => f.startsWith('worker-')), readdirSync(hostDir).join(', '))
    assert.is(bundlesIn(hostDir).length, 1, readdirSync(hostDir).join(', '))
    assert.equal(readdirSync(poolDir), [])
  })

  c("a cacheDir of ~/x is x in the remote user's home, and no directory named ~ appears (regression: created literally)", async () => {
    const hostRel = `farpipe-tilde-host-${randomBytes(3).toString('hex')}`
    const poolRel = `farpipe-tilde-pool-${randomBytes(3).toString('hex')}`
    await withPool({ hosts: [{ host: sshd.alias, cacheDir: `~/${hostRel}` }] }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    await withPool({ hosts: [sshd.alias], cacheDir: `~/${poolRel}` }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    for (const rel of [hostRel, poolRel]) {
      const dir = path.join(sshd.remoteHome, rel)
      assert.is(bundlesIn(dir).length, 1, `${dir}: ${existsSync(dir) ? readdirSync(dir).join(', ') : 'missing'}`)
      assert.is(statSync(dir).mode & 0o777, 0o700)
      // The caller's HOME is another directory: the remote one is meant.
      assert.not.ok(existsSync(path.join(sshd.home, rel)))
    }
    // Workers start in the remote home (the harness cds there), the caller in its own working directory.
    assert.not.ok(existsSync(path.join(sshd.remoteHome, '~')), 'a directory named ~ in the remote home')
    assert.not.ok(existsSync(path.join(process.cwd(), '~')), 'a directory named ~ in the working directory')
  })

  c('a host already prepared starts its first worker with the probe folded in; a fresh one is prepared first, and both run calls', async () => {
    const dir = tempDir()
    const cmdline = (pid: number | undefined) => readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    const firstWorker = async (p: Awaited<ReturnType<typeof pool>>) => {
      assert.is(await p.run(t.add, 2, 2), 4)
      return p.stats().hosts[0]!.workers.map((w) => (w.pid === undefined ? '' : cmdline(w.pid)))
    }
    // Nothing cached yet: the launcher finds no worker bundle and exits; the host is prepared, then workers start.
    const fresh = await withPool({ hosts: [{ host: sshd.alias, cacheDir: dir }], workers: 2 }, firstWorker)
    assert.ok(fresh.every((c) => !c.includes('farpipe-facts')), 'no worker of a fresh host runs the launcher')
    // Prepared: worker 0 is the launcher become the worker; the others start as usual.
    const again = await withPool({ hosts: [{ host: sshd.alias, cacheDir: dir }], workers: 2 }, firstWorker)
    assert.ok(again[0]!.includes('farpipe-facts'), 'worker 0 was started by the launcher')
    assert.ok(again.slice(1).every((c) => c === '' || !c.includes('farpipe-facts')))
  })

  c('reconnecting to a prepared host after its connection dropped starts no spare worker 0, and close() leaves nothing running', async () => {
    const cacheDir = tempDir()
    const host = { host: sshd.alias, cacheDir }
    // Prepared, so that a probe of the host would be made by a launcher.
    await withPool({ hosts: [host] }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    // Resume off: the workers are to go with the connection here (spec/e2e/resume.spec.ts has the default).
    const p = await pool({ hosts: [host], workers: 2, onLog: () => {}, resumeWindow: 0 })
    try {
      const both = () => Promise.allSettled([p.run(t.pause, 200), p.run(t.pause, 200)])
      const workers = () => p.stats().hosts[0]!.workers
      await both()
      await until(() => workers().every((w) => w.up), 10_000, 'both workers')
      // The connection drops: every worker goes with it, and the pool reconnects.
      for (const pid of sshd.sessionPids()) process.kill(pid, 'SIGKILL')
      await until(() => !p.hosts[0]!.up || workers().some((w) => !w.up), 10_000, 'the drop to be noticed')
      for (let tries = 0; !(p.hosts[0]!.up && workers().every((w) => w.up)); tries++) {
        assert.ok(tries < 150, 'the host did not come back with both workers')
        await both()
        await sleep(200)
      }
      const pids = workers().map((w) => w.pid!).sort()
      await until(() => String(nodesOf(sshd)) === String(pids), 10_000, `the host to run only the workers ${pids} (it runs ${nodesOf(sshd)})`)
    } finally {
      await p.close()
    }
    await until(() => nodesOf(sshd).length === 0, 10_000, 'the workers on the host to exit after close()')
  })

  c('a worker 0 that dies after its facts, before the pool opens it, is reported at once with its exit code and stderr (regression: unnoticed until startTimeout)', async () => {
    const dir = tempDir()
    const pidFile = path.join(dir, 'launcher.pid')
    const dying = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dies-after-facts.cjs')
    // Prepared first, so that the next connect() starts worker 0 with the launcher.
    await withPool({ hosts: [{ host: sshd.alias, cacheDir: dir }] }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    const transport = new SshTransport(await resolveHost({ host: sshd.alias, cacheDir: dir, env: { NODE_OPTIONS: `--require ${dying}`, FARPIPE_DYING_PID: pidFile } }))
    try {
      assert.ok((await transport.connect()) >= 1)
      const pid = Number(await until(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8'), 10_000, 'the launcher to report its facts'))
      await until(() => !running(pid), 10_000, 'the launcher to exit')
      // Its exit status and the close of its channel are on their way; the pool opens worker 0 after them.
      await sleep(300)
      const closed: Error[] = []
      const stderr: string[] = []
      await transport.open(0, { data: () => {}, close: (err) => void closed.push(err!), stderr: (text) => void stderr.push(text) })
      const [err] = await until(() => closed.length > 0 && closed, 10_000, 'the death of worker 0 to be reported')
      assert.instance(err, TransportError)
      assert.match(err!.message, 'worker farpipe-cmd/0 exited with code 7; its stderr ended with: worker 0 dies after its facts')
      assert.match(stderr.join(''), 'worker 0 dies after its facts')
    } finally {
      await transport.close()
    }
  })

  c('a launcher that finds an old node falls back to the long way, which names the version', async () => {
    const dir = tempDir()
    const fake = path.join(dir, 'node')
    writeFileSync(fake, '#!/bin/sh\necho "v16.20.0"\n', { mode: 0o755 })
    const err = await rejection(pool({ hosts: [{ host: sshd.alias, node: fake, cacheDir: dir }] }))
    assert.instance(err, TransportError)
    assert.match(err.message, 'could not run the probe')
  })

  c.run()
}

function keepaliveSuite(sshd: Sshd): void {
  const k = suite('ssh: keepalive')

  k('keepaliveCountMax 0 keeps a healthy connection through many pings (regression: dropped at the first one)', async () => {
    await withPool({ hosts: [{ host: sshd.alias, keepaliveInterval: 300, keepaliveCountMax: 0 }], cacheDir: tempDir() }, async (p) => {
      // Eight items 200 ms apart: the call spans several keepalive ticks.
      assert.equal(await collect(p.run(t.slowItems, 8, 200)), [0, 1, 2, 3, 4, 5, 6, 7])
      assert.is(p.hosts[0]!.up, true)
    })
  })

  k('keepaliveCountMax 0 still notices a peer that went silent', async () => {
    const stopped: number[] = []
    // Resume off: the call would resume on a new connection (the worker lives on behind the stopped sshd).
    const p = await pool({ hosts: [{ host: sshd.alias, keepaliveInterval: 300, keepaliveCountMax: 0 }], workers: 1, cacheDir: tempDir(), resumeWindow: 0 })
    try {
      const call = p.run(t.slowItems, 1000, 20)
      await call[Symbol.asyncIterator]().next()
      for (const pid of sshd.sessionPids()) {
        process.kill(pid, 'SIGSTOP')
        stopped.push(pid)
      }
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.match(err.message, 'did not answer 1 keepalives 300 ms apart')
    } finally {
      for (const pid of stopped) process.kill(pid, 'SIGKILL')
      await p.close()
    }
  })

  k.run()
}

function uploadSuite(sshd: Sshd): void {
  const u = suite("ssh: node: 'upload'")

  /** A bin directory with the tools a bare host has, and no node. */
  function bareBin(tools: string[]): string {
    const bin = tempDir()
    for (const tool of tools) symlinkSync(`/usr/bin/${tool}`, path.join(bin, tool))
    return bin
  }
  const BASIC = ['mkdir', 'chmod', 'uname', 'ls', 'cat', 'mv', 'env', 'sh']
  const ownHash = createHash('sha256').update(readFileSync(process.execPath)).digest('hex')
  const hashOf = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex')

  u('a cached node binary changed in place, at the same size, is not run: it is uploaded again (regression: trusted by its size)', async () => {
    const bare = await startSshd({ alias: 'farpipe-cmd-bare', home: sshd.home, env: { PATH: bareBin([...BASIC, 'sha256sum']) } })
    try {
      const cacheDir = tempDir()
      await withPool({ hosts: [{ host: bare.alias, node: 'upload' }], cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
      const [shipped] = readdirSync(cacheDir).filter((f) => f.startsWith('node-'))
      assert.ok(shipped, 'node was uploaded')
      const binary = path.join(cacheDir, shipped!)
      // Overwrite its start with a script that would leave a marker if run (with shell builtins only: the host has no touch); the size stays the same.
      const marker = path.join(tempDir(), 'ran-the-swapped-node')
      const fd = openSync(binary, 'r+')
      writeSync(fd, Buffer.from(`#!/bin/sh\necho ran > '${marker}'\nexit 0\n`), 0, undefined, 0)
      closeSync(fd)
      assert.is(statSync(binary).size, statSync(process.execPath).size)
      assert.is.not(hashOf(binary), ownHash)

      const second = await withPool({ hosts: [{ host: bare.alias, node: 'upload' }], cacheDir }, (p) => p.run(t.add, 2, 2)).catch((err: Error) => err)
      assert.not.ok(existsSync(marker), 'the swapped binary was run')
      assert.is(second, 4)
      assert.is(hashOf(binary), ownHash, 'the binary was uploaded again')
    } finally {
      await bare.stop()
    }
  })

  u('a host without a SHA-256 tool gets node uploaded again rather than a copy it cannot check', async () => {
    const bare = await startSshd({ alias: 'farpipe-cmd-nohash', home: sshd.home, env: { PATH: bareBin(BASIC) } })
    try {
      const cacheDir = tempDir()
      await withPool({ hosts: [{ host: bare.alias, node: 'upload' }], cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
      const [shipped] = readdirSync(cacheDir).filter((f) => f.startsWith('node-'))
      const binary = path.join(cacheDir, shipped!)
      const ino = statSync(binary).ino
      await withPool({ hosts: [{ host: bare.alias, node: 'upload' }], cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
      assert.is.not(statSync(binary).ino, ino, 'not uploaded again')
      assert.is(hashOf(binary), ownHash)
    } finally {
      await bare.stop()
    }
  })

  u.run()
}
