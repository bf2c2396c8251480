/**
 * What an SSH host may be given (the object form of a host in
 * `pool({ hosts })`), and its check, made before anything connects; the
 * config (config.ts) fills in what it leaves out. Command hosts check their
 * `env` with the same {@link checkEnv}.
 *
 * @module
 */
import { describe, MAX_TIMER_MS } from '../options.ts'

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

const HOST_OPTION_KEYS: readonly (keyof HostOptions)[] = [
  'host', 'user', 'port', 'identityFile', 'passphrase', 'agent', 'workers', 'node', 'knownHosts',
  'knownHostsFile', 'globalKnownHostsFile', 'keepaliveInterval', 'keepaliveCountMax', 'connectTimeout', 'env', 'cacheDir',
]

/** Checks a HostOptions object field by field; throws a TypeError or RangeError saying what was expected and what arrived. */
export function checkHostOptions(value: unknown): HostOptions {
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
