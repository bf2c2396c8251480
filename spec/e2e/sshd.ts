// A real OpenSSH sshd for the SSH specs, started on a free loopback port from
// files in temporary directories: its own sshd_config, host key,
// authorized_keys, log and pid file, and on the client side a HOME with
// .ssh/config, a key and known_hosts. The system's sshd and ssh configs are
// never used (sshd -f, ssh -F), and nothing outside the temp dirs is written
// except /run/sshd, which Debian's sshd needs and the openssh-server package
// would create anyway.
//
// Remote sessions get their own HOME as well. `SetEnv HOME=...` in
// sshd_config does override HOME: sshd applies SetEnv after the variables it
// sets itself, so bash reads <remoteHome>/.bashrc and ~/.cache means
// <remoteHome>/.cache (the spec checks both). SetEnv cannot change the
// directory sshd starts the shell in, though: that is always the passwd home
// (/root here). So a ForceCommand wrapper, which sshd runs as
// `$SHELL -c <wrapper>`, first `cd "$HOME"`s and then execs the requested
// command the way sshd would have, `$SHELL -c "$SSH_ORIGINAL_COMMAND"` (a
// login shell when none was requested). For bash it passes `--norc`, because
// the wrapper's own bash has already sourced ~/.bashrc and bash's exec
// lowers SHLVL, so the second bash would source it again; and `-a bash`, so
// "$0" stays what sshd sets. An `eval` instead would cost an extra bash
// process above the command. With exec the pids and process tree are the
// ones plain sshd makes, and the command sees the same environment (SHLVL=1).
// The login shell can be another one (`shell`, set with SetEnv SHELL, as a
// user whose passwd entry names csh, tcsh or fish would have it): the
// wrapper then execs it plainly, `$SHELL -c "$SSH_ORIGINAL_COMMAND"`.
// The wrapper also records its pid, which is the command's session id (sshd
// setsid()s each command), so stop() can kill what a session left behind even
// after its sshd was killed. What it does not keep: the sftp subsystem
// (ForceCommand would replace it, so there is none).
//
// The process tree under the listener, with OpenSSH 9.2 logging in as root:
// one `sshd: root@notty` process per connection (root logins skip the
// privilege-separated child), whose child is the command. Before
// authentication that process has a short-lived `sshd: root [net]` child.
// Logging in as another user adds a privileged monitor (`sshd: user [priv]`)
// between the listener and `sshd: user@notty`, and OpenSSH 9.8+ runs
// connections in `sshd-session` instead of `sshd`; sessionPids() covers all
// of these by listing every sshd* process under the listener.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  accessSync,
  appendFileSync,
  chmodSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { createConnection, createServer } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import * as path from 'node:path'
import { promisify } from 'node:util'
import { suite } from 'uvu'

const run = promisify(execFile)

/** Where sshd usually lives when it is not on PATH (it is in sbin, which a user's PATH may lack). */
const SSHD_DIRS = ['/usr/sbin', '/usr/local/sbin', '/opt/homebrew/sbin', '/usr/bin', '/usr/local/bin']

/** The sshd binary, or undefined when OpenSSH's server is not installed (the SSH specs then skip). */
export function findSshd(): string | undefined {
  const dirs = [...SSHD_DIRS, ...(process.env.PATH ?? '').split(path.delimiter)]
  for (const dir of dirs) {
    if (!path.isAbsolute(dir)) continue
    const file = path.join(dir, 'sshd')
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch {}
  }
  return undefined
}

/**
 * For a spec file of SSH suites: true when sshd is not installed, after
 * registering one skipped suite named `name` that says so (a file that
 * runs no test would fail the runner).
 */
export function noSshd(name: string): boolean {
  if (findSshd()) return false
  console.log(`sshd not installed: skipping ${name}`)
  const s = suite(name)
  s.skip(`${name} (sshd not installed)`, () => {})
  s.run()
  return true
}

/** Makes `home` this process's HOME, where the pool reads ~/.ssh (config, keys, known_hosts), with no agent to offer other keys. */
export function useClientHome(home: string): void {
  process.env.HOME = home
  delete process.env.SSH_AUTH_SOCK
}

/** How to start a test sshd. */
export interface SshdOptions {
  /**
   * Host alias written into the client config.
   * @default 'farpipe-test'
   */
  alias?: string
  /**
   * Share the client HOME (keys, ~/.ssh/config, known_hosts) with another
   * sshd, e.g. for ProxyJump: its key is authorized here and this sshd's Host
   * block and host key are appended.
   * @default a new temp dir
   */
  home?: string
  /**
   * Host key algorithm.
   * @default 'ed25519'
   */
  hostKeyType?: 'ed25519' | 'rsa' | 'ecdsa'
  /**
   * The loopback address to listen on (127.0.0.1, 127.0.0.2, …: each a
   * host of its own for a pool of several hosts).
   * @default '127.0.0.1'
   */
  address?: string
  /** Put at the top of sshd_config, so its keywords win over the harness's (sshd takes the first value of a keyword). */
  extraConfig?: string
  /** More environment for remote sessions (one SetEnv line with HOME), e.g. a PATH without node. */
  env?: Record<string, string>
  /**
   * The remote user's login shell, which runs every command (`$SHELL -c
   * command`), e.g. '/usr/bin/tcsh' or '/usr/bin/fish'.
   * @default the user's own (from the passwd file)
   */
  shell?: string
  /**
   * Write the host key into the client's known_hosts.
   * @default true
   */
  trustHostKey?: boolean
}

/** What `Sshd.ssh()` resolves to. */
export interface SshResult {
  /** The ssh client's exit code (255 for connection errors), or null when it was killed by a signal. */
  code: number | null
  stdout: Buffer
  stderr: string
}

/** Options for `Sshd.ssh()`. */
export interface SshRunOptions {
  /** Written to the client's stdin, which is then closed (it is closed at once without input). */
  input?: Buffer | string
  /**
   * Milliseconds before the client is killed and the promise rejects.
   * @default 10000
   */
  timeout?: number
  /** Extra environment for the client, e.g. SSH_AUTH_SOCK (which is otherwise removed). */
  env?: Record<string, string>
  /**
   * The Host alias to log in to, e.g. one written by `viaProxy()`.
   * @default the sshd's own alias
   */
  alias?: string
}

/** A running test sshd and the client side that logs into it. */
export interface Sshd {
  /** The loopback address it listens on. */
  host: string
  port: number
  /** Usable as a destination: HOME/.ssh/config has `Host <alias>` with HostName, Port, User and IdentityFile. */
  alias: string
  /** The local user name; the harness logs in as the current user. */
  user: string
  /** Client HOME: .ssh/config, .ssh/id_ed25519(.pub), .ssh/known_hosts, with the modes OpenSSH wants. */
  home: string
  /** The HOME (and working directory) remote sessions get. */
  remoteHome: string
  /** Path of the client private key. */
  clientKey: string
  /** The host public key line without comment, e.g. 'ssh-ed25519 AAAA...'. */
  hostKeyPublic: string
  /** 'SHA256:...' as `ssh-keygen -lf` prints it. */
  hostKeyFingerprint: string
  /** The sshd's own temp dir: sshd_config, host key, authorized_keys, sshd.pid, sshd.log, remote home. */
  dir: string
  /** The listening sshd's pid. */
  pid: number
  /** sshd's log so far (LogLevel VERBOSE). */
  log(): string
  /** Pids of the sshd processes serving connections (every sshd* process under `pid`; one per connection as root). */
  sessionPids(): number[]
  /** Runs `ssh -F <home>/.ssh/config -o BatchMode=yes <alias> ...args` with HOME=<home> and no SSH_AUTH_SOCK. */
  ssh(args: string[], options?: SshRunOptions): Promise<SshResult>
  /**
   * Appends to the client's ~/.ssh/config a `Host <alias>` block like this
   * sshd's own (same User, IdentityFile, known_hosts and options) but with
   * HostName 127.0.0.1 and Port `port`, e.g. a TCP proxy's in front of this
   * sshd. `HostKeyAlias [<host>]:<sshd port>` makes both OpenSSH and farpipe
   * look the host key up under the name this sshd's known_hosts line has,
   * so the proxied alias trusts the same key and nothing else.
   */
  viaProxy(port: number, alias: string): void
  /**
   * Restarts the sshd on the same address and port, with the same config and
   * host key; resolves once it accepts connections again. On a running sshd
   * it is a crash and restart of the server: the listener and every sshd
   * process serving a connection are killed (their clients see the
   * connection close), while the commands those connections started keep
   * running, orphaned (stop() still kills them). On a stopped sshd it only
   * starts it again.
   */
  restart(): Promise<void>
  /** SIGTERMs the listener (SIGKILL after 2 s), kills what sessions are left, waits until the port is closed. Safe to call twice. */
  stop(): Promise<void>
}

// Everything the harness started, so that a failing spec leaves nothing
// running: the exit hook kills what stop() did not get to, then removes the
// temp dirs (stop() keeps them so log() still works).
const killers = new Set<() => void>()
const ownDirs: string[] = []
let hooked = false

function track(kill: () => void): () => void {
  if (!hooked) {
    hooked = true
    process.on('exit', () => {
      for (const k of killers) k()
      for (const d of ownDirs) rmSync(d, { recursive: true, force: true })
    })
  }
  killers.add(kill)
  return () => killers.delete(kill)
}

function ownTempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  ownDirs.push(dir)
  return dir
}

/** Whether `pid` is a process that has not exited (a zombie has). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {}
}

/** The environment for OpenSSH tools: HOME pointed at a temp dir, no agent unless given. */
function toolEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home }
  delete env.SSH_AUTH_SOCK
  delete env.SSH_AGENT_PID
  return Object.assign(env, extra)
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Resolves true once `child` has exited, false after `ms`. */
function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true)
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      resolve(true)
    }
    const timer = setTimeout(() => {
      child.off('exit', done)
      resolve(false)
    }, ms)
    child.once('exit', done)
  })
}

// ── /proc ────────────────────────────────────────────────────────────────

interface Proc {
  pid: number
  ppid: number
  /** Session id: the pid of the process that called setsid(). */
  sid: number
  state: string
  comm: string
}

/** Every process, from /proc/<pid>/stat (no ps or pgrep needed). */
function processes(): Proc[] {
  const out: Proc[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8')
    } catch {
      continue // exited meanwhile
    }
    // comm may hold spaces and parens; it ends at the last ')'.
    const close = stat.lastIndexOf(')')
    const [state = '', ppid, , sid] = stat.slice(close + 2).split(' ')
    out.push({ pid: Number(name), ppid: Number(ppid), sid: Number(sid), state, comm: stat.slice(stat.indexOf('(') + 1, close) })
  }
  return out
}

/** Pids under `root` (not root itself), walking only through processes `through` accepts. */
function descendants(root: number, procs: Proc[], through: (p: Proc) => boolean = () => true): number[] {
  const out: number[] = []
  const queue = [root]
  for (let parent = queue.shift(); parent !== undefined; parent = queue.shift()) {
    for (const p of procs) {
      if (p.ppid !== parent || p.state === 'Z' || !through(p)) continue
      out.push(p.pid)
      queue.push(p.pid)
    }
  }
  return out
}

// ── sshd ─────────────────────────────────────────────────────────────────

/** Generates an unencrypted key pair at `file` and `file.pub`. */
async function keygen(type: 'ed25519' | 'rsa' | 'ecdsa', file: string, comment: string): Promise<void> {
  // Smaller RSA than the default 3072 bits: generating it is most of the start time.
  const bits = type === 'rsa' ? ['-b', '2048'] : type === 'ecdsa' ? ['-b', '256'] : []
  await run('ssh-keygen', ['-q', '-t', type, ...bits, '-N', '', '-C', comment, '-f', file], { env: toolEnv(path.dirname(file)) })
}

/** 'SHA256:<unpadded base64>' of a public key line, the same string `ssh-keygen -lf` prints. */
function fingerprint(publicKey: string): string {
  const blob = Buffer.from(publicKey.split(' ')[1] ?? '', 'base64')
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')
}

/** A port nothing listens on right now. Another process may take it before sshd does; startSshd retries. */
function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.on('error', reject)
    server.listen(0, address, () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** Resolves once nothing accepts connections on `port`. */
async function portClosed(address: string, port: number, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: address, port })
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (!open) return
    if (Date.now() > end) throw new Error(`port ${port} still accepts connections ${ms} ms after sshd was stopped`)
    await sleep(10)
  }
}

/** OpenSSH's version as a number like 9.2, or 0 when sshd -V does not say. */
async function sshdVersion(sshd: string): Promise<number> {
  const out = await run(sshd, ['-V']).catch((err: { stderr?: string }) => ({ stderr: err.stderr ?? '' }))
  const m = /OpenSSH_(\d+)\.(\d+)/.exec(out.stderr)
  return m ? Number(`${m[1]}.${m[2]}`) : 0
}

/** `sshd -t` on the config; creates /run/sshd when that is all it lacks. Throws sshd's own error otherwise. */
async function checkConfig(sshd: string, config: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await run(sshd, ['-t', '-f', config])
      return
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? err).trim()
      // Debian's sshd wants its privilege separation dir, which the package's
      // init script would create at boot; it is the one system path we touch.
      if (attempt === 0 && stderr.includes('Missing privilege separation directory: /run/sshd')) {
        mkdirSync('/run/sshd', { mode: 0o755 })
        continue
      }
      throw new Error(`sshd -t -f ${config} refused the test config: ${stderr}`)
    }
  }
}

function sshdConfig(o: { address: string; port: number; dir: string; user: string; remoteHome: string; version: number; extra?: string; env?: Record<string, string>; shell?: string }): string {
  const q = (s: string) => `"${s}"`
  // Runs the requested command the way sshd would (`$SHELL -c`), but from
  // the remote HOME; see the comment at the top of this file.
  // The bash case applies when bash runs the wrapper and is also the login
  // shell; another login shell given with `shell` (SetEnv SHELL) is run
  // plainly, as sshd would.
  const wrapper =
    `echo $$ >> '${o.dir}/sessions'; cd "$HOME" || exit 1; ` +
    'if [ -z "${SSH_ORIGINAL_COMMAND+set}" ]; then exec "$SHELL" -l; ' +
    'elif [ -n "$BASH_VERSION" ] && [ "${SHELL##*/}" = bash ]; then exec -a "${SHELL##*/}" "$SHELL" --norc -c "$SSH_ORIGINAL_COMMAND"; ' +
    'else exec "$SHELL" -c "$SSH_ORIGINAL_COMMAND"; fi'
  return [
    '# Written by spec/e2e/sshd.ts for one test sshd.',
    o.extra ?? '',
    `ListenAddress ${o.address}`,
    `Port ${o.port}`,
    'AddressFamily inet',
    `HostKey ${q(path.join(o.dir, 'host_key'))}`,
    `PidFile ${q(path.join(o.dir, 'sshd.pid'))}`,
    `AuthorizedKeysFile ${q(path.join(o.dir, 'authorized_keys'))}`,
    // The key files live in /tmp, which StrictModes would reject.
    'StrictModes no',
    'UsePAM no',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'HostbasedAuthentication no',
    'PubkeyAuthentication yes',
    'PermitRootLogin prohibit-password',
    `AllowUsers ${o.user}`,
    // Many connections at once, e.g. a pool opening several workers.
    'MaxSessions 64',
    'MaxStartups 64:30:100',
    // Newer sshd penalizes addresses whose connections fail or are killed,
    // which specs do on purpose.
    ...(o.version >= 9.8 ? ['PerSourcePenalties no'] : []),
    'UseDNS no',
    'PrintMotd no',
    'PrintLastLog no',
    'PermitUserRC no',
    'PermitUserEnvironment no',
    'X11Forwarding no',
    'AllowTcpForwarding yes',
    'LogLevel VERBOSE',
    `SetEnv ${[`HOME=${o.remoteHome}`, ...(o.shell ? [`SHELL=${o.shell}`] : []), ...Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`)].map(q).join(' ')}`,
    `ForceCommand ${wrapper}`,
    '',
  ].join('\n')
}

/** Whether an ssh_config already has a `Host` line naming `alias`. */
function hasHost(config: string, alias: string): boolean {
  for (const m of config.matchAll(/^\s*Host\s+(.+)$/gim)) if (m[1]!.trim().split(/\s+/).includes(alias)) return true
  return false
}

function clientBlock(o: { alias: string; address: string; port: number; user: string; clientKey: string; knownHosts: string; hostKeyAlias?: string }): string {
  return [
    `Host ${o.alias}`,
    `  HostName ${o.address}`,
    `  Port ${o.port}`,
    ...(o.hostKeyAlias ? [`  HostKeyAlias ${o.hostKeyAlias}`] : []),
    `  User ${o.user}`,
    `  IdentityFile "${o.clientKey}"`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile "${o.knownHosts}"`,
    '  GlobalKnownHostsFile /dev/null',
    '  StrictHostKeyChecking yes',
    '  UpdateHostKeys no',
    '  BatchMode yes',
    '  PreferredAuthentications publickey',
    '  ConnectTimeout 10',
    '',
  ].join('\n')
}

/** Starts a test sshd; see `Sshd`. */
export async function startSshd(options: SshdOptions = {}): Promise<Sshd> {
  const sshd = findSshd()
  if (!sshd) throw new Error('sshd is not installed (looked in PATH and ' + SSHD_DIRS.join(', ') + ')')
  const alias = options.alias ?? 'farpipe-test'
  const address = options.address ?? '127.0.0.1'
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address)) throw new Error(`address must be a loopback IPv4 address (127.x.y.z), got ${address}`)
  const user = userInfo().username
  const dir = ownTempDir('farpipe-sshd-')
  const remoteHome = path.join(dir, 'home')
  mkdirSync(remoteHome, { mode: 0o700 })

  // The client side, shared when `home` is given.
  const home = options.home ?? ownTempDir('farpipe-ssh-home-')
  const sshDir = path.join(home, '.ssh')
  mkdirSync(sshDir, { recursive: true })
  chmodSync(sshDir, 0o700)
  const configFile = path.join(sshDir, 'config')
  const knownHosts = path.join(sshDir, 'known_hosts')
  const clientKey = path.join(sshDir, 'id_ed25519')
  if (existsSync(configFile) && hasHost(readFileSync(configFile, 'utf8'), alias)) {
    throw new Error(`${configFile} already has a Host ${alias}; give this sshd another alias`)
  }
  const [version] = await Promise.all([
    sshdVersion(sshd),
    existsSync(clientKey) ? undefined : keygen('ed25519', clientKey, 'farpipe-test-client'),
    keygen(options.hostKeyType ?? 'ed25519', path.join(dir, 'host_key'), 'farpipe-test-host'),
  ])
  writeFileSync(path.join(dir, 'authorized_keys'), readFileSync(`${clientKey}.pub`))
  const hostKeyPublic = readFileSync(path.join(dir, 'host_key.pub'), 'utf8').trim().split(' ').slice(0, 2).join(' ')

  const config = path.join(dir, 'sshd_config')
  const logFile = path.join(dir, 'sshd.log')
  const sessionsFile = path.join(dir, 'sessions')
  let child: ChildProcess | undefined
  let port = 0
  for (let attempt = 1; !child; attempt++) {
    port = await freePort(address)
    writeFileSync(config, sshdConfig({ address, port, dir, user, remoteHome, version, extra: options.extraConfig, env: options.env, shell: options.shell }))
    if (attempt === 1) await checkConfig(sshd, config)
    writeFileSync(logFile, '')
    const started = await listen(sshd, config, logFile, address, port)
    if (started) child = started
    else if (attempt >= 5 || !readFileSync(logFile, 'utf8').includes('Address already in use')) {
      throw new Error(`sshd exited before listening on ${address}:${port}; its log:\n${readFileSync(logFile, 'utf8')}`)
    }
  }
  let pid = child.pid!
  let listener = child

  const sessionPids = () => descendants(pid, processes(), (p) => p.comm.startsWith('sshd'))

  /** Everything sessions run: sshd processes and commands under the listener, and command sessions that outlived their sshd. */
  const sessionTrees = (): number[] => {
    const procs = processes()
    const sids = new Set(
      existsSync(sessionsFile)
        ? readFileSync(sessionsFile, 'utf8').split('\n').filter(Boolean).map(Number)
        : [],
    )
    // A session id can only be reused once all of that session's processes
    // are gone and a new process happens to get the same pid and call
    // setsid(); within a spec run that is as good as never.
    const inSessions = procs.filter((p) => sids.has(p.sid) && p.state !== 'Z').map((p) => p.pid)
    return [...new Set([...descendants(pid, procs), ...inSessions])]
  }

  const killNow = () => {
    const doomed = sessionTrees()
    signal(pid, 'SIGKILL')
    for (const p of doomed) signal(p, 'SIGKILL')
  }
  let untrack = track(killNow)

  // Only now the port is known: append rather than overwrite, for a shared home.
  // A new config ends with a catch-all block, so that destinations without an
  // alias (ssh://127.0.0.1:port) do not read the machine's /etc/ssh known_hosts either.
  const fresh = !existsSync(configFile)
  appendFileSync(configFile, (fresh ? '' : '\n') + clientBlock({ alias, address, port, user, clientKey, knownHosts }) + (fresh ? '\nHost *\n  GlobalKnownHostsFile /dev/null\n' : ''))
  appendFileSync(knownHosts, options.trustHostKey === false ? '' : `[${address}]:${port} ${hostKeyPublic}\n`)
  chmodSync(configFile, 0o600)
  chmodSync(knownHosts, 0o600)

  /**
   * Kills the listener and the sshd processes serving connections, as a
   * crash of the server would, and leaves the commands they run alone.
   */
  const crash = async () => {
    // Stopped, the listener cannot fork the sshd of a new connection between
    // the listing of its children and their killing.
    signal(pid, 'SIGSTOP')
    // sessionPids() walks through sshd processes only, so the commands
    // under them (a shell, a node worker) are not on the list.
    const sessions = sessionPids()
    for (const p of sessions) signal(p, 'SIGKILL')
    signal(pid, 'SIGKILL')
    await exited(listener, 2000)
    await portClosed(address, port)
    // Orphaned, the killed sessions are reaped by init; wait for that, so
    // that sessionPids() and the /proc checks of a spec do not see them.
    const end = Date.now() + 5000
    while (sessions.some(alive) && Date.now() < end) await sleep(10)
  }

  let stopping: Promise<void> | undefined
  const stop = async () => {
    // sshd's listener exits on SIGTERM but leaves its connections running,
    // as it does for a restart; they are ours, so they go too.
    const doomed = sessionTrees()
    signal(pid, 'SIGTERM')
    if (!(await exited(listener, 2000))) {
      signal(pid, 'SIGKILL')
      await exited(listener, 2000)
    }
    for (const p of [...doomed, ...sessionTrees()]) signal(p, 'SIGKILL')
    untrack()
    await portClosed(address, port)
  }

  return {
    host: address,
    port,
    alias,
    user,
    home,
    remoteHome,
    clientKey,
    hostKeyPublic,
    hostKeyFingerprint: fingerprint(hostKeyPublic),
    dir,
    get pid() {
      return pid
    },
    log: () => readFileSync(logFile, 'utf8'),
    sessionPids,
    ssh: (args, opts) => runSsh(['-F', configFile, '-o', 'BatchMode=yes', opts?.alias ?? alias, ...args], home, opts),
    viaProxy: (proxyPort, proxyAlias) => {
      if (hasHost(readFileSync(configFile, 'utf8'), proxyAlias)) throw new Error(`${configFile} already has a Host ${proxyAlias}; give the proxy another alias`)
      // OpenSSH and farpipe both use HostKeyAlias as the known_hosts name
      // as it is, without adding a port, so the name of this sshd's own line
      // (`[address]:port`) matches it.
      const block = clientBlock({ alias: proxyAlias, address: '127.0.0.1', port: proxyPort, user, clientKey, knownHosts, hostKeyAlias: `[${address}]:${port}` })
      appendFileSync(configFile, '\n' + block)
    },
    stop: () => (stopping ??= stop()),
    restart: async () => {
      if (stopping) {
        await stopping
        // stop() let the exit hook forget this sshd; it is back.
        untrack = track(killNow)
      } else {
        await crash()
      }
      // The same address, port, config and host key: to its clients, the host came back.
      // The log starts afresh: its "Server listening" line is what listen() waits for.
      writeFileSync(logFile, '')
      const started = await listen(sshd, config, logFile, address, port)
      if (!started) throw new Error(`sshd did not come back on ${address}:${port}; its log:\n${readFileSync(logFile, 'utf8')}`)
      listener = started
      pid = started.pid!
      stopping = undefined
    },
  }
}

/**
 * Spawns `sshd -D` (foreground, so the child's pid is the listener's) and
 * waits for its "Server listening" log line. Resolves undefined when sshd
 * exits first. Reading the log rather than probing the port keeps a probe
 * connection out of the log and out of sessionPids().
 */
async function listen(sshd: string, config: string, logFile: string, address: string, port: number): Promise<ChildProcess | undefined> {
  const child = spawn(sshd, ['-D', '-f', config, '-E', logFile], { stdio: 'ignore' })
  let failed: Error | undefined
  child.on('error', (err) => (failed = err))
  // A spec that forgets stop() still ends; the exit hook then kills sshd.
  child.unref()
  const untrack = track(() => signal(child.pid!, 'SIGKILL'))
  const ready = `Server listening on ${address} port ${port}.`
  const end = Date.now() + 10_000
  try {
    for (;;) {
      if (failed) throw new Error(`could not start ${sshd}: ${failed.message}`)
      if (child.exitCode !== null || child.signalCode !== null) return undefined
      if (readFileSync(logFile, 'utf8').includes(ready)) return child
      if (Date.now() > end) {
        signal(child.pid!, 'SIGKILL')
        throw new Error(`sshd did not listen on ${address}:${port} within 10 s; its log:\n${readFileSync(logFile, 'utf8')}`)
      }
      await sleep(5)
    }
  } finally {
    // startSshd tracks the listener from here on, with its sessions.
    untrack()
  }
}

/** Runs the OpenSSH client with HOME=<home>; rejects only on timeout. */
function runSsh(argv: string[], home: string, options: SshRunOptions = {}): Promise<SshResult> {
  const timeout = options.timeout ?? 10_000
  return new Promise((resolve, reject) => {
    const child = spawn('ssh', argv, { env: toolEnv(home, options.env), stdio: 'pipe' })
    const untrack = track(() => signal(child.pid!, 'SIGKILL'))
    const stdout: Buffer[] = []
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => stdout.push(d))
    child.stderr.on('data', (d: Buffer) => (stderr += d))
    child.stdin.on('error', () => {}) // ssh may exit before reading its input
    child.stdin.end(options.input)
    const timer = setTimeout(() => {
      signal(child.pid!, 'SIGKILL')
      reject(new Error(`ssh ${argv.join(' ')} did not finish within ${timeout} ms; stderr: ${stderr}`))
    }, timeout)
    child.on('error', (err) => {
      clearTimeout(timer)
      untrack()
      reject(err)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      untrack()
      resolve({ code, stdout: Buffer.concat(stdout), stderr })
    })
  })
}

// ── ssh-agent ────────────────────────────────────────────────────────────

/** Starts an ssh-agent with its socket in a temp dir, adds `key`, returns its socket path and a stop(). */
export async function startAgent(key: string): Promise<{ socket: string; pid: number; stop(): Promise<void> }> {
  const dir = ownTempDir('farpipe-agent-')
  const socket = path.join(dir, 'agent.sock')
  // -D: foreground, so the child's pid is the agent's.
  const child = spawn('ssh-agent', ['-D', '-a', socket], { env: toolEnv(dir), stdio: 'ignore' })
  let failed: Error | undefined
  child.on('error', (err) => (failed = err))
  child.unref()
  const pid = child.pid!
  const untrack = track(() => signal(pid, 'SIGKILL'))
  let stopping: Promise<void> | undefined
  const stop = () =>
    (stopping ??= (async () => {
      signal(pid, 'SIGTERM')
      if (!(await exited(child, 2000))) signal(pid, 'SIGKILL')
      untrack()
    })())
  try {
    const end = Date.now() + 5000
    while (!existsSync(socket)) {
      if (failed) throw new Error(`could not start ssh-agent: ${failed.message}`)
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`ssh-agent exited with ${child.exitCode ?? child.signalCode} before creating ${socket}`)
      if (Date.now() > end) throw new Error(`ssh-agent did not create ${socket} within 5 s`)
      await sleep(5)
    }
    await run('ssh-add', ['-q', key], { env: toolEnv(dir, { SSH_AUTH_SOCK: socket }) })
  } catch (err) {
    await stop()
    throw err
  }
  return { socket, pid, stop }
}
