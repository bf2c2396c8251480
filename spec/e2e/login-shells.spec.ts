// Every remote command farpipe sends over SSH is run by the remote user's
// login shell (`$SHELL -c command`), and so is what a command host through
// `ssh` appends. That shell may be csh, tcsh or fish, which read quotes,
// backslashes, line breaks and redirections differently from sh. Here each
// login shell installed runs the whole life of a host: the long way (probe,
// upload of the worker bundle, workers), the launcher (probe and worker 0 in
// one command), node shipped with `node: 'upload'`, the kill of a stuck
// worker, environment values full of what those shells treat specially, and
// a command host through the system's ssh. A shell that is not installed is
// skipped, saying so.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pool, TimeoutError, type CommandHost, type HostOptions, type Pool, type PoolOptions } from 'farpipe'
import * as t from '../fixtures/tasks.ts'
import { collect, rejection, running, tempDir, until } from '../helpers.ts'
import { noSshd, useClientHome, startSshd, type Sshd } from './sshd.ts'

const SHELLS = ['sh', 'bash', 'dash', 'csh', 'tcsh', 'fish']

/** The absolute path of `name` on PATH, or undefined. */
function which(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v "$1"', 'sh', name], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

/** A bin directory with the tools a bare host has, and no node. */
function bareBin(): string {
  const bin = tempDir()
  for (const tool of ['sh', 'mkdir', 'chmod', 'uname', 'ls', 'cat', 'mv', 'env', 'sha256sum', 'kill']) {
    const found = ['/usr/bin', '/bin'].map((d) => path.join(d, tool)).find((f) => existsSync(f))
    if (found) symlinkSync(found, path.join(bin, tool))
  }
  return bin
}

/** Values each of the shells would do something with, were they not quoted for it. */
const SPECIAL = {
  FARPIPE_QUOTES: `it's "quoted" \`here\``,
  FARPIPE_BACKSLASHES: 'a\\b\\\\c\\\'d\\',
  FARPIPE_BANG: '!! !$ !-1 history',
  FARPIPE_LINES: 'one\ntwo\n',
  FARPIPE_DOLLARS: '$HOME ${HOME} $(echo no) %1 ~ * ? [a] {b,c} (x) ; & | < >',
  FARPIPE_EQUALS: 'a=b=c',
}

async function withPool<T>(options: PoolOptions, fn: (p: Pool) => T | PromiseLike<T>): Promise<T> {
  const p = await pool({ workers: 1, ...options })
  try {
    return await fn(p)
  } finally {
    await p.close()
  }
}

if (!noSshd('login shells')) {
  const home = tempDir('farpipe-ssh-home-')
  useClientHome(home)
  const missing = SHELLS.filter((name) => !which(name))
  if (missing.length > 0) console.log(`not installed, skipped: ${missing.join(', ')} (apt-get install -y tcsh csh fish)`)
  for (const name of SHELLS) {
    const shell = which(name)
    const s = suite(`login shell ${name}`)
    if (!shell) {
      s.skip(`a host whose login shell is ${name} (${name} is not installed)`, () => {})
      s.run()
      continue
    }
    let sshd: Sshd
    s.before(async () => {
      sshd = await startSshd({ alias: `farpipe-${name}`, home, shell, env: { PATH: bareBin() } })
    })
    s.after(async () => {
      await sshd?.stop()
    })
    const host = (more: Partial<HostOptions> = {}): HostOptions => ({ host: sshd.alias, node: process.execPath, ...more })

    s(`commands run under ${name}: it is the login shell`, async () => {
      const r = await sshd.ssh(['echo', '$SHELL'])
      assert.is(r.stdout.toString().trim(), shell)
    })

    s(`a fresh host is prepared and runs calls, then its next pool starts worker 0 with the launcher, under ${name}`, async () => {
      const cacheDir = tempDir()
      for (let round = 0; round < 2; round++) {
        await withPool({ hosts: [host()], cacheDir, workers: 2 }, async (p) => {
          assert.is(await p.run(t.add, round, 2), round + 2)
          assert.equal(await collect(p.run(t.countAsync, 3)), [0, 1, 2])
          assert.is((await p.run(t.readEnv, 'SHELL')).value, shell)
        })
      }
      assert.is(readdirSync(cacheDir).filter((f) => f.startsWith('worker-')).length, 1)
    })

    s(`environment values and a node path with quotes, backslashes, ! and line breaks reach the worker as data under ${name}`, async () => {
      const dir = path.join(tempDir(), `it's a "node" \\ dir = ! $x\nline`)
      mkdirSync(dir, { recursive: true })
      const node = path.join(dir, 'node')
      symlinkSync(process.execPath, node)
      const cacheDir = path.join(tempDir(), `cache 'dir' "q" ! $y\nz`)
      await withPool({ hosts: [host({ node, env: SPECIAL })], cacheDir }, async (p) => {
        for (const [k, v] of Object.entries(SPECIAL)) assert.is((await p.run(t.readEnv, k)).value, v, k)
        assert.is((await p.run(t.readEnv, 'PATH')).argv0, node)
      })
    })

    s(`node: 'upload' ships node to a host without one under ${name}`, async () => {
      const cacheDir = tempDir()
      const { execPath } = await withPool({ hosts: [host({ node: 'upload' })], cacheDir }, (p) => p.run(t.readEnv, 'PATH'))
      assert.ok(execPath.startsWith(cacheDir), `workers run ${execPath}`)
    })

    s(`a stuck worker is killed on the host when its call is cancelled under ${name}`, async () => {
      let pid = 0
      try {
        await withPool({ hosts: [host()], cacheDir: tempDir(), defaults: { cancelGrace: 300 }, onLog: () => {} }, async (p) => {
          pid = (await p.run(t.whereAmI)).pid
          const call = p.with({ idleTimeout: 300 }).run(t.slowItems, 1000, 5)
          await call[Symbol.asyncIterator]().next()
          // Stopped, it reads nothing: only a kill run on the host ends it.
          process.kill(pid, 'SIGSTOP')
          assert.instance(await rejection(call.result), TimeoutError)
          await call.cancel()
          await until(() => !running(pid), 10_000, `the stopped worker ${pid} to be killed`)
        })
      } finally {
        if (pid && running(pid)) process.kill(pid, 'SIGKILL')
      }
    })

    s(`a command host through ssh runs calls under ${name}`, async () => {
      const viaSsh: CommandHost = { name: `via-ssh-${name}`, command: ['ssh', '-F', `${home}/.ssh/config`, '-o', 'BatchMode=yes', sshd.alias], node: process.execPath, env: SPECIAL }
      const cacheDir = tempDir()
      for (let round = 0; round < 2; round++) {
        await withPool({ hosts: [viaSsh], cacheDir, workers: 2 }, async (p) => {
          assert.is(await p.run(t.add, round, 3), round + 3)
          for (const [k, v] of Object.entries(SPECIAL)) assert.is((await p.run(t.readEnv, k)).value, v, k)
        })
      }
    })

    s.run()
  }
}
