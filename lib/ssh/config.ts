/**
 * SSH destinations and `~/.ssh/config`: how `user@alias` becomes the
 * concrete settings of one connection (host name, port, user, keys, known
 * hosts, keepalive, jump hosts), worked out the way OpenSSH's `ssh` does.
 *
 * The `ssh-config` package parses the files and merges the values
 * (`compute()`: the first value obtained wins, `IdentityFile` accumulates,
 * `Match` criteria other than `exec` apply). Three things are done here
 * because it does not do them, or not as OpenSSH does:
 *
 * - `Include` is followed (it leaves the directive as it is), with OpenSSH's
 *   scoping: an Include inside a `Host` block applies only when that block
 *   does, and the lines after it belong to the block again.
 * - `Host` patterns are matched here: its matcher is case-sensitive and
 *   takes `?` for "zero or one character" instead of exactly one.
 * - Nothing that would run a program is evaluated: never `Match exec`, and
 *   `CanonicalizeHostName` is dropped (it would run `nslookup`).
 *
 * Nothing here touches the network; the only I/O is reading config files.
 *
 * @module
 */
import * as os from 'node:os'
import * as path from 'node:path'
import { FarpipeError } from '../errors.ts'
import { describe } from '../options.ts'
import { expandTilde, flatten, loadConfig, PROXY, type ConfigFile } from './config-file.ts'
import { parseDestination } from './destination.ts'

/** How a host's key is checked against known_hosts. */
export type KnownHostsPolicy = 'strict' | 'accept-new' | 'off'

/** Per-host options (also the object form of a host in `pool({ hosts })`). */
export interface HostOptions {
  /** The destination as OpenSSH takes it: `host`, `user@host`, `ssh://user@host:port`, `user@[::1]`, or an alias from `~/.ssh/config`. */
  host: string
  /** The user to log in as. @default the user in `host`, else `User` from the config, else the local user name */
  user?: string
  /** The port to connect to. @default the port in `host`, else `Port` from the config, else 22 */
  port?: number
  /** Private key files, tried before any `IdentityFile` from the config. `~` is expanded. @default [] */
  identityFile?: string | string[]
  /** The passphrase of encrypted identity files. @default undefined */
  passphrase?: string
  /** The ssh-agent socket, or `false` for no agent. @default `IdentityAgent` from the config, else `$SSH_AUTH_SOCK` */
  agent?: string | false
  /** Worker processes on the host (carried through to the transport). @default the host's core count */
  workers?: number
  /** The path of node on the host, or `'upload'` to send this machine's node (carried through). @default `node` on the login PATH */
  node?: string
  /** How the host key is checked. @default from `StrictHostKeyChecking` in the config (`yes`/`ask` → strict, `accept-new`, `no`/`off` → off), else `'strict'` */
  knownHosts?: KnownHostsPolicy
  /** The user's known_hosts files: checked, and the first one added to under `'accept-new'`. `~` is expanded. @default `UserKnownHostsFile` from the config, else `~/.ssh/known_hosts` and `~/.ssh/known_hosts2` */
  knownHostsFile?: string | string[]
  /**
   * The system-wide known_hosts files: checked like the user's (a key in
   * either is known, `@revoked` in either refuses, another key for the host
   * in either means it changed), never written to. `~` is expanded.
   * @default `GlobalKnownHostsFile` from the config, else `/etc/ssh/ssh_known_hosts` and `/etc/ssh/ssh_known_hosts2`
   */
  globalKnownHostsFile?: string | string[]
  /**
   * Milliseconds between keepalive pings; 0 for none. At most 2147483647
   * (about 24.8 days), the longest delay Node's timers take.
   * @default `ServerAliveInterval` × 1000 from the config, else 15000
   */
  keepaliveInterval?: number
  /**
   * Unanswered pings in a row after which the host counts as dead. 0 is
   * taken as 1: OpenSSH's ssh with `ServerAliveCountMax 0` gives up after one
   * interval without a word from the server, so here one ping is sent and
   * the host counts as dead when it is still unanswered at the next one. A
   * host that answers is never dropped, and a dead one is still noticed.
   * @default `ServerAliveCountMax` from the config, else 3
   */
  keepaliveCountMax?: number
  /**
   * Milliseconds to wait for the connection (TCP and SSH handshake); 0 for
   * no limit. At most 2147483647, the longest delay Node's timers take.
   * @default `ConnectTimeout` × 1000 from the config, else 20000
   */
  connectTimeout?: number
  /** Environment variables for the workers on the host (carried through). Names must match `[A-Za-z_][A-Za-z0-9_]*`. @default {} */
  env?: Record<string, string>
  /**
   * Where the host caches the worker and the function bundles; a leading
   * `~` or `~/` is the remote user's home. Beats the pool's `cacheDir`.
   * @default the pool's `cacheDir`, else `$XDG_CACHE_HOME/farpipe` or `~/.cache/farpipe` there
   */
  cacheDir?: string
}

/** Everything needed to connect to one host. */
export interface ResolvedHost {
  /** The host as the user named it (alias or host name), for messages and `context().host`. */
  name: string
  /** What to connect to: `HostName` from the config, else the name (lowercased, as OpenSSH does). */
  hostname: string
  /** The port: explicit, else `Port` from the config, else 22. */
  port: number
  /** The user to log in as: explicit, else `User` from the config, else the local user name. */
  user: string
  /** Absolute key file paths: the options' first, then the config's. Empty means the transport tries its default keys. */
  identityFiles: string[]
  /** `IdentitiesOnly yes`: offer only these files, even if the agent holds other keys. */
  identitiesOnly: boolean
  /** The passphrase of encrypted key files. */
  passphrase?: string
  /** The ssh-agent socket; undefined for none. */
  agent?: string
  /** The user's absolute known_hosts files, in the order they are checked; `'accept-new'` adds to the first. */
  knownHostsFiles: string[]
  /** The system-wide absolute known_hosts files (`GlobalKnownHostsFile`), checked after the user's and never written to. */
  globalKnownHostsFiles: string[]
  /** `HostKeyAlias`: the name to look the host key up under instead of `hostname`. */
  hostKeyAlias?: string
  /** How the host key is checked: explicit, else from `StrictHostKeyChecking`, else `strict`. */
  knownHosts: KnownHostsPolicy
  /** `HashKnownHosts yes`: names added to known_hosts are hashed. */
  hashKnownHosts: boolean
  /** Milliseconds between keepalive pings: explicit, else `ServerAliveInterval`, else 15000. */
  keepaliveInterval: number
  /** Unanswered pings before the connection counts as dead: explicit, else `ServerAliveCountMax`, else 3. 0 counts as 1 (see {@link HostOptions.keepaliveCountMax}). */
  keepaliveCountMax: number
  /** Milliseconds for the TCP connection and SSH handshake: explicit, else `ConnectTimeout`, else 20000. */
  connectTimeout: number
  /** Jump hosts in the order they are traversed (the first is connected to first); empty for none. */
  proxyJump: ResolvedHost[]
  /** Worker processes on the host (carried from the host options). */
  workers?: number
  /** The node to run workers with, or `upload` (carried from the host options). */
  node?: string
  /** Environment for the workers (carried from the host options). */
  env?: Record<string, string>
  /** The bundle cache on the host (carried from the host options). */
  cacheDir?: string
}

/** Where {@link resolveHost} reads the SSH configuration. */
export interface ResolveHostOptions {
  /** The SSH client configuration file; a relative path is taken from the working directory. @default `<home>/.ssh/config` (a missing one is fine) */
  configFile?: string
  /** The local home directory: `~`, `%d`, and where relative `Include`s are looked for (`<home>/.ssh`). @default os.homedir() */
  home?: string
}

const DEFAULT_PORT = 22
const DEFAULT_KEEPALIVE_INTERVAL = 15_000
const DEFAULT_KEEPALIVE_COUNT_MAX = 3
const DEFAULT_CONNECT_TIMEOUT = 20_000
/** The system-wide known_hosts files OpenSSH reads when `GlobalKnownHostsFile` is not set. */
const DEFAULT_GLOBAL_KNOWN_HOSTS = ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2']
/**
 * The longest delay, in milliseconds, Node's setTimeout and setInterval
 * take (2^31 − 1). A longer one fires after 1 ms instead, with only a
 * warning, so a keepalive or connect timeout beyond it is refused.
 */
const MAX_TIMER_MS = 2_147_483_647

// ─── host options ────────────────────────────────────────────────────────

const HOST_OPTION_KEYS: readonly (keyof HostOptions)[] = [
  'host', 'user', 'port', 'identityFile', 'passphrase', 'agent', 'workers', 'node', 'knownHosts',
  'knownHostsFile', 'globalKnownHostsFile', 'keepaliveInterval', 'keepaliveCountMax', 'connectTimeout', 'env', 'cacheDir',
]

/** Checks a HostOptions object field by field; throws a TypeError or RangeError saying what was expected and what arrived. */
function checkHostOptions(value: unknown): HostOptions {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError(`expected an SSH destination string or a HostOptions object, got ${describe(value)}`)
  }
  const o = value as Record<string, unknown>
  if (typeof o.host !== 'string') throw new TypeError(`option host must be an SSH destination string, got ${describe(o.host)}`)
  const where = `host ${JSON.stringify(o.host)}`
  for (const key of Object.keys(o)) {
    if (!(HOST_OPTION_KEYS as string[]).includes(key)) throw new TypeError(`${where}: unknown option ${JSON.stringify(key)} (known: ${HOST_OPTION_KEYS.join(', ')})`)
  }
  const type = (name: string, expected: string) => new TypeError(`${where}: option ${name} must be ${expected}, got ${describe(o[name])}`)
  const text = (name: string) => {
    if (o[name] !== undefined && (typeof o[name] !== 'string' || o[name] === '')) throw type(name, 'a non-empty string')
  }
  const paths = (name: string) => {
    const v = o[name]
    if (v === undefined) return
    const list = Array.isArray(v) ? v : [v]
    if (list.length === 0 || list.some((p) => typeof p !== 'string' || p === '')) throw type(name, 'a path or a non-empty array of paths')
  }
  const integer = (name: string, min: number, max = Infinity) => {
    const v = o[name]
    if (v === undefined) return
    if (typeof v !== 'number') throw type(name, 'a number')
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new RangeError(`${where}: option ${name} must be an integer ${max === Infinity ? `>= ${min}` : `from ${min} to ${max}`}, got ${v}`)
    }
  }
  const millis = (name: string) => {
    const v = o[name]
    if (v === undefined) return
    if (typeof v !== 'number') throw type(name, 'a number of milliseconds')
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`${where}: option ${name} must be a finite number of milliseconds >= 0, got ${v}`)
    if (v > MAX_TIMER_MS) throw new RangeError(`${where}: option ${name} must be at most ${MAX_TIMER_MS} ms (about 24.8 days, the longest timer Node.js can set), got ${v}`)
  }

  text('user')
  if (typeof o.user === 'string' && (/[\s\p{Cc}]/u.test(o.user) || o.user.startsWith('-'))) {
    throw type('user', 'a user name without whitespace, control characters or a leading "-"')
  }
  integer('port', 1, 65535)
  paths('identityFile')
  if (o.passphrase !== undefined && typeof o.passphrase !== 'string') throw type('passphrase', 'a string')
  if (o.agent !== undefined && o.agent !== false && (typeof o.agent !== 'string' || o.agent === '')) throw type('agent', 'a socket path or false')
  integer('workers', 1)
  text('node')
  // The probe would only fail to find it, but a leading "-" would be read as an option by the remote shell's exec.
  if (typeof o.node === 'string' && o.node.startsWith('-')) throw type('node', 'a path that does not start with "-", or "upload"')
  if (o.knownHosts !== undefined && !['strict', 'accept-new', 'off'].includes(o.knownHosts as string)) {
    throw type('knownHosts', '"strict", "accept-new" or "off"')
  }
  paths('knownHostsFile')
  paths('globalKnownHostsFile')
  millis('keepaliveInterval')
  integer('keepaliveCountMax', 0)
  millis('connectTimeout')
  checkEnv(where, o.env)
  text('cacheDir')
  if (typeof o.cacheDir === 'string' && o.cacheDir.includes('\0')) throw type('cacheDir', 'a path without NUL characters')
  return o as unknown as HostOptions
}

/** What an environment variable name may be, as POSIX shells and `env` take one. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/

// ─── resolving ───────────────────────────────────────────────────────────

interface Context {
  root: ConfigFile | undefined
  configFile: string
  home: string
  localUser: string
}

/**
 * Works out how to connect to a destination: the destination string (or
 * the object's `host`) is parsed, the SSH config is read (following
 * Includes) and looked up by the host part, and explicit values beat the
 * config, which beats the defaults. Jump hosts from `ProxyJump` are resolved
 * through the same config, without the options of `dest` and ignoring their
 * own ProxyJump.
 *
 * Rejects with a TypeError or RangeError for a bad destination or option,
 * and with a FarpipeError for a config that cannot be read or used (a parse
 * error, an Include loop, a bad value, `ProxyCommand`, a jump chain that
 * leads back to the host itself).
 */
export async function resolveHost(dest: string | HostOptions, options: ResolveHostOptions = {}): Promise<ResolvedHost> {
  const o: HostOptions = typeof dest === 'string' ? { host: dest } : checkHostOptions(dest)
  const d = parseDestination(o.host)
  const where = `host ${JSON.stringify(o.host)}`
  if (o.user !== undefined && d.user !== undefined && o.user !== d.user) {
    throw new TypeError(`${where}: option user ${JSON.stringify(o.user)} conflicts with the user ${JSON.stringify(d.user)} in the destination`)
  }
  if (o.port !== undefined && d.port !== undefined && o.port !== d.port) {
    throw new TypeError(`${where}: option port ${o.port} conflicts with the port ${d.port} in the destination`)
  }
  const home = options.home ?? os.homedir()
  const explicitFile = options.configFile !== undefined
  const configFile = explicitFile
    ? path.resolve(expandTilde(options.configFile!, home, (what) => new TypeError(`option configFile ${JSON.stringify(options.configFile)}: ${what}`)))
    : path.join(home, '.ssh', 'config')
  const root = await loadConfig(configFile, home, [])
  // /dev/null is how ssh -F is told to read no config: it is no regular file, yet it is there.
  if (!root && explicitFile && configFile !== '/dev/null') throw new FarpipeError(`SSH config ${configFile} does not exist`)
  const ctx: Context = { root, configFile, home, localUser: localUserName() }
  return resolveOne(ctx, d.host, { ...o, user: o.user ?? d.user, port: o.port ?? d.port }, true)
}

/** Resolves one host; `jumps` says whether its ProxyJump is followed (not for jump hosts themselves). */
function resolveOne(ctx: Context, name: string, o: Omit<HostOptions, 'host'>, jumps: boolean): ResolvedHost {
  const lower = name.toLowerCase()
  const cfg = ctx.root ? flatten(ctx.root, lower).compute({ Host: lower, User: o.user }, { ignoreCase: true, matchExec: false }) : {}
  const fail = (what: string) => new FarpipeError(`SSH config ${ctx.configFile}, host ${JSON.stringify(name)}: ${what}`)
  const get = (key: string): string | undefined => {
    const v = cfg[key]
    return Array.isArray(v) ? v.join(' ') : v
  }
  const list = (key: string): string[] | undefined => {
    const v = cfg[key]
    return v === undefined ? undefined : Array.isArray(v) ? v : [v]
  }
  const tilde = (p: string) => path.resolve(expandTilde(p, ctx.home, (what) => new TypeError(`host ${JSON.stringify(name)}: path ${JSON.stringify(p)}: ${what}`)))

  const hostnameSetting = get('hostname')
  const hostname = hostnameSetting === undefined ? lower : expandTokens(hostnameSetting, { '%': '%', h: lower }, (what) => fail(`HostName ${JSON.stringify(hostnameSetting)}: ${what}`))
  const port = o.port ?? configInteger(get('port'), 'Port', 1, 65535, fail) ?? DEFAULT_PORT
  const user = o.user ?? get('user') ?? ctx.localUser
  if (user === '') throw new FarpipeError(`cannot tell the local user name (os.userInfo() failed and $USER is unset); give the user for host ${JSON.stringify(name)}`)
  const hostKeyAlias = get('hostkeyalias')

  const local = os.hostname()
  const tokens: Record<string, string> = {
    '%': '%', d: ctx.home, u: ctx.localUser, h: hostname, r: user, p: String(port), n: name,
    i: String(safeUid()), l: local, L: local.split('.')[0] ?? local, k: hostKeyAlias ?? name,
  }
  const expand = (directive: string) => (p: string) => tilde(expandTokens(p, tokens, (what) => fail(`${directive} ${JSON.stringify(p)}: ${what}`)))

  const identityFiles = [...new Set([...toList(o.identityFile).map(tilde), ...(list('identityfile') ?? []).map(expand('IdentityFile'))])]

  let agent: string | undefined
  if (o.agent !== undefined) agent = o.agent === false ? undefined : tilde(o.agent)
  else {
    const setting = get('identityagent')
    if (setting === undefined || setting === 'SSH_AUTH_SOCK') agent = process.env.SSH_AUTH_SOCK || undefined
    else if (setting.toLowerCase() === 'none') agent = undefined
    else if (setting.startsWith('$')) agent = process.env[setting.slice(1)] || undefined
    else agent = expand('IdentityAgent')(setting)
  }

  const userKnownHosts = list('userknownhostsfile')
  const knownHostsFiles =
    o.knownHostsFile !== undefined ? toList(o.knownHostsFile).map(tilde)
    : userKnownHosts === undefined ? [path.join(ctx.home, '.ssh', 'known_hosts'), path.join(ctx.home, '.ssh', 'known_hosts2')]
    : userKnownHosts.length === 1 && userKnownHosts[0]!.toLowerCase() === 'none' ? []
    : userKnownHosts.map(expand('UserKnownHostsFile'))
  const globalKnownHosts = list('globalknownhostsfile')
  const globalKnownHostsFiles =
    o.globalKnownHostsFile !== undefined ? toList(o.globalKnownHostsFile).map(tilde)
    : globalKnownHosts === undefined ? [...DEFAULT_GLOBAL_KNOWN_HOSTS]
    : globalKnownHosts.length === 1 && globalKnownHosts[0]!.toLowerCase() === 'none' ? []
    : globalKnownHosts.map(expand('GlobalKnownHostsFile'))

  const strict = get('stricthostkeychecking')?.toLowerCase()
  if (strict !== undefined && !Object.hasOwn(STRICT, strict)) throw fail(`StrictHostKeyChecking must be yes, ask, accept-new, no or off, got ${JSON.stringify(strict)}`)

  const connectTimeoutSetting = get('connecttimeout')
  const resolved: ResolvedHost = {
    name,
    hostname,
    port,
    user,
    identityFiles,
    identitiesOnly: configFlag(get('identitiesonly'), 'IdentitiesOnly', fail) ?? false,
    knownHostsFiles,
    globalKnownHostsFiles,
    knownHosts: o.knownHosts ?? (strict === undefined ? 'strict' : STRICT[strict]!),
    hashKnownHosts: configFlag(get('hashknownhosts'), 'HashKnownHosts', fail) ?? false,
    keepaliveInterval: o.keepaliveInterval ?? configMillis(get('serveraliveinterval'), 'ServerAliveInterval', fail, MAX_TIMER_MS) ?? DEFAULT_KEEPALIVE_INTERVAL,
    keepaliveCountMax: o.keepaliveCountMax ?? configInteger(get('serveralivecountmax'), 'ServerAliveCountMax', 0, Infinity, fail) ?? DEFAULT_KEEPALIVE_COUNT_MAX,
    connectTimeout:
      o.connectTimeout ?? (connectTimeoutSetting?.toLowerCase() === 'none' ? 0 : configMillis(connectTimeoutSetting, 'ConnectTimeout', fail, MAX_TIMER_MS)) ?? DEFAULT_CONNECT_TIMEOUT,
    proxyJump: [],
  }
  if (o.passphrase !== undefined) resolved.passphrase = o.passphrase
  if (agent !== undefined) resolved.agent = agent
  if (hostKeyAlias !== undefined) resolved.hostKeyAlias = hostKeyAlias
  if (o.workers !== undefined) resolved.workers = o.workers
  if (o.node !== undefined) resolved.node = o.node
  if (o.env !== undefined) resolved.env = { ...o.env }
  if (o.cacheDir !== undefined) resolved.cacheDir = o.cacheDir

  // ProxyJump and ProxyCommand share one slot, so this is whichever the config gave first.
  const proxy = jumps ? get(PROXY.toLowerCase()) : undefined
  if (proxy?.startsWith('command ')) {
    const command = proxy.slice('command '.length)
    if (command.toLowerCase() !== 'none') throw fail(`ProxyCommand ${JSON.stringify(command)} is not supported (farpipe runs no commands from the SSH config); use ProxyJump`)
  } else if (proxy?.startsWith('jump ')) {
    const chain = proxy.slice('jump '.length).trim()
    if (chain.toLowerCase() !== 'none') {
      for (const entry of chain.split(',')) {
        let jd: ReturnType<typeof parseDestination>
        try {
          jd = parseDestination(entry)
        } catch (err) {
          throw new FarpipeError(`${fail(`ProxyJump ${JSON.stringify(chain)}`).message}: ${(err as Error).message}`, { cause: err })
        }
        const jump = resolveOne(ctx, jd.host, { user: jd.user, port: jd.port }, false)
        if (jump.name.toLowerCase() === lower || (jump.hostname.toLowerCase() === hostname.toLowerCase() && jump.port === port)) {
          throw fail(`ProxyJump ${JSON.stringify(chain)} leads back to the host itself (via ${JSON.stringify(entry)}); exclude the host from the Host pattern that sets ProxyJump, e.g. "Host * !${name}"`)
        }
        resolved.proxyJump.push(jump)
      }
    }
  }
  return resolved
}

const STRICT: Record<string, KnownHostsPolicy> = { yes: 'strict', true: 'strict', ask: 'strict', 'accept-new': 'accept-new', no: 'off', false: 'off', off: 'off' }

function toList(value: string | string[] | undefined): string[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value]
}

/** Expands `%x` tokens; an unknown one is an error, as in OpenSSH. */
function expandTokens(text: string, tokens: Record<string, string>, fail: (what: string) => Error): string {
  return text.replace(/%([\s\S]?)/g, (_, key: string) => {
    const value = Object.hasOwn(tokens, key) ? tokens[key] : undefined
    if (value === undefined) {
      const known = Object.keys(tokens).map((k) => `%${k}`).join(' ')
      throw fail(key === '' ? `a lone "%" at the end (write "%%" for a percent sign)` : `unknown token %${key} (known: ${known})`)
    }
    return value
  })
}

function configFlag(value: string | undefined, directive: string, fail: (what: string) => Error): boolean | undefined {
  if (value === undefined) return undefined
  if (/^(yes|true)$/i.test(value)) return true
  if (/^(no|false)$/i.test(value)) return false
  throw fail(`${directive} must be yes or no, got ${JSON.stringify(value)}`)
}

function configInteger(value: string | undefined, directive: string, min: number, max: number, fail: (what: string) => Error): number | undefined {
  if (value === undefined) return undefined
  const n = /^\d+$/.test(value) ? Number(value) : NaN
  if (!(n >= min && n <= max)) throw fail(`${directive} must be an integer ${max === Infinity ? `>= ${min}` : `from ${min} to ${max}`}, got ${JSON.stringify(value)}`)
  return n
}

const SECONDS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }

/** A time as OpenSSH writes it (`30`, `90s`, `1m30s`), in milliseconds; more than `max` milliseconds is refused. */
function configMillis(value: string | undefined, directive: string, fail: (what: string) => Error, max = Infinity): number | undefined {
  if (value === undefined) return undefined
  if (!/^(\d+[smhdw]?)+$/i.test(value)) throw fail(`${directive} must be a time in seconds (like 30 or 1m30s), got ${JSON.stringify(value)}`)
  let seconds = 0
  for (const m of value.matchAll(/(\d+)([smhdw]?)/gi)) seconds += Number(m[1]) * SECONDS[(m[2] ?? '').toLowerCase()]!
  const ms = seconds * 1000
  if (ms > max) throw fail(`${directive} ${value} is ${ms} ms, more than ${max} ms (about 24.8 days, the longest timer Node.js can set)`)
  return ms
}

function localUserName(): string {
  try {
    const name = os.userInfo().username
    if (name) return name
  } catch {
    // A user without a passwd entry (some containers): fall back to the environment.
  }
  return process.env.USER || process.env.USERNAME || process.env.LOGNAME || ''
}

function safeUid(): number {
  try {
    return os.userInfo().uid
  } catch {
    return -1
  }
}

/** Refuses an `env` option that could not reach a remote command line intact; `where` names the host. */
export function checkEnv(where: string, env: unknown): void {
  if (env === undefined) return
  if (env === null || typeof env !== 'object' || Array.isArray(env)) throw new TypeError(`${where}: option env must be an object of strings, got ${describe(env)}`)
  for (const [k, v] of Object.entries(env)) {
    // The names reach the remote command line (quoted, but `env` would take a name with "-" as an option or one with "=" as part of the value).
    if (!ENV_NAME.test(k)) throw new TypeError(`${where}: option env has a bad variable name ${JSON.stringify(k)} (names are letters, digits and _, not starting with a digit)`)
    if (typeof v !== 'string') throw new TypeError(`${where}: option env.${k} must be a string, got ${describe(v)}`)
    // A NUL would cut the command line short on the host.
    if (v.includes('\0')) throw new TypeError(`${where}: option env.${k} contains a NUL character, which no environment variable can hold`)
  }
}
