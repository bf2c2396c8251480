import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { rejection, tempDir } from './helpers.ts'
import { FarpipeError } from '../lib/errors.ts'
import { resolveHost } from '../lib/ssh/config.ts'
import type { HostOptions } from '../lib/ssh/host-options.ts'

/** A fresh home directory holding `files` (paths relative to it). */
function homeWith(files: Record<string, string>): string {
  const home = tempDir('farpipe-ssh-config-')
  mkdirSync(path.join(home, '.ssh'))
  for (const [rel, text] of Object.entries(files)) {
    const file = path.join(home, rel)
    mkdirSync(path.dirname(file), { recursive: true })
    writeFileSync(file, text)
  }
  return home
}

/** A home whose ~/.ssh/config is `text`. */
const withConfig = (text: string) => homeWith({ '.ssh/config': text })

const resolve = (dest: string | HostOptions, home: string) => resolveHost(dest, { home })

/** Runs `fn` with SSH_AUTH_SOCK set to `value` (or unset), restoring it after. */
async function withAgentEnv<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = process.env.SSH_AUTH_SOCK
  if (value === undefined) delete process.env.SSH_AUTH_SOCK
  else process.env.SSH_AUTH_SOCK = value
  try {
    return await fn()
  } finally {
    if (saved === undefined) delete process.env.SSH_AUTH_SOCK
    else process.env.SSH_AUTH_SOCK = saved
  }
}

const localUser = os.userInfo().username

// ─── resolving through ~/.ssh/config ─────────────────────────────────────

const config = suite('resolveHost: config')

config('resolves an alias through HostName, Port and User', async () => {
  const home = withConfig(`
Host web
  HostName web.example.com
  Port 2200
  User deploy
`)
  const h = await withAgentEnv(undefined, () => resolve('web', home))
  assert.equal(h, {
    name: 'web',
    hostname: 'web.example.com',
    port: 2200,
    user: 'deploy',
    identityFiles: [],
    identitiesOnly: false,
    knownHostsFiles: [path.join(home, '.ssh/known_hosts'), path.join(home, '.ssh/known_hosts2')],
    globalKnownHostsFiles: ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'],
    knownHosts: 'strict',
    hashKnownHosts: false,
    keepaliveInterval: 15000,
    keepaliveCountMax: 3,
    connectTimeout: 20000,
    proxyJump: [],
  })
})

config('falls back to the name, port 22 and the local user without a config file', async () => {
  const home = homeWith({})
  const h = await resolve('Web.Example.com', home)
  assert.is(h.name, 'Web.Example.com')
  assert.is(h.hostname, 'web.example.com')
  assert.is(h.port, 22)
  assert.is(h.user, localUser)
})

config('looks user@alias up by the alias; the user and port in the destination beat the config', async () => {
  const home = withConfig(`
Host web
  HostName web.example.com
  User deploy
  Port 2200
`)
  const h = await resolve('alice@web', home)
  assert.is(h.name, 'web')
  assert.is(h.hostname, 'web.example.com')
  assert.is(h.user, 'alice')
  assert.is(h.port, 2200)
  const u = await resolve('ssh://bob@web:2022', home)
  assert.is(u.user, 'bob')
  assert.is(u.port, 2022)
  assert.is(u.hostname, 'web.example.com')
})

config('matches wildcard Host patterns', async () => {
  const home = withConfig(`
Host *.prod
  User ops
Host web-?
  Port 2201
`)
  assert.is((await resolve('app.prod', home)).user, 'ops')
  assert.is((await resolve('app.staging', home)).user, localUser)
  assert.is((await resolve('web-1', home)).port, 2201)
})

config('takes ? as exactly one character (ssh-config takes it as zero or one)', async () => {
  const home = withConfig(`
Host web?
  Port 2201
`)
  assert.is((await resolve('web1', home)).port, 2201)
  assert.is((await resolve('web', home)).port, 22)
  assert.is((await resolve('web12', home)).port, 22)
})

config('matches Host patterns case-insensitively, as OpenSSH does', async () => {
  const home = withConfig(`
Host WEB
  hostname web.example.com
  PORT 2202
`)
  const h = await resolve('Web', home)
  assert.is(h.hostname, 'web.example.com')
  assert.is(h.port, 2202)
})

config('ignores a Host block when a negated pattern matches', async () => {
  const home = withConfig(`
Host *.prod !db.prod
  User ops
Host !only-negated
  Port 2203
`)
  assert.is((await resolve('app.prod', home)).user, 'ops')
  assert.is((await resolve('db.prod', home)).user, localUser)
  // A Host line of negated patterns alone matches nothing.
  assert.is((await resolve('other', home)).port, 22)
})

config('keeps the first value obtained, and every IdentityFile in order', async () => {
  const home = withConfig(`
User everyone
Host web
  User first
  IdentityFile ~/.ssh/web_key
Host *
  User later
  Port 2204
  IdentityFile ~/.ssh/any_key
`)
  const h = await resolve('web', home)
  assert.is(h.user, 'everyone')
  assert.is(h.port, 2204)
  assert.equal(h.identityFiles, [path.join(home, '.ssh/web_key'), path.join(home, '.ssh/any_key')])
  assert.is((await resolve('other', home)).user, 'everyone')
})

config('expands ~ and %d %u %h %r %p %n %% in IdentityFile', async () => {
  const home = withConfig(`
Host web
  HostName web.example.com
  User deploy
  Port 2222
  IdentityFile ~/.ssh/%r@%h:%p
  IdentityFile %d/keys/%u-%n
  IdentityFile /keys/100%%
  IdentityFile keys/relative
`)
  const h = await resolve('web', home)
  assert.equal(h.identityFiles, [
    path.join(home, '.ssh/deploy@web.example.com:2222'),
    path.join(home, `keys/${localUser}-web`),
    '/keys/100%',
    path.resolve('keys/relative'),
  ])
})

config('refuses an unknown token in IdentityFile', async () => {
  const home = withConfig(`
Host web
  IdentityFile ~/.ssh/%z
`)
  const err = await rejection(resolve('web', home))
  assert.instance(err, FarpipeError)
  assert.match(err.message, `SSH config ${path.join(home, '.ssh/config')}, host "web": IdentityFile "~/.ssh/%z": unknown token %z`)
})

config('uses HostKeyAlias, HashKnownHosts, IdentitiesOnly and the timeouts from the config', async () => {
  const home = withConfig(`
Host web
  HostKeyAlias web-key
  HashKnownHosts yes
  IdentitiesOnly yes
  ServerAliveInterval 30
  ServerAliveCountMax 5
  ConnectTimeout 1m
`)
  const h = await resolve('web', home)
  assert.is(h.hostKeyAlias, 'web-key')
  assert.is(h.hashKnownHosts, true)
  assert.is(h.identitiesOnly, true)
  assert.is(h.keepaliveInterval, 30_000)
  assert.is(h.keepaliveCountMax, 5)
  assert.is(h.connectTimeout, 60_000)
})

config('refuses a bad value in the config naming the directive and the host', async () => {
  for (const [line, message] of [
    ['Port 22x', 'Port must be an integer from 1 to 65535, got "22x"'],
    ['HashKnownHosts maybe', 'HashKnownHosts must be yes or no, got "maybe"'],
    ['ServerAliveInterval soon', 'ServerAliveInterval must be a time in seconds (like 30 or 1m30s), got "soon"'],
    ['StrictHostKeyChecking sometimes', 'StrictHostKeyChecking must be yes, ask, accept-new, no or off, got "sometimes"'],
  ]) {
    const home = withConfig(`Host web\n  ${line}\n`)
    const err = await rejection(resolve('web', home))
    assert.instance(err, FarpipeError)
    assert.match(err.message, `SSH config ${path.join(home, '.ssh/config')}, host "web": ${message}`)
  }
})

config('refuses ServerAliveInterval and ConnectTimeout beyond what Node timers can wait, naming the directive, value and limit (regression: fired after 1 ms)', async () => {
  for (const [line, message] of [
    ['ServerAliveInterval 2147484', 'ServerAliveInterval 2147484 is 2147484000 ms, more than 2147483647 ms (about 24.8 days, the longest timer Node.js can set)'],
    ['ConnectTimeout 25d', 'ConnectTimeout 25d is 2160000000 ms, more than 2147483647 ms (about 24.8 days, the longest timer Node.js can set)'],
  ]) {
    const home = withConfig(`Host web\n  ${line}\n`)
    const err = await rejection(resolve('web', home))
    assert.instance(err, FarpipeError)
    assert.match(err.message, `SSH config ${path.join(home, '.ssh/config')}, host "web": ${message}`)
  }
  const home = withConfig('Host web\n  ServerAliveInterval 2147483\n  ConnectTimeout 24d\n')
  const h = await resolve('web', home)
  assert.is(h.keepaliveInterval, 2_147_483_000)
  assert.is(h.connectTimeout, 24 * 86_400_000)
})

config('takes ServerAliveCountMax 0 through as 0 (the transport reads it as 1, see HostOptions.keepaliveCountMax)', async () => {
  assert.is((await resolve('web', withConfig('Host web\n  ServerAliveCountMax 0\n'))).keepaliveCountMax, 0)
})

config('refuses a config ssh-config cannot parse, naming the file', async () => {
  const home = withConfig('Host web\n  IdentityFile "~/.ssh/unterminated\n')
  const err = await rejection(resolve('web', home))
  assert.instance(err, FarpipeError)
  assert.match(err.message, `cannot parse SSH config ${path.join(home, '.ssh/config')}:`)
})

config('reads the configFile given instead of ~/.ssh/config, and refuses one that does not exist', async () => {
  const home = withConfig('Host web\n  Port 1111\n')
  const other = path.join(home, 'other_config')
  writeFileSync(other, 'Host web\n  Port 2222\n')
  assert.is((await resolveHost('web', { home, configFile: other })).port, 2222)
  const err = await rejection(resolveHost('web', { home, configFile: path.join(home, 'missing') }))
  assert.instance(err, FarpipeError)
  assert.match(err.message, `SSH config ${path.join(home, 'missing')} does not exist`)
})

config('never runs Match exec', async () => {
  const marker = path.join(tempDir(), 'ran')
  const home = withConfig(`
Match exec "touch ${marker}"
  Port 2299
`)
  const h = await resolve('web', home)
  assert.is(h.port, 22)
  assert.not.ok(existsSync(marker), 'Match exec ran a command')
})

config('never runs nslookup for CanonicalizeHostName', async () => {
  const bin = tempDir()
  const marker = path.join(bin, 'ran')
  writeFileSync(path.join(bin, 'nslookup'), `#!/bin/sh\ntouch ${marker}\n`)
  chmodSync(path.join(bin, 'nslookup'), 0o755)
  const home = withConfig(`
Host web
  CanonicalizeHostName yes
  CanonicalDomains example.com example.org
`)
  const saved = process.env.PATH
  process.env.PATH = `${bin}${path.delimiter}${saved}`
  try {
    assert.is((await resolve('web', home)).hostname, 'web')
  } finally {
    process.env.PATH = saved
  }
  assert.not.ok(existsSync(marker), 'nslookup ran')
})

config('still applies Match blocks ssh-config can evaluate, after a lowercase hostname directive', async () => {
  const home = withConfig(`
Host web
  hostname 10.0.0.5
Match host 10.0.0.5
  Port 2205
Match originalhost web user root
  IdentityFile ~/.ssh/root_key
`)
  const h = await resolve('root@web', home)
  assert.is(h.port, 2205)
  assert.equal(h.identityFiles, [path.join(home, '.ssh/root_key')])
  assert.equal((await resolve('alice@web', home)).identityFiles, [])
})

// ─── Include ─────────────────────────────────────────────────────────────

const include = suite('resolveHost: Include')

include('follows a relative Include from ~/.ssh', async () => {
  const home = homeWith({
    '.ssh/config': 'Include hosts.conf\n',
    '.ssh/hosts.conf': 'Host web\n  HostName web.example.com\n',
  })
  assert.is((await resolve('web', home)).hostname, 'web.example.com')
})

include('follows a glob in sorted order, skipping hidden files and names that do not match', async () => {
  const home = homeWith({
    '.ssh/config': 'Include conf.d/*.conf\n',
    '.ssh/conf.d/b.conf': 'Host web\n  User from-b\n  IdentityFile ~/b\n',
    '.ssh/conf.d/a.conf': 'Host web\n  User from-a\n  IdentityFile ~/a\n',
    '.ssh/conf.d/c.txt': 'Host web\n  Port 2206\n',
    '.ssh/conf.d/.hidden.conf': 'Host web\n  Port 2207\n',
  })
  const h = await resolve('web', home)
  assert.is(h.user, 'from-a')
  assert.equal(h.identityFiles, [path.join(home, 'a'), path.join(home, 'b')])
  assert.is(h.port, 22)
})

include('follows a glob in a directory component and ~ paths', async () => {
  const home = homeWith({
    '.ssh/config': 'Include ~/.ssh/teams/*/ssh_config\n',
    '.ssh/teams/red/ssh_config': 'Host red\n  Port 2208\n',
    '.ssh/teams/blue/ssh_config': 'Host blue\n  Port 2209\n',
  })
  assert.is((await resolve('red', home)).port, 2208)
  assert.is((await resolve('blue', home)).port, 2209)
})

include('follows nested Includes, absolute and relative', async () => {
  const home = homeWith({
    '.ssh/one': 'Include two\n',
    '.ssh/two': 'Host web\n  Port 2210\n',
  })
  writeFileSync(path.join(home, '.ssh/config'), `Include ${path.join(home, '.ssh/one')}\n`)
  assert.is((await resolve('web', home)).port, 2210)
})

include('ignores an Include of a file that does not exist', async () => {
  const home = withConfig('Include missing.conf nothing/*\nHost web\n  Port 2211\n')
  assert.is((await resolve('web', home)).port, 2211)
})

include('refuses an Include loop, naming the chain', async () => {
  const home = homeWith({
    '.ssh/config': 'Include a\n',
    '.ssh/a': 'Include b\n',
    '.ssh/b': 'Include config\n',
  })
  const err = await rejection(resolve('web', home))
  assert.instance(err, FarpipeError)
  const ssh = path.join(home, '.ssh')
  assert.match(err.message, `SSH config Include loop: ${ssh}/config → ${ssh}/a → ${ssh}/b → ${ssh}/config`)
})

include('refuses Includes nested deeper than 16', async () => {
  const files: Record<string, string> = { '.ssh/config': 'Include f1\n' }
  for (let i = 1; i <= 20; i++) files[`.ssh/f${i}`] = `Include f${i + 1}\n`
  const err = await rejection(resolve('web', homeWith(files)))
  assert.instance(err, FarpipeError)
  assert.match(err.message, 'SSH config Includes nest more than 16 deep')
  // Sixteen levels are fine.
  const ok: Record<string, string> = { '.ssh/config': 'Include f1\n', '.ssh/f16': 'Host web\n  Port 2212\n' }
  for (let i = 1; i < 16; i++) ok[`.ssh/f${i}`] = `Include f${i + 1}\n`
  assert.is((await resolve('web', homeWith(ok))).port, 2212)
})

include('applies an Include inside a Host block only to that block', async () => {
  const home = homeWith({
    '.ssh/config': 'Host web\n  Include web.conf\n',
    '.ssh/web.conf': 'User web-user\n',
  })
  assert.is((await resolve('web', home)).user, 'web-user')
  assert.is((await resolve('db', home)).user, localUser)
})

include('returns to the enclosing block after an Include, and never activates included Host blocks under an inactive one', async () => {
  const home = homeWith({
    '.ssh/config': 'Host web\n  Include extra.conf\n  Port 2213\n',
    '.ssh/extra.conf': 'Host db\n  User db-user\n',
  })
  // As OpenSSH: "Port 2213" still belongs to Host web, and "Host db" applies only where "Host web" did.
  assert.is((await resolve('web', home)).port, 2213)
  assert.is((await resolve('db', home)).user, localUser)
  assert.is((await resolve('db', home)).port, 22)
})

include('returns to the global scope after a top-level Include', async () => {
  const home = homeWith({
    '.ssh/config': 'Include hosts.conf\nUser everyone\n',
    '.ssh/hosts.conf': 'Host web\n  Port 2214\n',
  })
  assert.is((await resolve('db', home)).user, 'everyone')
  assert.is((await resolve('web', home)).user, 'everyone')
})

// ─── ProxyJump ───────────────────────────────────────────────────────────

const jump = suite('resolveHost: ProxyJump')

jump('resolves a jump host through the same config', async () => {
  const home = withConfig(`
Host inner
  HostName 10.1.0.5
  ProxyJump bastion
Host bastion
  HostName bastion.example.com
  User jumper
  Port 2022
`)
  const h = await resolve('inner', home)
  assert.is(h.hostname, '10.1.0.5')
  assert.is(h.proxyJump.length, 1)
  const b = h.proxyJump[0]!
  assert.is(b.name, 'bastion')
  assert.is(b.hostname, 'bastion.example.com')
  assert.is(b.user, 'jumper')
  assert.is(b.port, 2022)
  assert.equal(b.proxyJump, [])
})

jump('resolves a chain in the order it is traversed, with users and ports in the entries', async () => {
  const home = withConfig(`
Host inner
  ProxyJump first,alice@second:2200,ssh://bob@[fd00::3]:2300
Host second
  HostName second.example.com
  User nobody
`)
  const h = await resolve('inner', home)
  assert.equal(
    h.proxyJump.map((j) => [j.name, j.hostname, j.user, j.port]),
    [
      ['first', 'first', localUser, 22],
      ['second', 'second.example.com', 'alice', 2200],
      ['fd00::3', 'fd00::3', 'bob', 2300],
    ],
  )
})

jump('ignores a jump host\'s own ProxyJump', async () => {
  const home = withConfig(`
Host inner
  ProxyJump bastion
Host bastion
  ProxyJump outer
`)
  const h = await resolve('inner', home)
  assert.equal(h.proxyJump.map((j) => j.name), ['bastion'])
  assert.equal(h.proxyJump[0]!.proxyJump, [])
})

jump('takes ProxyJump none as no jump, even when a later block sets one', async () => {
  const home = withConfig(`
Host direct
  ProxyJump none
Host *
  ProxyJump bastion
`)
  assert.equal((await resolve('direct', home)).proxyJump, [])
  assert.equal((await resolve('other', home)).proxyJump.map((j) => j.name), ['bastion'])
})

jump('refuses a chain that leads back to the host itself', async () => {
  const home = withConfig(`
Host *
  ProxyJump bastion
Host bastion-by-ip
  HostName 192.0.2.1
`)
  const err = await rejection(resolve('bastion', home))
  assert.instance(err, FarpipeError)
  assert.match(err.message, `host "bastion": ProxyJump "bastion" leads back to the host itself (via "bastion"); exclude the host from the Host pattern that sets ProxyJump, e.g. "Host * !bastion"`)
  // Also when the jump reaches the same address under another name.
  const other = withConfig(`
Host target
  HostName 192.0.2.1
  ProxyJump hop,also-target
Host also-target
  HostName 192.0.2.1
`)
  assert.match((await rejection(resolve('target', other))).message, 'leads back to the host itself (via "also-target")')
})

jump('refuses a bad entry in ProxyJump, naming it', async () => {
  const home = withConfig('Host inner\n  ProxyJump bastion,,other\n')
  const err = await rejection(resolve('inner', home))
  assert.instance(err, FarpipeError)
  assert.match(err.message, 'host "inner": ProxyJump "bastion,,other": invalid SSH destination "": it is empty')
})

jump('refuses ProxyCommand, and lets whichever of ProxyJump and ProxyCommand comes first win', async () => {
  const home = withConfig(`
Host cmd
  ProxyCommand ssh -W %h:%p bastion
Host jumpfirst
  ProxyJump bastion
Host *
  ProxyCommand nc %h %p
`)
  const err = await rejection(resolve('cmd', home))
  assert.instance(err, FarpipeError)
  assert.match(err.message, 'ProxyCommand "ssh -W %h:%p bastion" is not supported (farpipe runs no commands from the SSH config); use ProxyJump')
  assert.equal((await resolve('jumpfirst', home)).proxyJump.map((j) => j.name), ['bastion'])
  const none = withConfig('Host web\n  ProxyCommand none\n')
  assert.equal((await resolve('web', none)).proxyJump, [])
})

// ─── known hosts and agent ───────────────────────────────────────────────

const keys = suite('resolveHost: known hosts and agent')

for (const [value, policy] of [
  ['yes', 'strict'],
  ['ask', 'strict'],
  ['accept-new', 'accept-new'],
  ['no', 'off'],
  ['off', 'off'],
] as const) {
  keys(`maps StrictHostKeyChecking ${value} to ${policy}`, async () => {
    const home = withConfig(`Host web\n  StrictHostKeyChecking ${value}\n`)
    assert.is((await resolve('web', home)).knownHosts, policy)
  })
}

keys('takes several UserKnownHostsFile paths, with tokens and quotes', async () => {
  const home = withConfig(`
Host web
  HostName web.example.com
  UserKnownHostsFile ~/.ssh/known_hosts "~/.ssh/known hosts %h" /etc/farpipe/%n
`)
  assert.equal((await resolve('web', home)).knownHostsFiles, [
    path.join(home, '.ssh/known_hosts'),
    path.join(home, '.ssh/known hosts web.example.com'),
    '/etc/farpipe/web',
  ])
})

keys('takes UserKnownHostsFile none as no file', async () => {
  const home = withConfig('Host web\n  UserKnownHostsFile none\n')
  assert.equal((await resolve('web', home)).knownHostsFiles, [])
})

keys('takes GlobalKnownHostsFile paths from the config (regression: never read), and none as no file', async () => {
  const home = withConfig(`
Host web
  HostName web.example.com
  GlobalKnownHostsFile /etc/ssh/ssh_known_hosts "~/global hosts %h"
Host none
  GlobalKnownHostsFile none
`)
  assert.equal((await resolve('web', home)).globalKnownHostsFiles, ['/etc/ssh/ssh_known_hosts', path.join(home, 'global hosts web.example.com')])
  assert.equal((await resolve('none', home)).globalKnownHostsFiles, [])
  assert.equal((await resolve('other', home)).globalKnownHostsFiles, ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'])
})

keys('lets the globalKnownHostsFile option beat GlobalKnownHostsFile, without touching the user files', async () => {
  const home = withConfig('Host web\n  GlobalKnownHostsFile /etc/ssh/ssh_known_hosts\n  UserKnownHostsFile ~/mine\n')
  const h = await resolve({ host: 'web', globalKnownHostsFile: '~/spec/global' }, home)
  assert.equal(h.globalKnownHostsFiles, [path.join(home, 'spec/global')])
  assert.equal(h.knownHostsFiles, [path.join(home, 'mine')])
  assert.equal((await resolve({ host: 'web', globalKnownHostsFile: ['/a', '/b'] }, home)).globalKnownHostsFiles, ['/a', '/b'])
})

keys('uses $SSH_AUTH_SOCK unless IdentityAgent says otherwise', async () => {
  const home = withConfig(`
Host noagent
  IdentityAgent none
Host custom
  IdentityAgent ~/.agent/%n.sock
Host fromenv
  IdentityAgent $FARPIPE_SPEC_AGENT
`)
  process.env.FARPIPE_SPEC_AGENT = '/run/other.sock'
  try {
    await withAgentEnv('/run/agent.sock', async () => {
      assert.is((await resolve('web', home)).agent, '/run/agent.sock')
      assert.is((await resolve('noagent', home)).agent, undefined)
      assert.is((await resolve('custom', home)).agent, path.join(home, '.agent/custom.sock'))
      assert.is((await resolve('fromenv', home)).agent, '/run/other.sock')
    })
    await withAgentEnv(undefined, async () => assert.is((await resolve('web', home)).agent, undefined))
  } finally {
    delete process.env.FARPIPE_SPEC_AGENT
  }
})

// ─── HostOptions ─────────────────────────────────────────────────────────

const opts = suite('resolveHost: HostOptions')

opts('lets explicit options beat the config', async () => {
  const home = withConfig(`
Host web
  HostName web.example.com
  User deploy
  Port 2200
  IdentityFile ~/.ssh/config_key
  StrictHostKeyChecking no
  UserKnownHostsFile ~/.ssh/config_known
  ServerAliveInterval 60
  ServerAliveCountMax 9
  ConnectTimeout 99
  IdentityAgent ~/config.sock
`)
  const h = await resolve(
    {
      host: 'web',
      user: 'alice',
      port: 2022,
      identityFile: '~/.ssh/mine',
      knownHosts: 'accept-new',
      knownHostsFile: ['~/kh1', '/abs/kh2'],
      keepaliveInterval: 1000,
      keepaliveCountMax: 1,
      connectTimeout: 500,
      agent: false,
    },
    home,
  )
  assert.is(h.hostname, 'web.example.com')
  assert.is(h.user, 'alice')
  assert.is(h.port, 2022)
  assert.equal(h.identityFiles, [path.join(home, '.ssh/mine'), path.join(home, '.ssh/config_key')])
  assert.is(h.knownHosts, 'accept-new')
  assert.equal(h.knownHostsFiles, [path.join(home, 'kh1'), '/abs/kh2'])
  assert.is(h.keepaliveInterval, 1000)
  assert.is(h.keepaliveCountMax, 1)
  assert.is(h.connectTimeout, 500)
  assert.is(h.agent, undefined)
  assert.is((await resolve({ host: 'web', agent: '/run/mine.sock' }, home)).agent, '/run/mine.sock')
})

opts('takes timeouts of exactly 2^31-1 ms', async () => {
  const h = await resolve({ host: 'web', keepaliveInterval: 2_147_483_647, connectTimeout: 2_147_483_647 }, homeWith({}))
  assert.is(h.keepaliveInterval, 2_147_483_647)
  assert.is(h.connectTimeout, 2_147_483_647)
})

opts('carries workers, node, env, cacheDir and passphrase through', async () => {
  const h = await resolve({ host: 'alice@web:2022', workers: 4, node: 'upload', env: { A: '1' }, cacheDir: '/var/cache/fp', passphrase: 'secret' }, homeWith({}))
  assert.is(h.user, 'alice')
  assert.is(h.port, 2022)
  assert.is(h.workers, 4)
  assert.is(h.node, 'upload')
  assert.equal(h.env, { A: '1' })
  assert.is(h.cacheDir, '/var/cache/fp')
  assert.is(h.passphrase, 'secret')
})

/** Options refused, with the class and the message. */
const badOptions: [string, unknown, typeof TypeError | typeof RangeError, string][] = [
  ['port 0', { host: 'web', port: 0 }, RangeError, 'host "web": option port must be an integer from 1 to 65535, got 0'],
  ['port 70000', { host: 'web', port: 70000 }, RangeError, 'host "web": option port must be an integer from 1 to 65535, got 70000'],
  ['port as a string', { host: 'web', port: '22' }, TypeError, 'host "web": option port must be a number, got "22"'],
  ['workers 0', { host: 'web', workers: 0 }, RangeError, 'host "web": option workers must be an integer >= 1, got 0'],
  ['workers 1.5', { host: 'web', workers: 1.5 }, RangeError, 'host "web": option workers must be an integer >= 1, got 1.5'],
  ['knownHosts maybe', { host: 'web', knownHosts: 'maybe' }, TypeError, 'host "web": option knownHosts must be "strict", "accept-new" or "off", got "maybe"'],
  ['an empty identityFile list', { host: 'web', identityFile: [] }, TypeError, 'host "web": option identityFile must be a path or a non-empty array of paths, got an array'],
  ['a number as identityFile', { host: 'web', identityFile: 5 }, TypeError, 'host "web": option identityFile must be a path or a non-empty array of paths, got 5'],
  ['agent true', { host: 'web', agent: true }, TypeError, 'host "web": option agent must be a socket path or false, got true'],
  ['a negative keepaliveInterval', { host: 'web', keepaliveInterval: -1 }, RangeError, 'host "web": option keepaliveInterval must be a finite number of milliseconds >= 0, got -1'],
  ['an env value that is not a string', { host: 'web', env: { A: 1 } }, TypeError, 'host "web": option env.A must be a string, got 1'],
  ['an env name with "-"', { host: 'web', env: { 'A-B': '1' } }, TypeError, 'host "web": option env has a bad variable name "A-B" (names are letters, digits and _, not starting with a digit)'],
  ['an env name starting with a digit', { host: 'web', env: { '1A': '1' } }, TypeError, 'host "web": option env has a bad variable name "1A"'],
  ['an env name that is shell code', { host: 'web', env: { '$(touch x)': '1' } }, TypeError, 'host "web": option env has a bad variable name "$(touch x)"'],
  ['an env value with a NUL', { host: 'web', env: { A: 'a\0b' } }, TypeError, 'host "web": option env.A contains a NUL character'],
  ['a node path starting with "-"', { host: 'web', node: '-e' }, TypeError, 'host "web": option node must be a path that does not start with "-", or "upload", got "-e"'],
  ['a keepaliveInterval beyond 2^31-1 ms', { host: 'web', keepaliveInterval: 2 ** 31 }, RangeError, 'host "web": option keepaliveInterval must be at most 2147483647 ms (about 24.8 days, the longest timer Node.js can set), got 2147483648'],
  ['a connectTimeout beyond 2^31-1 ms', { host: 'web', connectTimeout: 3e9 }, RangeError, 'host "web": option connectTimeout must be at most 2147483647 ms (about 24.8 days, the longest timer Node.js can set), got 3000000000'],
  ['a globalKnownHostsFile that is not a path', { host: 'web', globalKnownHostsFile: [''] }, TypeError, 'host "web": option globalKnownHostsFile must be a path or a non-empty array of paths'],
  ['an empty user', { host: 'web', user: '' }, TypeError, 'host "web": option user must be a non-empty string, got ""'],
  ['a misspelt option', { host: 'web', identityfile: '~/k' }, TypeError, 'host "web": unknown option "identityfile" (known: host, user, port,'],
  ['no host', { user: 'alice' }, TypeError, 'option host must be an SSH destination string, got undefined'],
  ['null', null, TypeError, 'expected an SSH destination string or a HostOptions object, got null'],
  ['a bad destination in host', { host: 'web:0' }, TypeError, 'invalid SSH destination "web:0": the port must be an integer from 1 to 65535, got "0"'],
  ['a user that conflicts with the destination', { host: 'bob@web', user: 'alice' }, TypeError, 'host "bob@web": option user "alice" conflicts with the user "bob" in the destination'],
  ['a port that conflicts with the destination', { host: 'web:2222', port: 22 }, TypeError, 'host "web:2222": option port 22 conflicts with the port 2222 in the destination'],
]

for (const [what, options, type, message] of badOptions) {
  opts(`refuses ${what}, saying what was expected and what arrived`, async () => {
    const err = await rejection(resolve(options as HostOptions, homeWith({})))
    assert.instance(err, type)
    assert.match(err.message, message)
  })
}

config.run()
include.run()
jump.run()
keys.run()
opts.run()
