import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { rejection, tempDir, thrown } from './helpers.ts'
import { FarpipeError, ProtocolError } from '../lib/errors.ts'
import {
  appendKnownHost,
  checkHostKey,
  fingerprint,
  hostEntries,
  keyTypeOf,
  knownHostsLine,
  knownKeyTypes,
  parseKnownHosts,
  readKnownHosts,
  type KnownHostEntry,
} from '../lib/ssh/known-hosts.ts'

// Real keys from the real ssh-keygen, and OpenSSH itself (`ssh-keygen -F`,
// `-H`, `-lf`) as the oracle wherever it can answer.

const keyDir = tempDir('farpipe-known-hosts-')

interface TestKey {
  /** The .pub file. */
  pub: string
  /** `keytype base64`, as a known_hosts line wants it. */
  text: string
  type: string
  blob: Buffer
}

function makeKey(name: string, ...args: string[]): TestKey {
  const file = path.join(keyDir, name)
  execFileSync('ssh-keygen', ['-q', '-N', '', '-C', name, '-f', file, ...args])
  const [type, base64] = readFileSync(`${file}.pub`, 'utf8').trim().split(' ') as [string, string]
  return { pub: `${file}.pub`, text: `${type} ${base64}`, type, blob: Buffer.from(base64, 'base64') }
}

const ed = makeKey('ed', '-t', 'ed25519')
const ed2 = makeKey('ed2', '-t', 'ed25519')
const rsa = makeKey('rsa', '-t', 'rsa', '-b', '2048')
const ecdsa = makeKey('ecdsa', '-t', 'ecdsa')
const stolen = makeKey('stolen', '-t', 'ed25519')
const keys = { ed, ed2, rsa, ecdsa, stolen }

/** Writes a known_hosts file into a fresh directory; returns its path. */
function writeKnownHosts(lines: string[], name = 'known_hosts'): string {
  const file = path.join(tempDir(), name)
  writeFileSync(file, lines.join('\n') + '\n')
  return file
}

/** The line numbers `ssh-keygen -F name -f file` reports as matching name. */
function sshKeygenFind(name: string, file: string): number[] {
  const out = spawnSync('ssh-keygen', ['-F', name, '-f', file], { encoding: 'utf8' })
  return [...out.stdout.matchAll(/found: line (\d+)/g)].map((m) => Number(m[1]))
}

/**
 * Whether ssh could use a line for host.example: `ssh-keygen -F` matches the
 * name but never parses the key, `ssh-keygen -l` parses the key but ignores
 * the name, so a line is usable only if both accept it.
 */
function openSshUses(line: string): boolean {
  const file = writeKnownHosts([line])
  return sshKeygenFind('host.example', file).length > 0 && spawnSync('ssh-keygen', ['-lf', file]).status === 0
}

const lines = (entries: KnownHostEntry[]) => entries.map((e) => e.line)

const parse = suite('parseKnownHosts')

parse('reads marker, host field, key type and key of each line, with file and 1-based line number', () => {
  const text = [
    '# a comment',
    '',
    `plain.example ${ed.text}`,
    `  \t[127.0.0.1]:2222,other.example\t${rsa.text}   a trailing comment`,
    `@revoked * ${stolen.text}`,
    `@cert-authority *.ca.example ${ecdsa.text}`,
    '   # an indented comment',
  ].join('\n')
  const entries = parseKnownHosts(text, '/etc/ssh/ssh_known_hosts')
  assert.equal(entries, [
    { file: '/etc/ssh/ssh_known_hosts', line: 3, patterns: 'plain.example', keyType: 'ssh-ed25519', key: ed.blob },
    { file: '/etc/ssh/ssh_known_hosts', line: 4, patterns: '[127.0.0.1]:2222,other.example', keyType: 'ssh-rsa', key: rsa.blob },
    { file: '/etc/ssh/ssh_known_hosts', line: 5, marker: '@revoked', patterns: '*', keyType: 'ssh-ed25519', key: stolen.blob },
    { file: '/etc/ssh/ssh_known_hosts', line: 6, marker: '@cert-authority', patterns: '*.ca.example', keyType: 'ecdsa-sha2-nistp256', key: ecdsa.blob },
  ])
})

parse('reads files with CRLF line ends', () => {
  const entries = parseKnownHosts(`a.example ${ed.text}\r\nb.example ${rsa.text}\r\n`)
  assert.equal(lines(entries), [1, 2])
  assert.equal(entries[1]!.key, rsa.blob)
})

/** Lines OpenSSH cannot use either; each is parsed between two good lines. */
const malformed: { name: string; line: string }[] = [
  { name: 'host only', line: 'host.example' },
  { name: 'no key', line: `host.example ${ed.type}` },
  { name: 'base64 with a stray character', line: `host.example ${ed.type} ${ed.text.split(' ')[1]!.slice(0, 10)}!${ed.text.split(' ')[1]!.slice(10)}` },
  { name: 'base64 without its padding', line: `host.example ${rsa.type} ${rsa.text.split(' ')[1]!.replace(/=+$/, '')}x` },
  { name: 'key type that disagrees with the blob', line: `host.example ssh-rsa ${ed.text.split(' ')[1]}` },
  { name: 'blob too short for a key type', line: 'host.example ssh-ed25519 AAAA' },
  { name: 'blob whose type length runs past its end', line: `host.example ssh-ed25519 ${Buffer.from([0, 0, 1, 0, 0x61]).toString('base64')}` },
  { name: 'unknown marker', line: `@trusted host.example ${ed.text}` },
  { name: 'two markers', line: `@revoked @revoked host.example ${ed.text}` },
  { name: 'marker alone', line: '@revoked' },
  { name: 'SSH-1 RSA line (bits, exponent, modulus)', line: 'host.example 1024 35 1234567890123456789' },
  { name: 'hashed name with an unknown version', line: `|2|${'A'.repeat(27)}=|${'A'.repeat(27)}= ${ed.text}` },
  { name: 'hashed name with a 16-byte salt', line: `|1|${Buffer.alloc(16).toString('base64')}|${Buffer.alloc(20).toString('base64')} ${ed.text}` },
  { name: 'hashed name without its MAC', line: `|1|${Buffer.alloc(20).toString('base64')} ${ed.text}` },
]

for (const { name, line } of malformed) {
  parse(`skips a malformed line without throwing: ${name}`, () => {
    const entries = parseKnownHosts([`before.example ${ed.text}`, line, `after.example ${rsa.text}`].join('\n'), 'kh')
    assert.equal(lines(entries), [1, 3])
    assert.not.ok(openSshUses(line), 'OpenSSH would use this line')
  })
}

parse('counts a good line as usable by OpenSSH (the control for the malformed cases)', () => {
  assert.ok(openSshUses(`host.example ${ed.text}`))
  assert.ok(openSshUses(knownHostsLine('host.example', 22, rsa.blob, { hash: true })))
})

const check = suite('checkHostKey')

/** One known_hosts file that every case below is checked against. */
const fixtureLines = [
  '# farpipe spec',
  `plain.example ${ed.text}`,
  `[127.0.0.1]:2222 ${rsa.text}`,
  `127.0.0.1 ${ecdsa.text}`,
  `*.wild.example,!bad.wild.example ${ecdsa.text}`,
  `host?.example ${rsa.text}`,
  `MixedCase.Example ${ed.text}`,
  `@revoked nowhere.example ${stolen.text}`,
  `@cert-authority *.ca.example ${ed.text}`,
  `both.example ${ed.text}`,
  `both.example ${rsa.text}`,
]
const fixtureFile = writeKnownHosts(fixtureLines)
const fixture = parseKnownHosts(readFileSync(fixtureFile, 'utf8'), fixtureFile)

/** `lines`: the entry's line for known and revoked, the expected lines for changed. */
const cases: { name: string; host: string; port: number; key: keyof typeof keys; status: string; lines?: number[] }[] = [
  { name: 'finds a plain host on port 22', host: 'plain.example', port: 22, key: 'ed', status: 'known', lines: [2] },
  { name: 'compares host names case-insensitively', host: 'PLAIN.Example', port: 22, key: 'ed', status: 'known', lines: [2] },
  { name: 'lowercases the host patterns too', host: 'mixedcase.example', port: 22, key: 'ed', status: 'known', lines: [7] },
  { name: 'finds a [host]:port entry on its port', host: '127.0.0.1', port: 2222, key: 'rsa', status: 'known', lines: [3] },
  { name: 'finds a plain entry for the same address on port 22', host: '127.0.0.1', port: 22, key: 'ecdsa', status: 'known', lines: [4] },
  { name: 'does not apply a [host]:port entry to another port', host: '127.0.0.1', port: 2223, key: 'rsa', status: 'unknown' },
  { name: 'does not apply a plain entry to another port', host: 'plain.example', port: 2222, key: 'ed', status: 'unknown' },
  { name: 'matches * across dots', host: 'a.b.wild.example', port: 22, key: 'ecdsa', status: 'known', lines: [5] },
  { name: 'excludes a host named by a negated pattern even though * matches it', host: 'bad.wild.example', port: 22, key: 'ecdsa', status: 'unknown' },
  { name: 'negated patterns are case-insensitive too', host: 'BAD.wild.EXAMPLE', port: 22, key: 'ecdsa', status: 'unknown' },
  { name: 'matches ? with exactly one character', host: 'host1.example', port: 22, key: 'rsa', status: 'known', lines: [6] },
  { name: 'does not match ? with two characters', host: 'host12.example', port: 22, key: 'rsa', status: 'unknown' },
  { name: 'reports a different key of the same type as changed', host: 'plain.example', port: 22, key: 'ed2', status: 'changed', lines: [2] },
  { name: 'reports a key of another type as changed, as OpenSSH does', host: 'plain.example', port: 22, key: 'rsa', status: 'changed', lines: [2] },
  { name: 'finds the matching key among several lines for one host', host: 'both.example', port: 22, key: 'rsa', status: 'known', lines: [11] },
  { name: 'lists every line for the host when none holds the key', host: 'both.example', port: 22, key: 'ed2', status: 'changed', lines: [10, 11] },
  { name: 'reports an unnamed host as unknown', host: 'other.example', port: 22, key: 'ed', status: 'unknown' },
  { name: 'reports a revoked key as revoked for a host its line does not name', host: 'plain.example', port: 22, key: 'stolen', status: 'revoked', lines: [8] },
  { name: 'reports a revoked key as revoked for an unknown host', host: 'other.example', port: 2222, key: 'stolen', status: 'revoked', lines: [8] },
  { name: 'ignores @cert-authority lines', host: 'x.ca.example', port: 22, key: 'ed', status: 'unknown' },
]

for (const c of cases) {
  check(c.name, () => {
    const result = checkHostKey(fixture, c.host, c.port, keys[c.key].blob)
    assert.is(result.status, c.status)
    if (result.status === 'known' || result.status === 'revoked') assert.equal([result.entry.line], c.lines)
    if (result.status === 'changed') assert.equal(lines(result.expected), c.lines)
    if (result.status !== 'unknown') assert.ok(c.lines, 'a case that finds lines says which')
  })
}

check('finds the same lines as ssh-keygen -F for every case', () => {
  for (const c of cases) {
    const name = c.port === 22 ? c.host : `[${c.host}]:${c.port}`
    const ours = lines(hostEntries(fixture, c.host, c.port))
    // ssh-keygen -F also lists @revoked and @cert-authority lines; hostEntries leaves them to checkHostKey.
    const marked = new Set(lines(fixture.filter((e) => e.marker)))
    const theirs = sshKeygenFind(name, fixtureFile).filter((n) => !marked.has(n))
    assert.equal(ours, theirs, name)
  }
})

check('finds known_hosts lines spread over several files in file order', () => {
  const first = parseKnownHosts(`host.example ${ed.text}`, 'first')
  const second = parseKnownHosts(`host.example ${rsa.text}`, 'second')
  const result = checkHostKey([...first, ...second], 'host.example', 22, ed2.blob)
  assert.is(result.status, 'changed')
  if (result.status === 'changed') assert.equal(result.expected.map((e) => e.file), ['first', 'second'])
})

const hashed = suite('hashed names')

hashed('finds hosts in a file hashed by ssh-keygen -H', () => {
  const file = writeKnownHosts([
    `plain.example ${ed.text}`,
    `[127.0.0.1]:2222,MixedCase.Example ${rsa.text}`,
    `*.wild.example ${ecdsa.text}`,
  ])
  execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' })
  const entries = parseKnownHosts(readFileSync(file, 'utf8'), file)
  // One hashed line per name; lines with wildcards cannot be hashed and stay as they were.
  assert.equal(entries.map((e) => e.patterns.startsWith('|1|')), [true, true, true, false])
  const known = (host: string, port: number, key: TestKey) => {
    const r = checkHostKey(entries, host, port, key.blob)
    return r.status === 'known' ? r.entry.line : r.status
  }
  assert.is(known('plain.example', 22, ed), 1)
  assert.is(known('127.0.0.1', 2222, rsa), 2)
  assert.is(known('mixedcase.example', 22, rsa), 3)
  assert.is(known('MIXEDCASE.example', 22, rsa), 3)
  assert.is(known('a.wild.example', 22, ecdsa), 4)
  assert.is(known('plain.example', 2222, ed), 'unknown')
  assert.is(known('127.0.0.1', 22, rsa), 'unknown')
  assert.is(known('plain.example', 22, ed2), 'changed')
})

hashed('writes hashed lines that ssh-keygen -F finds, and only for their own name', () => {
  const line = knownHostsLine('127.0.0.1', 2222, ed.blob, { hash: true })
  assert.match(line, /^\|1\|[A-Za-z0-9+/]{27}=\|[A-Za-z0-9+/]{27}= ssh-ed25519 /)
  const file = writeKnownHosts([`other.example ${rsa.text}`, line])
  assert.equal(sshKeygenFind('[127.0.0.1]:2222', file), [2])
  assert.equal(sshKeygenFind('[127.0.0.1]:2223', file), [])
  assert.equal(sshKeygenFind('127.0.0.1', file), [])
  const entries = parseKnownHosts(readFileSync(file, 'utf8'))
  assert.is(checkHostKey(entries, '127.0.0.1', 2222, ed.blob).status, 'known')
  assert.is(checkHostKey(entries, '127.0.0.1', 22, ed.blob).status, 'unknown')
})

hashed('hashes the lowercased name, as ssh does, so a differently cased lookup still finds it', () => {
  const file = writeKnownHosts([knownHostsLine('Build.Example', 22, ed.blob, { hash: true })])
  assert.equal(sshKeygenFind('build.example', file), [1])
  assert.is(checkHostKey(parseKnownHosts(readFileSync(file, 'utf8')), 'BUILD.EXAMPLE', 22, ed.blob).status, 'known')
})

hashed('uses a fresh salt for every line', () => {
  const a = knownHostsLine('host.example', 22, ed.blob, { hash: true })
  const b = knownHostsLine('host.example', 22, ed.blob, { hash: true })
  assert.is.not(a, b)
})

const line = suite('knownHostsLine')

line('writes host keytype base64 on port 22 and [host]:port on any other', () => {
  assert.is(knownHostsLine('build.example', 22, ed.blob), `build.example ${ed.text}`)
  assert.is(knownHostsLine('127.0.0.1', 2222, rsa.blob), `[127.0.0.1]:2222 ${rsa.text}`)
  assert.is(knownHostsLine('::1', 2222, ecdsa.blob), `[::1]:2222 ${ecdsa.text}`)
})

line('writes lines that ssh-keygen -F and parseKnownHosts both read back', () => {
  const file = writeKnownHosts([knownHostsLine('build.example', 22, ed.blob), knownHostsLine('127.0.0.1', 2222, rsa.blob)])
  assert.equal(sshKeygenFind('build.example', file), [1])
  assert.equal(sshKeygenFind('[127.0.0.1]:2222', file), [2])
  const entries = parseKnownHosts(readFileSync(file, 'utf8'))
  assert.equal(entries.map((e) => e.key), [ed.blob, rsa.blob])
})

line('refuses host names that would become patterns, comments or several names', () => {
  for (const host of ['', 'a b', 'a,b', '*.example', 'host?', '!host', '#host', '@revoked', '|1|x']) {
    const err = thrown(() => knownHostsLine(host, 22, ed.blob))
    assert.instance(err, FarpipeError, host)
    assert.match(err.message, `host ${JSON.stringify(host)}`)
  }
})

line('refuses a port outside 0 to 65535', () => {
  const err = thrown(() => knownHostsLine('host.example', 70000, ed.blob))
  assert.instance(err, FarpipeError)
  assert.match(err.message, 'port 70000 for host host.example')
})

const keyFacts = suite('fingerprint and keyTypeOf')

keyFacts('prints the same SHA256 fingerprint as ssh-keygen -lf', () => {
  for (const key of [ed, rsa, ecdsa]) {
    const theirs = execFileSync('ssh-keygen', ['-lf', key.pub], { encoding: 'utf8' }).split(' ')[1]
    assert.is(fingerprint(key.blob), theirs, key.type)
  }
})

keyFacts('reads the key type at the start of the blob', () => {
  assert.equal([ed, rsa, ecdsa].map((k) => keyTypeOf(k.blob)), ['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256'])
})

keyFacts('refuses blobs too short for their key type, saying how long they are', () => {
  const tooShort = thrown(() => keyTypeOf(Buffer.from([0, 0, 0])))
  assert.instance(tooShort, ProtocolError)
  assert.match(tooShort.message, 'host key blob of 3 bytes is too short')
  const overrun = thrown(() => keyTypeOf(Buffer.from([0, 0, 0, 11, 0x73, 0x73, 0x68])))
  assert.instance(overrun, ProtocolError)
  assert.match(overrun.message, 'host key blob of 7 bytes declares a key type of 11 bytes')
})

const types = suite('knownKeyTypes')

types('lists the key types known for a host in file order, each once', () => {
  const entries = parseKnownHosts(
    [`h.example ${rsa.text}`, `other.example ${ecdsa.text}`, `h.example ${ed.text}`, `*.example ${rsa.text}`, `h.example ${ed2.text}`].join('\n'),
  )
  assert.equal(knownKeyTypes(entries, 'h.example', 22), ['ssh-rsa', 'ssh-ed25519'])
})

types('leaves out @revoked and @cert-authority lines, other ports and other hosts', () => {
  const entries = parseKnownHosts(
    [`@revoked h.example ${rsa.text}`, `@cert-authority h.example ${ecdsa.text}`, `[h.example]:2222 ${ed.text}`, `g.example ${ed.text}`].join('\n'),
  )
  assert.equal(knownKeyTypes(entries, 'h.example', 22), [])
  assert.equal(knownKeyTypes(entries, 'h.example', 2222), ['ssh-ed25519'])
})

const read = suite('readKnownHosts')

read('reads several files in the order given and skips missing ones', async () => {
  const a = writeKnownHosts([`a.example ${ed.text}`])
  const b = writeKnownHosts(['# nothing yet', `b.example ${rsa.text}`])
  const entries = await readKnownHosts([path.join(tempDir(), 'missing'), b, '/nonexistent/dir/known_hosts', a])
  assert.equal(entries.map((e) => `${e.file}:${e.line}`), [`${b}:2`, `${a}:1`])
})

read('expands a leading ~ to the home directory', async () => {
  const home = tempDir()
  mkdirSync(path.join(home, '.ssh'))
  writeFileSync(path.join(home, '.ssh', 'known_hosts'), `home.example ${ed.text}\n`)
  const saved = process.env.HOME
  process.env.HOME = home
  try {
    const entries = await readKnownHosts(['~/.ssh/known_hosts', '~/.ssh/known_hosts2'])
    assert.equal(entries.map((e) => `${e.file}:${e.patterns}`), [`${path.join(home, '.ssh', 'known_hosts')}:home.example`])
  } finally {
    process.env.HOME = saved
  }
})

read('rejects, naming the file, when a file exists but cannot be read', async () => {
  const dir = tempDir()
  const err = await rejection(readKnownHosts([dir]))
  assert.instance(err, FarpipeError)
  assert.match(err.message, `cannot read known_hosts file ${dir}`)
  assert.is(err.cause.code, 'EISDIR')
})

const append = suite('appendKnownHost')

const mode = (file: string) => statSync(file).mode & 0o777

append('creates missing directories with mode 0700 and the file with mode 0600', async () => {
  const root = tempDir()
  const file = path.join(root, 'home', '.ssh', 'known_hosts')
  await appendKnownHost(file, knownHostsLine('new.example', 22, ed.blob))
  assert.is(mode(path.join(root, 'home')), 0o700)
  assert.is(mode(path.join(root, 'home', '.ssh')), 0o700)
  assert.is(mode(file), 0o600)
  assert.is(readFileSync(file, 'utf8'), `new.example ${ed.text}\n`)
})

append('adds the missing newline of a file before appending, so the last line stays intact', async () => {
  const file = path.join(tempDir(), 'known_hosts')
  writeFileSync(file, `old.example ${rsa.text}`)
  await appendKnownHost(file, knownHostsLine('new.example', 22, ed.blob))
  assert.is(readFileSync(file, 'utf8'), `old.example ${rsa.text}\nnew.example ${ed.text}\n`)
  assert.equal(parseKnownHosts(readFileSync(file, 'utf8')).map((e) => e.patterns), ['old.example', 'new.example'])
})

append('adds no blank line to a file that ends with a newline, nor to an empty file', async () => {
  const file = path.join(tempDir(), 'known_hosts')
  writeFileSync(file, '')
  await appendKnownHost(file, 'a.example ' + ed.text)
  await appendKnownHost(file, 'b.example ' + rsa.text)
  assert.is(readFileSync(file, 'utf8'), `a.example ${ed.text}\nb.example ${rsa.text}\n`)
})

append('leaves the mode of an existing file alone', async () => {
  const file = path.join(tempDir(), 'known_hosts')
  writeFileSync(file, '', { mode: 0o644 })
  await appendKnownHost(file, 'a.example ' + ed.text)
  assert.is(mode(file), 0o644)
})

append('refuses a line with a line break and leaves the file untouched', async () => {
  const file = writeKnownHosts([`a.example ${ed.text}`])
  const before = readFileSync(file, 'utf8')
  const err = await rejection(appendKnownHost(file, `b.example ${ed.text}\n* ${ed.text}`))
  assert.instance(err, FarpipeError)
  assert.match(err.message, `refusing to append to ${file}: the line has a line break at index`)
  assert.is(readFileSync(file, 'utf8'), before)
})

parse.run()
check.run()
hashed.run()
line.run()
keyFacts.run()
types.run()
read.run()
append.run()
