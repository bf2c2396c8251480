/**
 * The `farpipe` command's arguments: what each subcommand takes, parsed
 * without I/O into a typed object (the help texts are help.ts's). Anything
 * wrong is a {@link UsageError}, which the command reports with exit status
 * 2. And `module#export` itself: {@link loadRemote} finds the function it
 * names.
 *
 * @module
 */
import { existsSync, statSync } from 'node:fs'
import * as path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { AnyFunction } from '../call/types.ts'
import { remoteInfo, type Remote } from '../remote.ts'
import { HOSTS_HELP, MAIN_HELP, PIPE_HELP, RUN_HELP } from './help.ts'

/** A mistake in how the command was called: printed with a hint, exit status 2. */
export class UsageError extends Error {
  override get name(): string {
    return 'UsageError'
  }
}

/** How items are written to stdout and read from stdin. */
export type Format = 'json' | 'devalue'

/** What `farpipe run` and `farpipe pipe` were asked to do. */
export interface CallCommand {
  command: 'run' | 'pipe'
  /** `module#export` as given. */
  target: string
  /** The function's arguments; `stdin` marks where the `-` argument goes. */
  args: unknown[]
  /** Index of the `-` argument in `args` (pipe only). */
  stdinIndex: number | undefined
  hosts: string[]
  workers: number | undefined
  timeout: number | undefined
  idleTimeout: number | undefined
  highWaterMark: number | undefined
  bytes: boolean
  format: Format
}

/** What `farpipe hosts` was asked to do. */
export interface HostsCommand {
  command: 'hosts'
  hosts: string[]
  workers: number | undefined
}

/** A request for help: the text to print (on stdout, exit 0). */
export interface HelpCommand {
  command: 'help'
  text: string
  /**
   * True when no command was given: that is a usage error, so the help goes
   * to stderr with exit status 2 (a script that forgot its command must not
   * read the help as its data, nor see success).
   */
  missing: boolean
}

export type Command = CallCommand | HostsCommand | HelpCommand

/** An argument as the function receives it: JSON when it parses as JSON, else the string itself. */
export function parseValue(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

function positiveInteger(name: string, text: string | undefined, min = 1): number {
  const n = Number(text)
  if (text === undefined || text.trim() === '' || !Number.isInteger(n) || n < min) {
    throw new UsageError(`option --${name} expects an integer >= ${min}, got ${text === undefined ? 'nothing' : `'${text}'`}`)
  }
  return n
}

/**
 * Parses the command line (without `node` and the script). Options start
 * with `--` (or are `-h`); `-` alone is stdin; anything else, `-3` included,
 * is an argument. After `--`, everything is an argument.
 */
export function parseArgs(argv: string[]): Command {
  const [command, ...rest] = argv
  if (command === undefined) return { command: 'help', text: MAIN_HELP, missing: true }
  if (command === '-h' || command === '--help' || command === 'help') return { command: 'help', text: MAIN_HELP, missing: false }
  if (command !== 'run' && command !== 'pipe' && command !== 'hosts') {
    throw new UsageError(`unknown command '${command}'; expected run, pipe or hosts (see farpipe --help)`)
  }
  const help = command === 'run' ? RUN_HELP : command === 'pipe' ? PIPE_HELP : HOSTS_HELP
  const positional: string[] = []
  const values = new Map<string, string>()
  const hosts: string[] = []
  let bytes = false
  let stdinIndex: number | undefined
  const valued = new Set(['host', 'workers', 'timeout', 'idle-timeout', 'high-water-mark', 'format'])
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!
    if (arg === '--') {
      positional.push(...rest.slice(i + 1))
      break
    }
    if (arg === '-h' || arg === '--help') return { command: 'help', text: help, missing: false }
    if (!arg.startsWith('--')) {
      if (arg === '-') {
        if (command !== 'pipe') throw new UsageError(`'-' (stdin) is an argument of \`farpipe pipe\`, not of \`farpipe ${command}\``)
        if (stdinIndex !== undefined) throw new UsageError(`'-' (stdin) may be given once; it was given twice`)
        stdinIndex = positional.length - 1 // positional[0] is module#export
      }
      positional.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const name = arg.slice(2, eq === -1 ? undefined : eq)
    if (name === 'bytes' && command !== 'hosts' && eq === -1) {
      bytes = true
      continue
    }
    if (!valued.has(name) || (command === 'hosts' && name !== 'workers')) {
      throw new UsageError(`unknown option --${name} for \`farpipe ${command}\` (see farpipe ${command} --help)`)
    }
    const value = eq === -1 ? rest[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new UsageError(`option --${name} expects a value`)
    if (name === 'host') hosts.push(value)
    else values.set(name, value)
  }
  const num = (name: string) => (values.has(name) ? positiveInteger(name, values.get(name)) : undefined)
  const workers = num('workers')
  if (command === 'hosts') {
    if (positional.length === 0) throw new UsageError('farpipe hosts expects at least one host (e.g. farpipe hosts gpu-1 gpu-2)')
    return { command, hosts: positional, workers }
  }
  const target = positional[0]
  if (target === undefined) throw new UsageError(`farpipe ${command} expects module#export (e.g. farpipe ${command} tasks.ts#fibonacci)`)
  if (command === 'pipe' && stdinIndex === undefined) {
    throw new UsageError(`farpipe pipe needs '-' among the arguments, where stdin goes (e.g. farpipe pipe tasks.ts#movingAverage - 3)`)
  }
  const format = values.get('format') ?? 'json'
  if (format !== 'json' && format !== 'devalue') throw new UsageError(`option --format expects json or devalue, got '${format}'`)
  if (bytes && values.has('format')) throw new UsageError('--bytes and --format do not go together: --bytes writes raw bytes, not lines')
  return {
    command,
    target,
    args: positional.slice(1).map((a, i) => (i === stdinIndex ? undefined : parseValue(a))),
    stdinIndex,
    hosts,
    workers,
    timeout: num('timeout'),
    idleTimeout: num('idle-timeout'),
    highWaterMark: num('high-water-mark'),
    bytes,
    format,
  }
}

// -- module#export ------------------------------------------------------------

/** TypeScript modules, which Node cannot import by itself before 22.18 / 23.6 (and not with every syntax after). */
const TS_MODULE = /\.[mc]?tsx?$/

let tsxRegistered = false

/**
 * Lets `import()` load TypeScript: registers tsx's ESM loader once. tsx is a
 * dependency of farpipe for this: a user's `farpipe run tasks.ts#fn` should
 * not need anything installed but farpipe.
 */
async function registerTypeScript(): Promise<void> {
  if (tsxRegistered) return
  tsxRegistered = true
  const { register } = await import('tsx/esm/api')
  register()
}

/** The remote function `target` (`path/to/module.ts#exportName`) names, resolved from `cwd`. */
export async function loadRemote(target: string, cwd = process.cwd()): Promise<{ fn: Remote<AnyFunction>; generator: boolean; file: string; name: string }> {
  const hash = target.lastIndexOf('#')
  if (hash <= 0 || hash === target.length - 1) {
    throw new UsageError(`expected module#export (e.g. tasks.ts#fibonacci), got '${target}'`)
  }
  const spec = target.slice(0, hash)
  const name = target.slice(hash + 1)
  const file = path.resolve(cwd, spec)
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new UsageError(`cannot find the module ${spec}: no file ${file}`)
  }
  if (TS_MODULE.test(file)) await registerTypeScript()
  let ns: Record<string, unknown>
  try {
    ns = (await import(pathToFileURL(file).href)) as Record<string, unknown>
  } catch (err) {
    throw new UsageError(`cannot import ${spec}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
  }
  const remotes = Object.keys(ns).filter((k) => remoteInfo(ns[k]) !== undefined)
  const known = remotes.length > 0 ? `its remote functions are: ${remotes.join(', ')}` : 'it exports no function made with remote()'
  if (!(name in ns)) throw new UsageError(`${spec} has no export named ${name}; ${known}`)
  const fn = ns[name]
  const info = remoteInfo(fn)
  if (!info) {
    const what = typeof fn === 'function' ? 'a plain function' : fn === null ? 'null' : typeof fn
    throw new UsageError(
      `${spec}#${name} is ${what}, not a function made with remote(): wrap it, e.g. \`export const ${name} = remote(...)\`; ${known}`,
    )
  }
  return { fn: fn as Remote<AnyFunction>, generator: info.generator, file, name }
}
