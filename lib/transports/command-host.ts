/**
 * What a command host is (the options of the command transport) and their
 * check, made before anything runs: `pool({ hosts })` takes such objects next
 * to SSH destinations.
 *
 * @module
 */
import { describe, MAX_TIMER_MS } from '../options.ts'
import { checkEnv } from '../ssh/host-options.ts'
import { checkCacheDir } from '../ssh/bootstrap.ts'

/**
 * A host reached through a command: what `pool({ hosts })` takes next to SSH
 * destinations, and the options of {@link CommandTransport}.
 *
 * ```ts
 * { name: 'pod-1', command: ['kubectl', 'exec', '-i', 'pod-1', '--'] }
 * { name: 'ctr', command: ['docker', 'exec', '-i', 'ctr'] }
 * { name: 'gpu-1', command: ['ssh', '-o', 'BatchMode=yes', 'gpu-1'] }
 * ```
 */
export interface CommandHost {
  /** The host's name in messages, logs and `context().host`; unique in the pool. */
  name: string
  /**
   * The program and its arguments that open a stdio channel to the machine
   * and run what follows them there. It runs here, with this process's
   * environment; farpipe appends the remote command to it (see
   * `remoteShell`). It must not allocate a terminal (no `-t`): the channel
   * carries binary frames.
   */
  command: string[]
  /**
   * How the remote command is appended. The command is always `sh`, which
   * reads what to run from the first line of the channel; `false`: as
   * separate words, `sh -c <reader>`, for engines that pass their arguments
   * on as an argv without a shell (`kubectl exec`, `docker exec`). `true`:
   * as one word, `exec sh -c '<reader>'`, for commands that join their
   * arguments into a line for the remote user's shell to parse, as `ssh`
   * does (any shell: sh, bash, csh, tcsh or fish read it alike).
   * @default true when the program's base name is `ssh`, else false
   */
  remoteShell?: boolean
  /** Worker processes on the host. @default the pool's `workers`, else the host's core count */
  workers?: number
  /** The path of node on the host, or `'upload'` to send this machine's node (same OS and CPU only). @default `node` on the remote PATH */
  node?: string
  /**
   * Where the host caches the worker and the function bundles; a leading
   * `~` or `~/` is the remote user's home.
   * @default the pool's `cacheDir`, else `$XDG_CACHE_HOME/farpipe` or `~/.cache/farpipe` there
   */
  cacheDir?: string
  /** Environment variables for the workers on the host. Names must match `[A-Za-z_][A-Za-z0-9_]*`. @default {} */
  env?: Record<string, string>
  /** Extra arguments for node on the host. @default the pool's `nodeArgs`, else [] */
  nodeArgs?: string[]
  /**
   * Milliseconds for the command to open its channel: each probe, upload
   * and kill command is killed, and fails with reason `'timeout'`, when the
   * remote shell has not answered by then (workers are bounded by the pool's
   * `startTimeout` instead). 0 for no limit.
   * @default 20000
   */
  connectTimeout?: number
}

/** The options of a {@link CommandTransport}: a command host. */
export type CommandTransportOptions = CommandHost

const KEYS: readonly (keyof CommandHost)[] = ['name', 'command', 'remoteShell', 'workers', 'node', 'cacheDir', 'env', 'nodeArgs', 'connectTimeout']

/**
 * Checks a command host field by field; throws a TypeError or RangeError
 * naming the host (or, without a usable name, its command), what was
 * expected and what arrived.
 */
export function checkCommandHost(value: unknown): CommandHost {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError(`expected a command host object { name, command }, got ${describe(value)}`)
  const o = value as Record<string, unknown>
  const where =
    typeof o.name === 'string' && o.name !== ''
      ? `host ${JSON.stringify(o.name)}`
      : `the command host ${Array.isArray(o.command) ? JSON.stringify(o.command) : 'without a name'}`
  if (typeof o.name !== 'string' || o.name === '') throw new TypeError(`${where}: option name must be a non-empty string, got ${describe(o.name)}`)
  if ('host' in o) throw new TypeError(`${where}: give either host (an SSH destination) or command, not both`)
  for (const key of Object.keys(o)) {
    if (!(KEYS as string[]).includes(key)) throw new TypeError(`${where}: unknown option ${JSON.stringify(key)} (known: ${KEYS.join(', ')})`)
  }
  const type = (name: string, expected: string) => new TypeError(`${where}: option ${name} must be ${expected}, got ${describe(o[name])}`)
  const words = (name: string, min: number) => {
    const v = o[name]
    if (!Array.isArray(v) || v.length < min || v.some((w) => typeof w !== 'string' || w.includes('\0'))) {
      throw type(name, `${min > 0 ? 'a non-empty' : 'an'} array of strings without NUL characters`)
    }
  }
  words('command', 1)
  if ((o.command as string[])[0] === '') throw type('command', 'an array whose first word, the program, is not empty')
  if (o.remoteShell !== undefined && typeof o.remoteShell !== 'boolean') throw type('remoteShell', 'a boolean')
  if (o.workers !== undefined && (typeof o.workers !== 'number' || !Number.isInteger(o.workers) || o.workers < 1)) throw type('workers', 'an integer >= 1')
  if (o.node !== undefined && (typeof o.node !== 'string' || o.node === '' || o.node.startsWith('-') || o.node.includes('\0'))) {
    throw type('node', 'a path that does not start with "-", or "upload"')
  }
  if (o.cacheDir !== undefined && (typeof o.cacheDir !== 'string' || o.cacheDir === '')) throw type('cacheDir', 'a non-empty string')
  checkEnv(where, o.env)
  if (o.nodeArgs !== undefined) words('nodeArgs', 0)
  if (o.connectTimeout !== undefined) {
    const v = o.connectTimeout
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_TIMER_MS) throw type('connectTimeout', `a number of milliseconds from 0 to ${MAX_TIMER_MS}`)
  }
  checkCacheDir(o.cacheDir as string | undefined, o.name)
  return o as unknown as CommandHost
}
