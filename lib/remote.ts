/**
 * `remote()`: marks a function as runnable on a worker and records the
 * module that defines it, so the module can be bundled and shipped.
 *
 * @module
 */
import { findSourceMap } from 'node:module'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { FarpipeError } from './errors.ts'
import type { CallOptions } from './options.ts'

/** Where farpipe keeps what it knows about a remote function (a registered symbol, shared by every copy of farpipe in a process). */
const INFO = Symbol.for('farpipe.remote')

declare const remoteBrand: unique symbol

/**
 * A function marked with {@link remote}. It behaves exactly as the function
 * it wraps (calling it runs it here); the brand lets `Pool.run` accept it.
 *
 * @typeParam F the function's own type
 */
export type Remote<F extends (...args: any[]) => unknown> = F & {
  /** A compile-time brand only; no such property exists at run time. */
  readonly [remoteBrand]: F
}

/** What farpipe records about a remote function. */
export interface RemoteInfo {
  /** The defining module, as a `file:` URL. */
  module: string
  /** `file:line:column` of the `remote()` call, for messages. */
  site: string
  /** True for generator functions, whose calls stream what they yield. */
  generator: boolean
  /** Default call options given to `remote(fn, options)`. */
  options: CallOptions
  /** The name of the export, once looked up. */
  exportName?: string
}

/**
 * Marks `fn` (async or sync; generator or not) as runnable remotely and
 * returns it unchanged in behaviour: calling it directly still runs it here.
 *
 * The function must be exported from the module that calls `remote()`: the
 * module is bundled and evaluated on every worker, which finds the function
 * by its export name. Keep that module free of top-level side effects.
 *
 * ```ts
 * export const fibonacci = remote(async function* (n: number) {
 *   let [a, b] = [0, 1]
 *   for (let i = 0; i < n; i++) { yield a; [a, b] = [b, a + b] }
 * })
 * ```
 *
 * @typeParam F the function's type, kept whole so calls are typed from it
 * @param fn the function to run remotely
 * @param options defaults for every call of this function (`timeout`,
 *   `idleTimeout`, `highWaterMark`, ...); `Pool.with()` overrides them
 */
export function remote<F extends (...args: any[]) => unknown>(fn: F, options: CallOptions = {}): Remote<F> {
  if (typeof fn !== 'function') {
    throw new TypeError(`remote() expects a function, got ${fn === null ? 'null' : typeof fn}`)
  }
  const site = callerSite(remote)
  const info: RemoteInfo = {
    module: site?.url ?? '',
    site: site ? sourcePosition(site) : '<unknown>',
    generator: isGeneratorFunction(fn),
    options,
  }
  Object.defineProperty(fn, INFO, { value: info, configurable: true })
  return fn as Remote<F>
}

/** What farpipe recorded about `fn`, or undefined when it is not a remote function. */
export function remoteInfo(fn: unknown): RemoteInfo | undefined {
  return typeof fn === 'function' ? ((fn as unknown as Record<symbol, RemoteInfo>)[INFO] ?? undefined) : undefined
}

/** True for `function*` and `async function*`. */
export function isGeneratorFunction(fn: Function): boolean {
  const tag = Object.prototype.toString.call(fn)
  return tag === '[object GeneratorFunction]' || tag === '[object AsyncGeneratorFunction]'
}

interface Site {
  url: string
  file: string
  line: number
  column: number
  /** True when the frame is a module's top-level code (not inside any function). */
  topLevel: boolean
}

/** The call sites above `below` on the current stack, async frames included. */
export function stackSites(below: Function): Site[] {
  const prev = Error.prepareStackTrace
  const limit = Error.stackTraceLimit
  try {
    Error.stackTraceLimit = 50
    Error.prepareStackTrace = (_, sites) => sites
    const holder: { stack?: NodeJS.CallSite[] } = {}
    Error.captureStackTrace(holder, below)
    const out: Site[] = []
    for (const s of holder.stack ?? []) {
      const name = s.getFileName()
      if (!name || name.startsWith('node:')) continue
      const url = name.startsWith('file:') ? name : name.startsWith('/') ? pathToFileURL(name).href : name
      const file = url.startsWith('file:') ? fileURLToPath(url) : url
      // A module's own code is enclosed by the module at 1:1; any function starts elsewhere.
      const enclosing = s as unknown as { getEnclosingLineNumber?(): number; getEnclosingColumnNumber?(): number }
      const topLevel = enclosing.getEnclosingLineNumber?.() === 1 && enclosing.getEnclosingColumnNumber?.() === 1 && !s.getFunctionName()
      out.push({ url, file, line: s.getLineNumber() ?? 0, column: s.getColumnNumber() ?? 0, topLevel })
    }
    return out
  } finally {
    Error.prepareStackTrace = prev
    Error.stackTraceLimit = limit
  }
}

function callerSite(below: Function): Site | undefined {
  return stackSites(below)[0]
}

/**
 * `file:line:column` of a call site in the file the user wrote, for
 * messages. A raw call site gives the position in the code V8 ran, and a
 * module that went through a transform (tsx compiles .ts as it loads it,
 * into fewer lines) ran other code than its file. Node keeps the source map
 * of such a module when source maps are on (tsx turns them on) and maps the
 * position back; a module that ran as written (.js under plain node) has no
 * map, and its position is its own.
 */
function sourcePosition(site: Site): string {
  try {
    // ESM modules are keyed by URL in Node's source map cache, CommonJS ones by path.
    const map = findSourceMap(site.url) ?? findSourceMap(site.file)
    const entry = map?.findEntry(site.line - 1, site.column - 1)
    if (entry && 'originalSource' in entry) {
      const source = entry.originalSource.startsWith('file:') ? fileURLToPath(entry.originalSource) : entry.originalSource
      return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`
    }
  } catch {
    // A map that cannot be read leaves the position as V8 gave it: a message must not fail over its location.
  }
  return `${site.file}:${site.line}:${site.column}`
}

/**
 * The name under which `fn` is exported from its module. The module is
 * already loaded (it called `remote()`), so importing it again only looks it
 * up. A function that is not exported cannot be found on the worker, so it
 * is refused with the way to fix it.
 */
export async function exportNameOf(fn: Function, info: RemoteInfo): Promise<string> {
  if (info.exportName) return info.exportName
  if (!info.module.startsWith('file:')) {
    throw new FarpipeError(`the remote function defined at ${info.site} is not in a module file, so it cannot be shipped to a worker`)
  }
  const ns = (await import(info.module)) as Record<string, unknown>
  for (const [name, value] of Object.entries(ns)) {
    if (value === fn) {
      info.exportName = name
      return name
    }
  }
  const label = fn.name ? `${fn.name} ` : ''
  throw new FarpipeError(
    `the remote function ${label}defined at ${info.site} is not exported from its module: workers find it by its export name. ` +
      `Export it, e.g. \`export const ${fn.name || 'myFunction'} = remote(...)\`.`,
  )
}
