// Command hosts: workers reached through a command that opens a stdio
// channel (`kubectl exec -i pod --`, `docker exec -i ctr`, `ssh host`). The
// core suites run through the system's ssh client against the spec sshd and
// through a local `sh -c 'exec "$@"'`; then what only command hosts have:
// bad commands, a dropped channel, a stuck worker killed over a new channel,
// the node upload, and hostile strings through both ways of appending the
// worker's command line (separate words, or one word for a remote shell).
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { CommandTransport, pool, TimeoutError, TransportError, type CommandHost, type Pool, type PoolOptions } from 'farpipe'
import * as t from '../fixtures/tasks.ts'
import * as trust from '../fixtures/trust.ts'
import { collect, freePort, markerPath, readMarker, rejection, running, sleep, tempDir, thrown, until, workerChildren } from '../helpers.ts'
import { coreSuites } from './core.ts'
import { findSshd, startSshd, type Sshd } from './sshd.ts'

/** Runs its arguments here: the appended words become "$@". */
const LOCAL_SH: CommandHost = { name: 'local-sh', command: ['sh', '-c', 'exec "$@"', 'sh'] }
/** Runs its one appended word as a shell line, as ssh's remote shell does. */
const LOCAL_EVAL: CommandHost = { name: 'local-eval', command: ['sh', '-c', 'eval "$1"', 'sh'], remoteShell: true }

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

/** A preload that makes the launcher exit with code 7 right after its facts line. */
const dyingLauncher = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dies-after-facts.cjs')
/** Runs a command and cuts its stdout after CUT_BYTES bytes, its stdin left open. */
const cutStdout = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'cut-stdout.mjs')

/** Files in `dir` named like a bundle (`<sha256>.mjs`) or the worker. */
const cached = (dir: string) => readdirSync(dir).filter((f) => /^([0-9a-f]{64}|worker-[0-9a-f]{64})\.mjs$/.test(f))

/** Runs `fn` on a one-worker pool of `host`, closing it after. */
async function withPool<T>(host: CommandHost, options: PoolOptions, fn: (p: Pool) => T | PromiseLike<T>): Promise<T> {
  const p = await pool({ hosts: [host], workers: 1, ...options })
  try {
    return await fn(p)
  } finally {
    await p.close()
  }
}

// The sshd starts before any suite is registered (uvu runs what is registered once the module has loaded).
const sshd = findSshd() ? await startSshd({ alias: 'farpipe-via-ssh' }) : undefined
if (sshd) {
  // The ssh client reads its keys and known_hosts from HOME: the harness's temporary one.
  process.env.HOME = sshd.home
  delete process.env.SSH_AUTH_SOCK
  process.on('exit', () => void sshd.stop())
}

const viaSsh = (s: Sshd, alias = s.alias): CommandHost => ({ name: 'via-ssh', command: ['ssh', '-F', `${s.home}/.ssh/config`, '-o', 'BatchMode=yes', alias] })

validation()
if (sshd) {
  coreSuites({ name: 'command host via ssh', host: 'via-ssh', open: (o = {}) => pool({ hosts: [viaSsh(sshd)], ...o }) })
  sshSuite(sshd)
} else {
  console.log('sshd not installed: skipping the command host specs through ssh')
}
coreSuites({ name: 'command host via sh', host: 'local-sh', open: (o = {}) => pool({ hosts: [LOCAL_SH], ...o }) })
failures()
quoting(sshd)

function validation(): void {
  const v = suite('command hosts: options')

  v('a bad command host is refused before anything runs, with a TypeError naming the host', async () => {
    const cases: [unknown, string][] = [
      [{ name: '', command: ['ssh', 'x'] }, 'the command host ["ssh","x"]: option name must be a non-empty string, got ""'],
      [{ command: ['ssh', 'x'] }, 'option name must be a non-empty string, got undefined'],
      [{ name: 'pod-1', command: [] }, 'host "pod-1": option command must be a non-empty array of strings'],
      [{ name: 'pod-1', command: 'kubectl exec -i pod-1 --' }, 'host "pod-1": option command must be a non-empty array of strings without NUL characters, got "kubectl exec -i pod-1 --"'],
      [{ name: 'pod-1', command: ['kubectl', 1] }, 'host "pod-1": option command must be a non-empty array of strings'],
      [{ name: 'pod-1', command: ['', 'x'] }, 'host "pod-1": option command must be an array whose first word, the program, is not empty'],
      [{ name: 'pod-1', command: ['sh'], host: 'gpu-1' }, 'host "pod-1": give either host (an SSH destination) or command, not both'],
      [{ name: 'pod-1', command: ['sh'], user: 'root' }, 'host "pod-1": unknown option "user"'],
      [{ name: 'pod-1', command: ['sh'], workers: 0 }, 'host "pod-1": option workers must be an integer >= 1, got 0'],
      [{ name: 'pod-1', command: ['sh'], env: { 'A-B': 'x' } }, 'host "pod-1": option env has a bad variable name "A-B"'],
      [{ name: 'pod-1', command: ['sh'], cacheDir: 'a\\b' }, 'host "pod-1": cacheDir "a\\\\b" contains a backslash'],
      [{ name: 'pod-1', command: ['sh'], remoteShell: 'yes' }, 'host "pod-1": option remoteShell must be a boolean'],
    ]
    for (const [host, message] of cases) {
      const err = await rejection(pool({ hosts: [host as CommandHost] }))
      assert.instance(err, TypeError, JSON.stringify(host))
      assert.match(err.message, message)
    }
    // The transport itself checks the same, for transport authors.
    assert.match(thrown(() => new CommandTransport({ name: 'pod-1', command: [] })).message, 'option command must be a non-empty array')
  })

  v('names are unique across command hosts and SSH hosts', async () => {
    const twice = await rejection(pool({ hosts: [LOCAL_SH, { ...LOCAL_SH }] }))
    assert.instance(twice, TypeError)
    assert.match(twice.message, 'host local-sh is given twice')
    const mixed = await rejection(pool({ hosts: ['gpu-1.invalid', { name: 'gpu-1.invalid', command: ['sh'] }] }))
    assert.instance(mixed, TypeError)
    assert.match(mixed.message, 'host gpu-1.invalid is given twice')
  })

  v.run()
}

function sshSuite(sshd: Sshd): void {
  const s = suite('command host via ssh')

  s('a second pool uploads nothing: the worker and the bundles are found in the cache', async () => {
    const cacheDir = tempDir()
    await withPool(viaSsh(sshd), { cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    const files = cached(cacheDir)
    assert.ok(files.some((f) => f.startsWith('worker-')), files.join(', '))
    assert.is(files.length, 2, files.join(', '))
    const inodes = new Map(files.map((f) => [f, statSync(path.join(cacheDir, f)).ino]))
    await withPool(viaSsh(sshd), { cacheDir, workers: 2 }, async (p) => assert.is(await p.run(t.add, 2, 2), 4))
    assert.equal(cached(cacheDir).sort(), files.sort())
    for (const [f, ino] of inodes) assert.is(statSync(path.join(cacheDir, f)).ino, ino, `${f} was written again`)
  })

  s('the workers run on the host with its own environment, as many as its cores by default', async () => {
    const p = await pool({ hosts: [viaSsh(sshd)], cacheDir: tempDir() })
    try {
      const here = await p.run(t.whereAmI)
      assert.is(here.host, 'via-ssh')
      assert.is(p.size, here.workers)
      // The remote HOME is the sshd's, not this process's.
      assert.is((await p.run(t.readEnv, 'HOME')).value, sshd.remoteHome)
    } finally {
      await p.close()
    }
  })

  s('a worker killed mid-stream fails the call with TransportError naming the host, and the next call works', async () => {
    await withPool(viaSsh(sshd), { cacheDir: tempDir() }, async (p) => {
      const { pid } = await p.run(t.whereAmI)
      const call = p.run(t.slowItems, 1000, 20)
      const it = call[Symbol.asyncIterator]()
      await it.next()
      process.kill(pid, 'SIGKILL')
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.is(err.host, 'via-ssh')
      assert.match(err.message, 'worker via-ssh/0')
      assert.is(await p.run(t.add, 1, 2), 3)
      assert.is.not((await p.run(t.whereAmI)).pid, pid)
    })
  })

  s("with resumeWindow: 0, a dropped connection fails the call with TransportError quoting ssh's last words, and the next call reconnects", async () => {
    // ssh's farewell on stderr would be printed as the worker's log. (With a window, the call resumes: spec/e2e/resume.spec.ts.)
    await withPool(viaSsh(sshd), { cacheDir: tempDir(), onLog: () => {}, resumeWindow: 0 }, async (p) => {
      const call = p.run(t.slowItems, 1000, 20)
      await call[Symbol.asyncIterator]().next()
      const pids = sshd.sessionPids()
      assert.ok(pids.length > 0, 'a session process serves the pool')
      for (const pid of pids) process.kill(pid, 'SIGKILL')
      const err = await rejection(call.result)
      assert.instance(err, TransportError)
      assert.is(err.host, 'via-ssh')
      assert.is(err.reason, 'lost')
      assert.match(err.message, /worker via-ssh\/0 exited with code 255; its stderr ended with: .*closed/)
      assert.is(await p.run(t.add, 1, 2), 3)
    })
  })

  s('a stuck worker is killed on the host through a new channel when its call is cancelled', async () => {
    let pid = 0
    try {
      await withPool(viaSsh(sshd), { cacheDir: tempDir(), defaults: { cancelGrace: 300 }, onLog: () => {} }, async (p) => {
        pid = (await p.run(t.whereAmI)).pid
        const call = p.with({ idleTimeout: 300 }).run(t.slowItems, 1000, 5)
        await call[Symbol.asyncIterator]().next()
        // Stopped, it reads nothing: ending or dropping its channel cannot end it, only a kill can.
        process.kill(pid, 'SIGSTOP')
        assert.instance(await rejection(call.result), TimeoutError)
        await call.cancel()
        await until(() => !running(pid), 10_000, `the stopped worker ${pid} to be killed`)
        assert.is.not((await p.run(t.whereAmI)).pid, pid)
      })
    } finally {
      if (pid && running(pid)) process.kill(pid, 'SIGKILL')
    }
  })

  s('a refused connection fails pool() with reason refused and what ssh printed', async () => {
    const port = await freePort()
    const host = viaSsh(sshd)
    // ssh takes -p over the config's Port.
    const err = await rejection(pool({ hosts: [{ ...host, command: [...host.command.slice(0, -1), '-p', String(port), sshd.alias] }], workers: 1 }))
    assert.instance(err, TransportError)
    assert.is(err.host, 'via-ssh')
    assert.is(err.reason, 'refused')
    assert.match(err.message, 'cannot reach via-ssh through `ssh -F')
    assert.match(err.message, `ssh: connect to host 127.0.0.1 port ${port}: Connection refused`)
  })

  s("node: 'upload' ships this machine's node through the command to a host that has none, once", async () => {
    // A host whose PATH has the basic tools but no node.
    const bin = tempDir()
    for (const tool of ['mkdir', 'chmod', 'uname', 'ls', 'cat', 'mv', 'env', 'sh', 'sha256sum']) {
      const found = ['/usr/bin', '/bin'].map((d) => path.join(d, tool)).find((f) => existsSync(f))
      if (found) symlinkSync(found, path.join(bin, tool))
    }
    const bare = await startSshd({ alias: 'farpipe-via-ssh-bare', home: sshd.home, env: { PATH: bin } })
    try {
      const host = viaSsh(bare)
      const missing = await rejection(pool({ hosts: [host], workers: 1, cacheDir: tempDir() }))
      assert.instance(missing, TransportError)
      assert.is(missing.reason, 'node')
      assert.match(missing.message, "node: 'upload'")
      const cacheDir = tempDir()
      const { execPath } = await withPool({ ...host, node: 'upload' }, { cacheDir }, (p) => p.run(t.readEnv, 'PATH'))
      assert.ok(execPath.startsWith(cacheDir), `workers run ${execPath}`)
      const shipped = readdirSync(cacheDir).filter((f) => f.startsWith('node-'))
      assert.is(shipped.length, 1)
      const ino = statSync(path.join(cacheDir, shipped[0]!)).ino
      await withPool({ ...host, node: 'upload' }, { cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
      assert.is(statSync(path.join(cacheDir, shipped[0]!)).ino, ino, 'uploaded again')
    } finally {
      await bare.stop()
    }
  })

  s.run()
}

function failures(): void {
  const fold = suite('command hosts: cold start')

  fold('a prepared host starts its first worker with the probe folded in (one command fewer); a fresh one is prepared first', async () => {
    for (const host of [LOCAL_SH, LOCAL_EVAL]) {
      const dir = tempDir()
      const cmdlines = async (p: Pool) => {
        assert.is(await p.run(t.add, 1, 2), 3)
        return p.stats().hosts[0]!.workers.map((w) => (w.pid === undefined ? '' : readFileSync(`/proc/${w.pid}/cmdline`, 'utf8')))
      }
      const fresh = await withPool(host, { cacheDir: dir, workers: 2 }, cmdlines)
      assert.ok(fresh.every((c) => !c.includes('farpipe-facts')), `${host.name}: a fresh host is prepared the long way`)
      const again = await withPool(host, { cacheDir: dir, workers: 2 }, cmdlines)
      assert.ok(again[0]!.includes('farpipe-facts'), `${host.name}: worker 0 was started by the launcher`)
    }
  })

  fold('opening and closing pools leaves no exit listener and no command process behind (regression: one leaked per pool)', async () => {
    const cacheDir = tempDir()
    // The first pool prepares the cache; the next ones start worker 0 with the launcher, which leaked.
    await withPool(LOCAL_SH, { cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    const warnings: Error[] = []
    const onWarning = (w: Error) => void warnings.push(w)
    process.on('warning', onWarning)
    const before = process.listenerCount('exit')
    const children = new Set(workerChildren().map((c) => c.pid))
    try {
      for (let i = 0; i < 12; i++) await withPool(LOCAL_SH, { cacheDir }, async (p) => assert.is(await p.run(t.add, i, 1), i + 1))
      // A warning is emitted on the next tick.
      await new Promise((r) => setImmediate(r))
      assert.is(process.listenerCount('exit'), before)
      assert.equal(warnings.map((w) => w.message), [])
      assert.equal(workerChildren().filter((c) => !children.has(c.pid)), [])
    } finally {
      process.off('warning', onWarning)
    }
  })

  fold('probing a host again while its worker 0 runs starts no spare worker 0, and close() leaves nothing running', async () => {
    const cacheDir = tempDir()
    const node = path.join(tempDir(), 'node')
    symlinkSync(process.execPath, node)
    const host = { ...LOCAL_SH, node }
    // Prepared, so that every probe of the host is made by a launcher.
    await withPool(host, { cacheDir }, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    const before = new Set(workerChildren().map((c) => c.pid))
    const ours = () => workerChildren().filter((c) => !before.has(c.pid) && c.state !== 'Z').map((c) => c.pid).sort()
    const p = await pool({ hosts: [host], cacheDir, workers: 2, onLog: () => {} })
    try {
      const both = () => Promise.allSettled([p.run(t.pause, 200), p.run(t.pause, 200)])
      const workers = () => p.stats().hosts[0]!.workers
      await both()
      const [first, second] = await until(() => workers().every((w) => w.up) && workers().map((w) => w.pid!), 10_000, 'both workers')
      // Worker 1 dies, and its restart cannot find node: its command ends before it says anything, the host is down.
      rmSync(node)
      process.kill(second!, 'SIGKILL')
      await until(() => !running(second!), 10_000, 'worker 1 to die')
      // Calls on both workers start worker 1 again, which fails.
      for (let tries = 0; p.hosts[0]!.up; tries++) {
        assert.ok(tries < 50, 'the host did not go down')
        await both()
      }
      // node is back: the pool probes the host again while worker 0 still runs, and calls start worker 1 again.
      symlinkSync(process.execPath, node)
      for (let tries = 0; !(p.hosts[0]!.up && workers().every((w) => w.up)); tries++) {
        assert.ok(tries < 150, 'the host did not come back with both workers')
        await both()
        await sleep(200)
      }
      const pids = workers().map((w) => w.pid!)
      assert.is(pids[0], first, 'worker 0 kept running')
      assert.equal(ours(), [...pids].sort(), 'every process the host runs is a worker of the pool')
    } finally {
      await p.close()
    }
    assert.equal(ours(), [], 'close() left processes running')
  })

  fold('a worker 0 that dies after its facts, before the pool opens it, is reported at once with its exit code and stderr (regression: unnoticed until startTimeout)', async () => {
    const cacheDir = tempDir()
    const host = { ...LOCAL_SH, cacheDir, env: { NODE_OPTIONS: `--require ${dyingLauncher}` } }
    // Prepared first, so that the next connect() starts worker 0 with the launcher.
    await withPool(host, {}, async (p) => assert.is(await p.run(t.add, 1, 1), 2))
    const transport = new CommandTransport(host)
    try {
      const before = process.listenerCount('exit')
      assert.ok((await transport.connect()) >= 1)
      // The launcher reported its facts and died: once its command is closed, the transport has let go of it.
      await until(() => process.listenerCount('exit') === before, 10_000, 'the launcher to exit')
      const closed: Error[] = []
      const stderr: string[] = []
      await transport.open(0, { data: () => {}, close: (err) => void closed.push(err!), stderr: (text) => void stderr.push(text) })
      const [err] = await until(() => closed.length > 0 && closed, 10_000, 'the death of worker 0 to be reported')
      assert.instance(err, TransportError)
      // It said nothing on its channel: the host counts as down until it is probed again.
      assert.match(err!.message, 'worker local-sh/0 exited with code 7 before it said anything; its stderr ended with: worker 0 dies after its facts')
      assert.match(stderr.join(''), 'worker 0 dies after its facts')
    } finally {
      await transport.close()
    }
  })

  fold.run()

  const f = suite('command hosts: failures')

  f('a command that fails before reaching a shell fails pool() with a TransportError naming the host and what it printed', async () => {
    const quiet = await rejection(pool({ hosts: [{ name: 'pod-false', command: ['false'] }] }))
    assert.instance(quiet, TransportError)
    assert.is(quiet.host, 'pod-false')
    assert.is(quiet.reason, 'closed')
    assert.match(quiet.message, 'cannot reach pod-false through `false`: the command exited with code 1 before a shell ran there; it printed nothing on stderr')

    const talking = await rejection(pool({ hosts: [{ name: 'pod-9', command: ['sh', '-c', 'echo \'Error from server (NotFound): pods "pod-9" not found\' >&2; exit 1', 'sh'] }] }))
    assert.instance(talking, TransportError)
    assert.is(talking.host, 'pod-9')
    assert.match(talking.message, 'it printed: Error from server (NotFound): pods "pod-9" not found')

    const missing = await rejection(pool({ hosts: [{ name: 'pod-x', command: ['farpipe-no-such-program', 'exec', '-i'] }] }))
    assert.instance(missing, TransportError)
    assert.is(missing.host, 'pod-x')
    assert.match(missing.message, 'cannot reach pod-x through `farpipe-no-such-program exec -i`: spawn farpipe-no-such-program ENOENT')
    assert.match(missing.message, 'no program "farpipe-no-such-program" on this machine\'s PATH')
  })

  f('a host without node, a login script that prints to stdout and a command that never answers are distinct, clear errors', async () => {
    const node = await rejection(pool({ hosts: [{ ...LOCAL_SH, node: '/nonexistent/node' }] }))
    assert.instance(node, TransportError)
    assert.is(node.reason, 'node')
    assert.match(node.message, 'node was not found on local-sh')

    const chatty = await rejection(pool({ hosts: [{ name: 'chatty', command: ['sh', '-c', 'echo Welcome to the pod; exec "$@"', 'sh'] }] }))
    assert.instance(chatty, TransportError)
    assert.match(chatty.message, 'something on chatty printed to stdout before farpipe\'s command ran (a login script?): "Welcome to the pod\\n"')

    const hung = await rejection(pool({ hosts: [{ name: 'hung', command: ['sh', '-c', 'exec sleep 60', 'sh'], connectTimeout: 300 }] }))
    assert.instance(hung, TransportError)
    assert.is(hung.reason, 'timeout')
    assert.match(hung.message, "cannot reach hung through `sh -c 'exec sleep 60' sh`: no answer from the remote shell within 300 ms (connectTimeout)")
  })

  f('a pool with a command host that fails stays usable on the others, and reports it down', async () => {
    const p = await pool({ hosts: [LOCAL_SH, { name: 'pod-false', command: ['false'] }], workers: 1, cacheDir: tempDir(), onLog: () => {} })
    try {
      const [good, bad] = p.hosts
      assert.is(good!.up, true)
      assert.is(bad!.up, false)
      assert.is((bad!.error as TransportError).host, 'pod-false')
      assert.equal(await Promise.all([1, 2, 3].map((i) => p.run(t.add, i, i))), [2, 4, 6])
    } finally {
      await p.close()
    }
  })

  f('regression: a worker whose way back is cut (EPIPE) while its input stays open still runs its calls\' finally blocks before it exits', async () => {
    // The command passes on the worker's first 3 MB, then closes the pipe the worker writes frames to.
    const cut: CommandHost = { name: 'cut', command: ['env', 'CUT_BYTES=3000000', process.execPath, cutStdout] }
    const marker = markerPath()
    const p = await pool({ hosts: [cut], workers: 1, cacheDir: tempDir(), onLog: () => {} })
    try {
      const err = await rejection(collect(p.run(trust.endlessWithCleanup, marker)))
      assert.instance(err, TransportError)
      // Before: the worker exited at its first failed write, and the generator's finally never ran.
      assert.is(await readMarker(marker), 'finally ran')
    } finally {
      await p.close()
    }
  })

  f('remoteShell: true appends one word for a remote shell to parse, for commands other than ssh', async () => {
    await withPool(LOCAL_EVAL, { cacheDir: tempDir() }, async (p) => {
      assert.equal(await collect(p.run(t.countAsync, 3)), [0, 1, 2])
      assert.is((await p.run(t.whereAmI)).host, 'local-eval')
    })
  })

  f.run()
}

function quoting(sshd: Sshd | undefined): void {
  const q = suite('command hosts: quoting')
  const targets: CommandHost[] = [LOCAL_SH, LOCAL_EVAL, ...(sshd ? [viaSsh(sshd)] : [])]

  for (const target of targets) {
    q(`hostile strings in env, cacheDir and the node path reach the host as data through ${target.name}`, async () => {
      const marker = path.join(tempDir(), `pwned-${randomBytes(4).toString('hex')}`)
      const bad = hostile(marker)
      // env values: passed as data, read back exactly.
      const env = Object.fromEntries(bad.map((v, i) => [`FARPIPE_HOSTILE_${i}`, v]))
      await withPool({ ...target, env }, { cacheDir: tempDir() }, async (p) => {
        for (const [name, value] of Object.entries(env)) assert.is((await p.run(t.readEnv, name)).value, value, name)
      })
      // cacheDir and node: a directory of that name holds the worker and the bundles, and node runs from one.
      for (const value of bad.filter((v) => !v.includes('\\'))) {
        const cacheDir = path.join(tempDir(), value)
        const dir = path.join(tempDir(), value)
        mkdirSync(dir, { recursive: true })
        const node = path.join(dir, 'node')
        symlinkSync(process.execPath, node)
        await withPool({ ...target, node, cacheDir }, {}, async (p) => assert.is(await p.run(t.add, 1, 2), 3, JSON.stringify(value)))
        assert.is(cached(cacheDir).length, 2, `cacheDir ${JSON.stringify(value)} holds the worker and the bundle`)
      }
      assert.not.ok(existsSync(marker), 'a shell ran something it was given as data')
    })

    q(`a node path with = in it runs workers with env set through ${target.name} (regression: env took it for an assignment)`, async () => {
      const dir = path.join(tempDir(), 'node=20', 'bin')
      mkdirSync(dir, { recursive: true })
      const node = path.join(dir, 'node')
      symlinkSync(process.execPath, node)
      const cacheDir = tempDir()
      // Twice: the long way, then worker 0 through the launcher.
      for (let round = 0; round < 2; round++) {
        await withPool({ ...target, node, env: { FARPIPE_A: 'a=b' } }, { cacheDir }, async (p) => {
          const { value, argv0 } = await p.run(t.readEnv, 'FARPIPE_A')
          assert.equal({ value, argv0 }, { value: 'a=b', argv0: node })
        })
      }
    })
  }

  q.run()
}
