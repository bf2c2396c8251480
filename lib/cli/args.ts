/**
 * The `farpipe` command's arguments: what each subcommand takes, parsed
 * without I/O into a typed object (the help texts are help.ts's). Anything
 * wrong is a {@link UsageError}, which the command reports with exit status
 * 2. And what the arguments name: {@link checkSshConfig} checks the file of
 * `-F`, {@link loadRemote} finds the function `module#export` names.
 *
 * @module
 */
import { closeSync, existsSync, openSync, statSync } from 'node:fs'
import * as path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { AnyFunction } from '../call/types.ts'
import { remoteInfo, type Remote } from '../remote.ts'
import type { KnownHostsPolicy } from '../ssh/config.ts'
import { HOSTS_HELP, MAIN_HELP, PIPE_HELP, RUN_HELP } from './help.ts'

/** A mistake in how the command was called: printed with a hint, exit status 2. */
export class UsageError extends Error {
  override get name(): string {
    return 'UsageError'
  }
}

/** How one side of the pipe carries items: a line per item (JSON or devalue), or raw bytes. */
export type Format = 'bytes' | 'json' | 'devalue'

/** The formats that are lines of text: what a line of stdin is parsed as. */
export type LineFormat = Exclude<Format, 'bytes'>

/** What `farpipe run`, `farpipe pipe` and `farpipe hosts` share: which hosts, and how to reach them. */
export interface HostsOptions {
  hosts: string[]
  workers: number | undefined
  /** The SSH client configuration to read instead of ~/.ssh/config (`-F`, `--ssh-config`). */
  sshConfig: string | undefined
  /** How host keys are checked (`--known-hosts`); undefined leaves it to the SSH config, else strict. */
  knownHosts: KnownHostsPolicy | undefined
}

/** What `farpipe run` and `farpipe pipe` were asked to do. */
export interface CallCommand extends HostsOptions {
  command: 'run' | 'pipe'
  /** `module#export` as given. */
  target: string
  /** The function's arguments; `stdin` marks where the `-` argument goes. */
  args: unknown[]
  /** Index of the `-` argument in `args` (pipe only). */
  stdinIndex: number | undefined
  timeout: number | undefined
  idleTimeout: number | undefined
  highWaterMark: number | undefined
  /** How stdin is read into the `-` argument (`--in`, or both sides with `--bytes` or `--format`). */
  input: Format
  /** How items are written to stdout (`--out`, or both sides with `--bytes` or `--format`). */
  output: Format
}

/** What `farpipe hosts` was asked to do. */
export interface HostsCommand extends HostsOptions {
  command: 'hosts'
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

type CommandName = 'run' | 'pipe' | 'hosts'

/** The options that take a value, and the commands that take each. */
const VALUED: Record<string, readonly CommandName[]> = {
  host: ['run', 'pipe'],
  'ssh-config': ['run', 'pipe', 'hosts'],
  'known-hosts': ['run', 'pipe', 'hosts'],
  workers: ['run', 'pipe', 'hosts'],
  timeout: ['run', 'pipe'],
  'idle-timeout': ['run', 'pipe'],
  'high-water-mark': ['run', 'pipe'],
  in: ['pipe'],
  out: ['run', 'pipe'],
  format: ['run', 'pipe'],
}

const FORMATS: readonly string[] = ['bytes', 'json', 'devalue']
const POLICIES: readonly string[] = ['strict', 'accept-new', 'off']

/** How messages name an option: `-F` is `--ssh-config`. */
const shown = (name: string) => (name === 'ssh-config' ? '--ssh-config (-F)' : `--${name}`)

/**
 * Parses the command line (without `node` and the script). Options start
 * with `--` (or are `-h`, or `-F` with its file as the next argument or
 * glued to it, as ssh takes it); `-` alone is stdin; anything else, `-3`
 * included, is an argument. After `--`, everything is an argument.
 *
 * An option that takes one value may be given twice only with the same
 * value: which of two the user meant cannot be told, and in a pipeline a
 * guess shows only as wrong data.
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
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!
    if (arg === '--') {
      positional.push(...rest.slice(i + 1))
      break
    }
    if (arg === '-h' || arg === '--help') return { command: 'help', text: help, missing: false }
    let name: string
    let inline: string | undefined
    if (arg.startsWith('-F')) {
      name = 'ssh-config'
      if (arg.length > 2) inline = arg.slice(2)
    } else if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      name = arg.slice(2, eq === -1 ? undefined : eq)
      if (eq !== -1) inline = arg.slice(eq + 1)
    } else {
      if (arg === '-') {
        if (command !== 'pipe') throw new UsageError(`'-' (stdin) is an argument of \`farpipe pipe\`, not of \`farpipe ${command}\``)
        if (stdinIndex !== undefined) throw new UsageError(`'-' (stdin) may be given once; it was given twice`)
        stdinIndex = positional.length - 1 // positional[0] is module#export
      }
      positional.push(arg)
      continue
    }
    if (name === 'bytes' && command !== 'hosts') {
      if (inline !== undefined) throw new UsageError(`option --bytes takes no value, got '${inline}' (for one side only: --in bytes or --out bytes)`)
      bytes = true
      continue
    }
    if (name === 'in' && command === 'run') {
      throw new UsageError('option --in is for `farpipe pipe`: `farpipe run` reads no stdin (--out says how items are written)')
    }
    if (!VALUED[name]?.includes(command)) {
      throw new UsageError(`unknown option --${name} for \`farpipe ${command}\` (see farpipe ${command} --help)`)
    }
    let value = inline
    if (value === undefined) {
      const next = rest[i + 1]
      // The next option is not this one's value: `--in --out json` lacks the value of --in.
      if (next === undefined || next.startsWith('--') || next === '-h' || next.startsWith('-F')) {
        throw new UsageError(`option ${shown(name)} expects a value${next === undefined ? '' : `, got the option ${next}`}`)
      }
      value = next
      i++
    }
    if (name === 'host') {
      hosts.push(value)
      continue
    }
    const before = values.get(name)
    if (before !== undefined && before !== value) {
      throw new UsageError(`option ${shown(name)} is given twice, as '${before}' and as '${value}'; give it once`)
    }
    values.set(name, value)
  }
  const num = (name: string) => (values.has(name) ? positiveInteger(name, values.get(name)) : undefined)
  const workers = num('workers')
  const sshConfig = values.get('ssh-config')
  if (sshConfig === '') throw new UsageError('option --ssh-config (-F) expects a file, got an empty string')
  const knownHosts = values.get('known-hosts')
  if (knownHosts !== undefined && !POLICIES.includes(knownHosts)) {
    throw new UsageError(`option --known-hosts expects strict, accept-new or off, got '${knownHosts}'`)
  }
  const reach: HostsOptions = { hosts, workers, sshConfig, knownHosts: knownHosts as KnownHostsPolicy | undefined }
  if (command === 'hosts') {
    if (positional.length === 0) throw new UsageError('farpipe hosts expects at least one host (e.g. farpipe hosts gpu-1 gpu-2)')
    return { command, ...reach, hosts: positional }
  }
  const target = positional[0]
  if (target === undefined) throw new UsageError(`farpipe ${command} expects module#export (e.g. farpipe ${command} tasks.ts#fibonacci)`)
  if (command === 'pipe' && stdinIndex === undefined) {
    throw new UsageError(`farpipe pipe needs '-' among the arguments, where stdin goes (e.g. farpipe pipe tasks.ts#movingAverage - 3)`)
  }
  const { input, output } = formats(values, bytes)
  return {
    command,
    target,
    args: positional.slice(1).map((a, i) => (i === stdinIndex ? undefined : parseValue(a))),
    stdinIndex,
    ...reach,
    timeout: num('timeout'),
    idleTimeout: num('idle-timeout'),
    highWaterMark: num('high-water-mark'),
    input,
    output,
  }
}

/**
 * Each side's format: `--in` and `--out` set one side each, `--bytes` and
 * `--format` both. A side set both ways must agree: `--bytes --in json`
 * asks for two things at once, and neither can be guessed as the one meant.
 */
function formats(values: Map<string, string>, bytes: boolean): { input: Format; output: Format } {
  const format = values.get('format')
  if (format !== undefined && format !== 'json' && format !== 'devalue') {
    throw new UsageError(`option --format expects json or devalue, got '${format}' (for raw bytes: --bytes, or --in bytes / --out bytes for one side)`)
  }
  if (bytes && format !== undefined) {
    throw new UsageError(`--bytes and --format ${format} do not go together: each sets both sides; for bytes one way and lines the other, give --in and --out`)
  }
  const both: Format | undefined = bytes ? 'bytes' : format
  const side = (name: 'in' | 'out'): Format => {
    const value = values.get(name)
    if (value === undefined) return both ?? 'json'
    if (!FORMATS.includes(value)) throw new UsageError(`option --${name} expects bytes, json or devalue, got '${value}'`)
    if (both !== undefined && value !== both) {
      throw new UsageError(
        `--${name} ${value} contradicts ${bytes ? '--bytes' : `--format ${format}`}, which makes both sides ${both}; give --in and --out alone for a different format each way`,
      )
    }
    return value as Format
  }
  return { input: side('in'), output: side('out') }
}

/**
 * Checks the file given to `-F` before anything connects: one that is
 * missing, a directory or unreadable is a usage error naming it. The pool
 * reads the file itself (and only when there are SSH hosts); this makes a
 * mistake in it show the same way with or without hosts. `/dev/null` is
 * the usual way to say "no config", as with ssh.
 */
export function checkSshConfig(file: string): void {
  const full = path.resolve(file)
  const named = full === file ? file : `${file} (${full})`
  const fail = (what: string, cause?: unknown) => new UsageError(`option --ssh-config (-F): ${named} ${what}`, { cause })
  let isFile: boolean
  try {
    const st = statSync(full)
    if (st.isDirectory()) throw fail('is a directory, not an SSH config file')
    isFile = st.isFile()
  } catch (err) {
    if (err instanceof UsageError) throw err
    const code = (err as NodeJS.ErrnoException).code
    throw fail(code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : `cannot be read: ${(err as Error).message}`, err)
  }
  if (!isFile && full !== '/dev/null') throw fail('is not a regular file (a pipe, socket or device); give a config file, or /dev/null for none')
  try {
    closeSync(openSync(full, 'r'))
  } catch (err) {
    throw fail(`cannot be read: ${(err as Error).message}`, err)
  }
}

// -- module#export ------------------------------------------------------------

/** TypeScript modules, which Node cannot import by itself before 22.18 / 23.6 (and not with every syntax after). */
const TS_MODULE = /\.[mc]?tsx?$/

/**
 * Imports a TypeScript module as the workers run it: the bundle esbuild makes
 * of it to ship (bundle.ts, built once per process: the first call sends
 * this one), with farpipe's runtime published for its `farpipe` import. It
 * is imported from a `data:` URL, with its `require` anchored at the file:
 * no temporary file to leave behind or to need a writable $TMPDIR for.
 * Node cannot import TypeScript by itself before 22.18; a loader (tsx)
 * would add ~150 ms of this process's time to every command, for a module
 * whose bundle is built anyway.
 */
async function importBundled(url: string): Promise<Record<string, unknown>> {
  const [{ bundleModule, REQUIRE_BANNER }, { publishRuntime }] = await Promise.all([import('../bundle.ts'), import('../runtime-exports.ts')])
  const bundle = await bundleModule(url)
  publishRuntime()
  let code = Buffer.from(bundle.code).toString('utf8')
  if (code.startsWith(REQUIRE_BANNER)) code = REQUIRE_BANNER.replace('import.meta.url', JSON.stringify(url)) + code.slice(REQUIRE_BANNER.length)
  return (await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`)) as Record<string, unknown>
}

/**
 * The module file and export `target` (`path/to/module.ts#exportName`) names,
 * resolved from `cwd`, without importing anything: throws a UsageError for a
 * malformed target or a file that is not there.
 */
function locateRemote(target: string, cwd = process.cwd()): { spec: string; file: string; name: string } {
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
  return { spec, file, name }
}

/** The remote function `target` (`path/to/module.ts#exportName`) names, resolved from `cwd`. */
export async function loadRemote(target: string, cwd = process.cwd()): Promise<{ fn: Remote<AnyFunction>; generator: boolean; file: string; name: string }> {
  const { spec, file, name } = locateRemote(target, cwd)
  const ts = TS_MODULE.test(file)
  const url = pathToFileURL(file).href
  let ns: Record<string, unknown>
  try {
    ns = ts ? await importBundled(url) : ((await import(url)) as Record<string, unknown>)
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
  if (ts) {
    // Loaded from its bundle: the module to ship is the file itself, and the export is the one named.
    info.module = url
    info.exportName = name
    info.site = file
  }
  return { fn: fn as Remote<AnyFunction>, generator: info.generator, file, name }
}
