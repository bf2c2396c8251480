// `farpipe hosts`: each case of the exit status its help promises, against
// real hosts (the test sshd), a host nobody answers on, and one whose probe
// fails once it is up.
import { createServer, type Server } from 'node:net'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { tempDir } from '../helpers.ts'
import { farpipe, finish, fixtures, lines, start } from './cli.ts'
import { findSshd, startSshd } from './sshd.ts'

/** A loopback port that nothing listens on (it was free a moment ago). */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** A server that accepts connections and never says a word (an SSH client waits for its banner). */
async function silentServer(): Promise<{ port: number; connected: Promise<void>; server: Server }> {
  const server = createServer((socket) => socket.on('error', () => {}))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const connected = new Promise<void>((resolve) => server.once('connection', () => resolve()))
  return { port: (server.address() as { port: number }).port, connected, server }
}

// The sshds start before any suite is queued: uvu runs the queue once the module's first turn ends.
const sshd = findSshd() ? await startSshd({ alias: 'farpipe-hosts' }) : undefined
// A second host, as reachable, whose node has no os.availableParallelism: the probe fails there.
const broken = sshd
  ? await startSshd({ alias: 'farpipe-noprobe', home: sshd.home, address: '127.0.0.2', env: { NODE_OPTIONS: `--import=${path.join(fixtures, 'no-parallelism.mjs')}` } })
  : undefined

// No ~/.ssh/config of the machine's user: a HOME of its own.
const bare = { HOME: tempDir('farpipe-hosts-home-'), SSH_AUTH_SOCK: '' }

const h = suite('cli hosts')

h('a host nobody listens on is unreachable: exit 2, and its line says why', async () => {
  const dest = `ssh://nobody@127.0.0.1:${await freePort()}`
  const r = await farpipe(['hosts', dest], bare)
  assert.is(r.code, 2, r.stderr)
  assert.match(r.stdout.toString(), `${dest}  unreachable: `)
  assert.match(r.stdout.toString(), 'refused')
})

h('a usage error exits 2', async () => {
  for (const args of [['hosts'], ['hosts', 'gpu-1', '--frobnicate'], ['hosts', 'gpu-1', '--workers', '0']]) {
    const r = await farpipe(args, bare)
    assert.is(r.code, 2, args.join(' '))
    assert.match(r.stderr, /^farpipe: /, args.join(' '))
  }
})

h('Ctrl-C while a host is being probed exits 130', async () => {
  const { port, connected, server } = await silentServer()
  const child = start(['hosts', `ssh://nobody@127.0.0.1:${port}`], bare)
  const done = finish(child)
  await connected
  child.kill('SIGINT')
  const r = await done
  server.close()
  assert.is(r.code, 130, r.stderr)
})

h('its help gives the exit status of each case as the command returns it', async () => {
  const help = (await farpipe(['hosts', '--help'])).stdout.toString()
  assert.match(help, /\n {2}0 +every host is reachable/)
  assert.match(help, /\n {2}1 +a host is reachable, but the probe failed/)
  assert.match(help, /\n {2}2 +usage error, or a host is unreachable/)
  assert.match(help, /\n {2}130 +interrupted/)
  // What `run` says about stdout closing and remote stacks is not about hosts.
  assert.not.match(help, 'remote stack')
})

h.run()

if (!sshd || !broken) {
  const s = suite('cli hosts over ssh')
  s.skip('SSH specs (sshd not installed)', () => {})
  s.run()
} else {
  process.on('exit', () => {
    void sshd.stop()
    void broken.stop()
  })
  // The command reads ~/.ssh/config, its key and known_hosts from HOME: the harness's.
  const env = { HOME: sshd.home, SSH_AUTH_SOCK: '' }
  const s = suite('cli hosts over ssh')

  s('every host reachable: exit 0, a line per host with node version, platform, workers and cache', async () => {
    const r = await farpipe(['hosts', 'farpipe-hosts'], env)
    assert.is(r.code, 0, r.stderr)
    assert.match(r.stdout.toString(), `farpipe-hosts  ok  node ${process.version}`)
    assert.match(r.stdout.toString(), 'cache ')
  })

  s('a probe that fails on a reachable host: exit 1, and its line says the probe failed and why', async () => {
    const r = await farpipe(['hosts', 'farpipe-hosts', 'farpipe-noprobe'], env)
    assert.is(r.code, 1, `${r.stdout}${r.stderr}`)
    const [ok, failed] = lines(r.stdout)
    assert.match(ok!, /^farpipe-hosts +ok /)
    assert.match(failed!, /^farpipe-noprobe +probe failed: .*availableParallelism/)
  })

  s('an unreachable host besides a failed probe: exit 2 (the worse of the two)', async () => {
    const dest = `ssh://nobody@127.0.0.1:${await freePort()}`
    const r = await farpipe(['hosts', 'farpipe-hosts', 'farpipe-noprobe', dest], env)
    assert.is(r.code, 2, `${r.stdout}${r.stderr}`)
    const out = lines(r.stdout)
    assert.match(out[0]!, / ok /)
    assert.match(out[1]!, / probe failed: /)
    assert.match(out[2]!, / unreachable: /)
  })

  s.run()
}
