// The test sshd harness against the OpenSSH client: logins, the remote HOME,
// two sshds sharing a client HOME, session processes, stop(), the agent.
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, renameSync } from 'node:fs'
import { createConnection } from 'node:net'
import { promisify } from 'node:util'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { running, until } from '../helpers.ts'
import { findSshd, startAgent, startSshd, type Sshd } from './sshd.ts'

const run = promisify(execFile)
const harness = suite('sshd harness')

const installed = findSshd() !== undefined
if (!installed) console.log('sshd not installed: skipping SSH specs')
/** Registers a case, or counts it as skipped (uvu's test.skip) when there is no sshd. */
const it = installed ? harness : harness.skip


/** `pid`'s children, from /proc. */
function children(pid: number): { pid: number; comm: string }[] {
  try {
    const pids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
    return pids.map((child) => ({ pid: child, comm: readFileSync(`/proc/${child}/comm`, 'utf8').trim() }))
  } catch {
    return [] // pid or a child exited meanwhile
  }
}

/** Resolves whether something accepts connections on 127.0.0.1:`port`. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

let sshd: Sshd
if (installed) {
  harness.before(async () => {
    sshd = await startSshd()
  })
  harness.after(async () => {
    await sshd?.stop()
  })
}

it('logs in with the OpenSSH client and runs a command', async () => {
  const r = await sshd.ssh(['echo', 'ok'])
  assert.is(r.stderr, '')
  assert.is(r.code, 0)
  assert.is(r.stdout.toString(), 'ok\n')
  assert.match(sshd.log(), `Accepted publickey for ${sshd.user}`)
  const { stdout } = await run('ssh-keygen', ['-lf', `${sshd.dir}/host_key.pub`])
  assert.is(stdout.split(' ')[1], sshd.hostKeyFingerprint)
})

it('gives sessions the remote HOME, as HOME, working directory, ~/.bashrc and ~/.cache', async () => {
  const r = await sshd.ssh([
    'echo $HOME; pwd; echo "echo from-remote-bashrc" > ~/.bashrc; mkdir -p ~/.cache/x; ls -d "$HOME"/.cache/x',
  ])
  assert.is(r.code, 0, r.stderr)
  const home = sshd.remoteHome
  try {
    assert.is(r.stdout.toString(), `${home}\n${home}\n${home}/.cache/x\n`)
    // The next session's bash sources the .bashrc written above, from the remote HOME, once.
    const again = await sshd.ssh(['true'])
    assert.is(again.stdout.toString(), 'from-remote-bashrc\n')
  } finally {
    await sshd.ssh(['rm -f ~/.bashrc'])
  }
})

it('passes stdin, the exit code and the command line through', async () => {
  const r = await sshd.ssh(['cat; printf "%s|" "a b" \'c  d\'; exit 3'], { input: 'in\n' })
  assert.is(r.code, 3)
  assert.is(r.stdout.toString(), 'in\na b|c  d|')
})

it('a second sshd sharing the client HOME works with both aliases, and as a ProxyJump', async () => {
  const second = await startSshd({ home: sshd.home, alias: 'farpipe-second', hostKeyType: 'ecdsa' })
  try {
    assert.is.not(second.port, sshd.port)
    assert.is(second.clientKey, sshd.clientKey)
    assert.is((await sshd.ssh(['echo', 'one'])).stdout.toString(), 'one\n')
    assert.is((await second.ssh(['echo', 'two'])).stdout.toString(), 'two\n')
    // The jump logs into the first sshd (which VERBOSE shows) to forward to the second.
    const logins = () => sshd.log().split('Accepted publickey').length
    const before = logins()
    const jump = await second.ssh(['-J', sshd.alias, 'echo', 'jumped'])
    assert.is(jump.stdout.toString(), 'jumped\n', jump.stderr)
    assert.is(logins(), before + 1)
  } finally {
    await second.stop()
  }
})

it('lists the session process while a command runs; killing it ends the client', async () => {
  assert.equal(sshd.sessionPids(), [])
  const started = Date.now()
  const client = sshd.ssh(['sleep', '5'])
  const [pid] = await until(() => {
    const pids = sshd.sessionPids()
    return pids.length === 1 && pids
  }, 5000, 'a session process')
  process.kill(pid!, 'SIGKILL')
  const r = await client
  assert.is(r.code, 255)
  assert.ok(Date.now() - started < 4000, `the client ended ${Date.now() - started} ms after it started`)
  await until(() => sshd.sessionPids().length === 0, 10_000, 'no session process')
})

it('stop() closes the port, kills what sessions run, and can be called twice', async () => {
  const other = await startSshd()
  const client = other.ssh(['sleep', '30'])
  const [session] = await until(() => {
    const pids = other.sessionPids()
    return pids.length === 1 && pids
  }, 5000, 'a session process')
  // bash execs a lone command, as under plain sshd: the session's child is sleep itself.
  const [command] = await until(() => {
    const c = children(session!)
    return c.length === 1 && c[0]!.comm === 'sleep' && c
  }, 5000, 'the command')
  await other.stop()
  assert.not.ok(await accepts(other.port))
  assert.is((await client).code, 255)
  assert.not.ok(running(other.pid), 'the listener is gone')
  // The session's command is killed with it; on a loaded machine the kill may land a moment later.
  await until(() => !running(command!.pid), 5000, 'the command to be gone')
  await other.stop()
})

it('authenticates through an ssh-agent holding the key', async () => {
  const agent = await startAgent(sshd.clientKey)
  // With the private key file away, only the agent can sign.
  const away = `${sshd.clientKey}.away`
  renameSync(sshd.clientKey, away)
  try {
    const without = await sshd.ssh(['echo', 'ok'])
    assert.is(without.code, 255)
    const withAgent = await sshd.ssh(['-o', 'IdentitiesOnly=no', 'echo', 'ok'], { env: { SSH_AUTH_SOCK: agent.socket } })
    assert.is(withAgent.stdout.toString(), 'ok\n', withAgent.stderr)
  } finally {
    renameSync(away, sshd.clientKey)
    await agent.stop()
  }
  assert.not.ok(running(agent.pid))
})

it('runs commands with the login shell given as shell, from the remote HOME (csh and fish syntax, when installed)', async () => {
  const shells = [
    ['tcsh', 'set x = "from csh"; echo $x in `pwd`'],
    ['fish', 'set x "from fish"; echo $x in (pwd)'],
  ] as const
  for (const [name, command] of shells) {
    const shell = ['/usr/bin', '/bin'].map((d) => `${d}/${name}`).find((f) => existsSync(f))
    if (!shell) {
      console.log(`${name} is not installed: its case of the shell option is skipped`)
      continue
    }
    const other = await startSshd({ alias: `farpipe-${name}`, home: sshd.home, shell })
    try {
      const r = await other.ssh([command])
      assert.is(r.stdout.toString(), `from ${name === 'tcsh' ? 'csh' : 'fish'} in ${other.remoteHome}\n`, r.stderr)
    } finally {
      await other.stop()
    }
  }
})

harness.run()
