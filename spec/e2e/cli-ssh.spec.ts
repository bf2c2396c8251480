// The command's SSH options against the test sshd: `-F`/`--ssh-config`
// (another config than ~/.ssh/config) and `--known-hosts` (how host keys are
// checked, and how it combines with the config's StrictHostKeyChecking).
// Their bad values need no sshd. Needs `npm run build` first.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { tempDir } from '../helpers.ts'
import { farpipe, lines } from './cli.ts'
import { findSshd, startSshd, type Sshd } from './sshd.ts'

/** A HOME with an empty ~/.ssh: no config, no key, no known_hosts of the machine's user. */
function bareHome(): string {
  const home = tempDir('farpipe-cli-ssh-home-')
  mkdirSync(path.join(home, '.ssh'), { mode: 0o700 })
  return home
}

// The sshds start before any suite is queued: uvu runs the queue once the module's first turn ends.
// Each has a HOME of its own (config, key, known_hosts), so what one spec records is not seen by another:
// one whose key is trusted, one whose key is in no known_hosts, and one for which known_hosts holds
// another key (the first sshd's) for its address and port, so its own key looks changed.
const sshds = findSshd()
  ? await Promise.all([
      startSshd({ alias: 'farpipe-cli-f' }),
      startSshd({ alias: 'farpipe-cli-unknown', trustHostKey: false }),
      startSshd({ alias: 'farpipe-cli-changed', trustHostKey: false }),
    ])
  : undefined
process.on('exit', () => {
  for (const s of sshds ?? []) void s.stop()
})

const u = suite('cli ssh options: bad values')
const bare = { HOME: bareHome(), SSH_AUTH_SOCK: '' }

u('-F naming a file that does not exist, a directory, or nothing is a usage error naming the file, for run, pipe and hosts', async () => {
  const dir = tempDir()
  const missing = path.join(dir, 'no-such-config')
  const cases: [string[], RegExp][] = [
    [['-F', missing], /option --ssh-config \(-F\): .*no-such-config does not exist/],
    [[`--ssh-config=${missing}`], /no-such-config does not exist/],
    [['--ssh-config', dir], /is a directory, not an SSH config file/],
    [['-F'], /option --ssh-config \(-F\) expects a value$/m],
    [['-F', '--timeout', '5'], /option --ssh-config \(-F\) expects a value, got the option --timeout/],
    [['--ssh-config='], /expects a file, got an empty string/],
    [['-F', '/dev/null', '-F', missing], /option --ssh-config \(-F\) is given twice, as '\/dev\/null' and as '.*no-such-config'/],
  ]
  for (const [options, message] of cases) {
    for (const command of [['run', 'cli-tasks.ts#fibonacci', '3'], ['pipe', 'cli-tasks.ts#sum', '-'], ['hosts', 'gpu-1']]) {
      const args = [...command, ...options]
      const r = await farpipe(args, bare)
      assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, /^farpipe: /, args.join(' '))
      assert.match(r.stderr, message, args.join(' '))
      // A bad -F stops the command before any host is tried (gpu-1 would be unreachable on a line of its own).
      assert.is(r.stdout.length, 0, args.join(' '))
    }
  }
})

u('-F given without hosts is still checked (a typo is not a silent run on local workers), and -F /dev/null is taken', async () => {
  const r = await farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '-F', 'typo.conf'], bare)
  assert.is(r.code, 2, r.stderr)
  assert.match(r.stderr, 'typo.conf')
  const ok = await farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '-F', '/dev/null'], bare)
  assert.is(ok.code, 0, ok.stderr)
  assert.equal(lines(ok.stdout), ['0', '1', '1'])
})

u('--known-hosts takes strict, accept-new or off, once; anything else is a usage error naming it', async () => {
  for (const [options, message] of [
    [['--known-hosts', 'yes'], "option --known-hosts expects strict, accept-new or off, got 'yes'"],
    [['--known-hosts=accept_new'], "got 'accept_new'"],
    [['--known-hosts'], 'option --known-hosts expects a value'],
    [['--known-hosts', 'strict', '--known-hosts', 'off'], "option --known-hosts is given twice, as 'strict' and as 'off'"],
  ] as const) {
    for (const command of [['run', 'cli-tasks.ts#fibonacci', '3'], ['hosts', 'gpu-1']]) {
      const args = [...command, ...options]
      const r = await farpipe(args, bare)
      assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, message, args.join(' '))
    }
  }
})

u('farpipe --help and every command help list -F/--ssh-config and --known-hosts', async () => {
  for (const command of [[], ['run'], ['pipe'], ['hosts']]) {
    const help = (await farpipe([...command, '--help'])).stdout.toString()
    const which = command[0] ?? 'farpipe'
    assert.match(help, /-F, --ssh-config <file> +the SSH (client )?config to read instead of ~\/\.ssh\/config/, which)
    assert.match(help, /--known-hosts <policy> +how host keys are checked/, which)
  }
})

u.run()

if (!sshds) {
  const s = suite('cli ssh options over ssh')
  s.skip('SSH specs (sshd not installed)', () => {})
  s.run()
} else {
  const [trusted, unknown, changed] = sshds
  writeFileSync(path.join(changed.home, '.ssh', 'known_hosts'), `[${changed.host}]:${changed.port} ${trusted.hostKeyPublic}\n`)
  configSuite(trusted)
  knownHostsSuite(unknown, changed)
}

/** A copy of `sshd`'s client config at another path than ~/.ssh/config, with `edit` applied. */
function configCopy(sshd: Sshd, edit: (text: string) => string = (t) => t): string {
  const file = path.join(tempDir(), 'other-ssh-config')
  writeFileSync(file, edit(readFileSync(path.join(sshd.home, '.ssh', 'config'), 'utf8')), { mode: 0o600 })
  return file
}

function configSuite(sshd: Sshd): void {
  const s = suite('cli -F / --ssh-config over ssh')
  // The alias is defined only in the copy: a HOME without any ~/.ssh/config.
  const config = configCopy(sshd)
  const env = { HOME: bareHome(), SSH_AUTH_SOCK: '' }

  s('run and pipe reach an alias defined only in the -F file (regression: only ~/.ssh/config was read)', async () => {
    const without = await farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '--host', sshd.alias], env)
    assert.is(without.code, 2, 'without -F the alias is unknown here')
    for (const option of [['-F', config], [`-F${config}`], ['--ssh-config', config], [`--ssh-config=${config}`]]) {
      const r = await farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '--host', sshd.alias, ...option], env)
      assert.is(r.code, 0, `${option.join(' ')}: ${r.stderr}`)
      assert.equal(lines(r.stdout), ['0', '1', '1'])
    }
    const p = await farpipe(['pipe', 'cli-tasks.ts#sum', '-', '--host', sshd.alias, '-F', config], env, '1\n2\n3\n')
    assert.is(p.code, 0, p.stderr)
    assert.equal(lines(p.stdout), ['6'])
  })

  s('hosts reads the -F file too', async () => {
    const r = await farpipe(['hosts', sshd.alias, '-F', config], env)
    assert.is(r.code, 0, `${r.stdout}${r.stderr}`)
    assert.match(r.stdout.toString(), new RegExp(`^${sshd.alias} +ok +node `))
  })

  s('-F /dev/null reads no config at all, as ssh -F /dev/null does (regression: "SSH config /dev/null does not exist")', async () => {
    // No alias, no IdentityFile, no UserKnownHostsFile: the defaults under HOME, which the harness filled.
    const home = { HOME: sshd.home, SSH_AUTH_SOCK: '' }
    const r = await farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '--host', `ssh://${sshd.host}:${sshd.port}`, '-F', '/dev/null'], home)
    assert.is(r.code, 0, r.stderr)
    assert.equal(lines(r.stdout), ['0', '1', '1'])
    // The alias lives in ~/.ssh/config, which -F /dev/null leaves unread.
    const alias = await farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '--host', sshd.alias, '-F', '/dev/null'], home)
    assert.is(alias.code, 2, alias.stderr)
  })

  s.run()
}

function knownHostsSuite(unknown: Sshd, changed: Sshd): void {
  const s = suite('cli --known-hosts over ssh')
  const env = { HOME: unknown.home, SSH_AUTH_SOCK: '' }
  const knownHosts = path.join(unknown.home, '.ssh', 'known_hosts')
  const run = (...options: string[]) => farpipe(['run', 'cli-tasks.ts#fibonacci', '3', '--host', unknown.alias, ...options], env)

  s('an unknown host key is refused: exit 2 with the fingerprint, and the message names --known-hosts accept-new, not the library option', async () => {
    const before = readFileSync(knownHosts, 'utf8')
    for (const r of [await run(), await farpipe(['hosts', unknown.alias], env)]) {
      assert.is(r.code, 2, r.stderr)
      const said = r.stdout.toString() + r.stderr
      assert.match(said, 'is not known')
      assert.match(said, unknown.hostKeyFingerprint)
      assert.match(said, 'run again with --known-hosts accept-new')
      assert.not.match(said, 'knownHosts:')
    }
    assert.is(readFileSync(knownHosts, 'utf8'), before, 'nothing recorded')
  })

  s("--known-hosts accept-new accepts and records an unknown key, over the config's StrictHostKeyChecking yes", async () => {
    assert.match(readFileSync(path.join(unknown.home, '.ssh', 'config'), 'utf8'), 'StrictHostKeyChecking yes')
    const r = await run('--known-hosts', 'accept-new')
    assert.is(r.code, 0, r.stderr)
    assert.equal(lines(r.stdout), ['0', '1', '1'])
    assert.match(readFileSync(knownHosts, 'utf8'), unknown.hostKeyPublic)
    // Recorded: known now, under the config's strict policy.
    const again = await run()
    assert.is(again.code, 0, again.stderr)
  })

  s('a changed host key is refused even with --known-hosts accept-new, for run and hosts, and known_hosts is left alone', async () => {
    const file = path.join(changed.home, '.ssh', 'known_hosts')
    const before = readFileSync(file, 'utf8')
    const cmds = [['run', 'cli-tasks.ts#fibonacci', '3', '--host', changed.alias], ['hosts', changed.alias]]
    for (const args of cmds) {
      const r = await farpipe([...args, '--known-hosts', 'accept-new'], { HOME: changed.home, SSH_AUTH_SOCK: '' })
      assert.is(r.code, 2, `${args[0]}: ${r.stderr}`)
      const said = r.stdout.toString() + r.stderr
      assert.match(said, 'HAS CHANGED', args[0])
      assert.match(said, changed.hostKeyFingerprint, args[0])
      assert.not.match(said, '--known-hosts accept-new', args[0])
    }
    assert.is(readFileSync(file, 'utf8'), before)
  })

  s("--known-hosts strict beats the config's StrictHostKeyChecking accept-new; without it the config's policy stands; off records nothing", async () => {
    const other = path.join(tempDir(), 'known_hosts')
    const config = configCopy(unknown, (text) =>
      text.replace(/StrictHostKeyChecking yes/g, 'StrictHostKeyChecking accept-new').replace(/UserKnownHostsFile .*/g, `UserKnownHostsFile "${other}"`),
    )
    const strict = await run('-F', config, '--known-hosts', 'strict')
    assert.is(strict.code, 2, strict.stderr)
    assert.match(strict.stderr, 'run again with --known-hosts accept-new')
    const off = await run('-F', config, '--known-hosts', 'off')
    assert.is(off.code, 0, off.stderr)
    assert.not.ok(existsSync(other), 'off records nothing')
    const byConfig = await run('-F', config)
    assert.is(byConfig.code, 0, byConfig.stderr)
    assert.match(readFileSync(other, 'utf8'), unknown.hostKeyPublic)
  })

  s.run()
}
