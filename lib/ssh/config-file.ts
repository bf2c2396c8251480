/**
 * Reading ssh_config files the way OpenSSH does: `Include` followed (with
 * globs, relative to ~/.ssh, loops refused), `Host` patterns matched here
 * (case-insensitive, `?` exactly one character, `!` negation), and the
 * result flattened into one config that the `ssh-config` package can
 * compute values from. Nothing that would run a program is kept.
 *
 * @module
 */
import { readdir, readFile, realpath, stat } from 'node:fs/promises'
import * as path from 'node:path'
import SSHConfig, { LineType, type Directive, type Line, type Match } from 'ssh-config'
import { FarpipeError } from '../errors.ts'

/** How deep Includes may nest before the config is refused (as OpenSSH's limit). */
const MAX_INCLUDE_DEPTH = 16

/** One parsed config file and the files each of its `Include` directives brings in. */
export interface ConfigFile {
  file: string
  lines: SSHConfig
  includes: Map<Line, ConfigFile[]>
}

/** Reads a config file and, recursively, what it includes. A missing file gives undefined. */
export async function loadConfig(file: string, home: string, chain: string[]): Promise<ConfigFile | undefined> {
  let real: string
  try {
    real = await realpath(file)
    if (!(await stat(real)).isFile()) return undefined
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined
    throw new FarpipeError(`cannot read SSH config ${file}: ${(err as Error).message}`, { cause: err })
  }
  if (chain.includes(real)) throw new FarpipeError(`SSH config Include loop: ${[...chain, real].join(' → ')}`)
  if (chain.length > MAX_INCLUDE_DEPTH) {
    throw new FarpipeError(`SSH config Includes nest more than ${MAX_INCLUDE_DEPTH} deep: ${[...chain, real].join(' → ')}`)
  }
  let lines: SSHConfig
  try {
    lines = SSHConfig.parse(await readFile(real, 'utf8'))
  } catch (err) {
    throw new FarpipeError(`cannot parse SSH config ${real}: ${(err as Error).message}`, { cause: err })
  }
  const includes = new Map<Line, ConfigFile[]>()
  const inner = [...chain, real]
  for (const line of lines.flatMap((l) => ('config' in l ? [l, ...l.config] : [l]))) {
    if (line.type !== LineType.DIRECTIVE || !/^include$/i.test(line.param)) continue
    const files: ConfigFile[] = []
    for (const arg of valuesOf(line.value)) {
      const where = expandTilde(arg, home, (what) => new FarpipeError(`SSH config ${real}: Include ${JSON.stringify(arg)}: ${what}`))
      // Relative Includes of a user config are in ~/.ssh, wherever the including file is.
      for (const match of await glob(path.isAbsolute(where) ? where : path.join(home, '.ssh', where))) {
        const child = await loadConfig(match, home, inner)
        if (child) files.push(child)
      }
    }
    includes.set(line, files)
  }
  return { file: real, lines, includes }
}

/** The files a pattern with `*` and `?` (in any component) names, sorted as glob(3) sorts them. Hidden names need a pattern starting with ".". */
async function glob(pattern: string): Promise<string[]> {
  if (!/[*?]/.test(pattern)) return [pattern]
  const { root } = path.parse(pattern)
  let found = [root]
  for (const part of pattern.slice(root.length).split(path.sep === '\\' ? /[\\/]/ : '/')) {
    if (part === '') continue
    const next: string[] = []
    for (const dir of found) {
      if (!/[*?]/.test(part)) {
        next.push(path.join(dir, part))
        continue
      }
      const re = globRegExp(part)
      let names: string[] = []
      try {
        names = await readdir(dir)
      } catch {
        // Not a directory, or missing: no match, as glob(3) has it.
      }
      for (const name of names) if (re.test(name) && (part.startsWith('.') || !name.startsWith('.'))) next.push(path.join(dir, name))
    }
    found = next
  }
  return found.sort()
}

/** A regular expression for an ssh/glob pattern: `*` any run of characters, `?` exactly one. */
function globRegExp(pattern: string, flags = ''): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  return new RegExp(`^${body}$`, `s${flags}`)
}

/** Whether a `Host` pattern list matches: any pattern does and no negated one does (case-insensitive, as OpenSSH lowercases the host). */
function hostMatches(patterns: string[], host: string): boolean {
  let matched = false
  for (const p of patterns) {
    const negated = p.startsWith('!')
    if (!globRegExp(negated ? p.slice(1) : p, 'i').test(host)) continue
    if (negated) return false
    matched = true
  }
  return matched
}

function valuesOf(value: Directive['value']): string[] {
  return typeof value === 'string' ? [value] : value.map((v) => v.val)
}

/**
 * When a line applies: always, never, or when a `Match` block's criteria
 * hold (those are left to ssh-config, since they depend on values computed
 * on the way, like `Match user`).
 */
type Guard = boolean | Match

/** The synthetic directive ProxyJump and ProxyCommand both become, so that the first of them wins as in OpenSSH. */
export const PROXY = 'FarpipeProxy'
/** ssh-config tracks HostName and User for `Match host`/`Match user` only when spelt in this case. */
const CANONICAL: Record<string, string> = { hostname: 'HostName', user: 'User' }

/**
 * The config as it applies to `host`: Includes spliced in, every `Host`
 * block decided here (kept as `Host *` or dropped), `Match` blocks kept for
 * ssh-config to evaluate, directives that would run programs dropped.
 */
export function flatten(root: ConfigFile, host: string): SSHConfig {
  const out = new SSHConfig()
  let open: { guard: Guard; config: SSHConfig } | undefined
  const add = (line: Directive, guard: Guard) => {
    if (guard === false) return
    if (open === undefined || open.guard !== guard) {
      open = { guard, config: new SSHConfig() }
      out.push(
        guard === true
          ? { type: LineType.DIRECTIVE, param: 'Host', separator: ' ', value: '*', before: '', after: '\n', config: open.config }
          : { ...guard, config: open.config },
      )
    }
    open.config.push(line)
  }
  const walk = (file: ConfigFile, lines: Line[], guard: Guard) => {
    for (const line of lines) {
      if (line.type !== LineType.DIRECTIVE) continue
      if ('config' in line) {
        const inner = /^host$/i.test(line.param) ? (guard !== false && hostMatches(valuesOf(line.value), host) ? guard : false) : both(guard, line as Match, file.file)
        walk(file, line.config, inner)
      } else if (/^include$/i.test(line.param)) {
        // The included lines apply under the enclosing block's guard; the lines after the Include return to it.
        for (const child of file.includes.get(line) ?? []) walk(child, child.lines, guard)
      } else {
        const key = line.param.toLowerCase()
        // Canonicalization would have ssh-config run nslookup; farpipe connects to the name as resolved.
        if (key === 'canonicalizehostname' || key === 'canonicaldomains') continue
        if (key === 'proxyjump' || key === 'proxycommand') {
          add({ ...line, param: PROXY, value: `${key === 'proxyjump' ? 'jump' : 'command'} ${valuesOf(line.value).join(' ')}` }, guard)
        } else {
          add(CANONICAL[key] ? { ...line, param: CANONICAL[key] } : line, guard)
        }
      }
    }
  }
  walk(root, root.lines, true)
  return out
}

/** The guard of a Match block met under another guard (an Include inside a Match block). */
function both(outer: Guard, match: Match, file: string): Guard {
  if (outer === false) return false
  if (outer === true) return match
  const seen = Object.keys(outer.criteria).map((k) => k.toLowerCase())
  for (const key of Object.keys(match.criteria)) {
    if (key.toLowerCase() !== 'all' && seen.includes(key.toLowerCase())) {
      throw new FarpipeError(`SSH config ${file}: a Match block included from inside another Match block repeats its "${key}" criterion, which farpipe cannot combine`)
    }
  }
  return { ...match, criteria: { ...outer.criteria, ...match.criteria } }
}

/** Expands a leading `~` to `home`; `~user` paths are refused through `fail`. */
export function expandTilde(p: string, home: string, fail: (what: string) => Error): string {
  if (!p.startsWith('~')) return p
  if (p === '~') return home
  if (p[1] === '/' || p[1] === path.sep) return path.join(home, p.slice(2))
  throw fail('~user paths are not supported')
}
