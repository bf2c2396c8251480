/**
 * `~/.ssh/config`: how `user@alias` (a destination, destination.ts) and
 * the host's options (host-options.ts) become the concrete settings of one
 * connection (host name, port, user, keys, known hosts, keepalive, jump
 * hosts), worked out the way OpenSSH's `ssh` does.
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
import { MAX_TIMER_MS } from '../options.ts'
import { expandTilde, flatten, loadConfig, PROXY, type ConfigFile } from './config-file.ts'
import { parseDestination } from './destination.ts'
import { checkHostOptions, type HostOptions, type KnownHostsPolicy } from './host-options.ts'

// Their importers (the pool, the public index) took them from here.
export type { HostOptions, KnownHostsPolicy } from './host-options.ts'

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
