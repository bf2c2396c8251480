/**
 * Bundling: a module of remote functions becomes one ESM file, built with
 * esbuild for Node and named by the SHA-256 of its contents. Workers cache
 * bundles by that hash, so a module is shipped once per host, not per call.
 *
 * Imports of `farpipe` inside the module resolve to the worker's own
 * runtime (so `context()` there is the worker's), and native addons are
 * refused: a `.node` file cannot travel in a JavaScript bundle.
 *
 * @module
 */
import { createHash } from 'node:crypto'
import { fileURLToPath, pathToFileURL } from 'node:url'
import * as path from 'node:path'
import { FarpipeError } from './errors.ts'

/** A bundled module, ready to ship. */
export interface Bundle {
  /** SHA-256 of `code`, hex. */
  hash: string
  /** The bundle itself. */
  code: Uint8Array
  /** The module it was built from, for messages (`tasks.ts`). */
  name: string
}

/** The global the worker's runtime is published under, for bundles to import from. */
export const RUNTIME_GLOBAL = 'farpipe.runtime'

/**
 * The module that stands for `farpipe` inside a bundle. It re-exports the
 * worker's runtime, whatever copy of farpipe the bundle was built against.
 *
 * `context` and the default export (the whole runtime) come out of calls
 * marked pure, so esbuild drops them from a bundle that does not use them,
 * and the names of those calls ({@link CONTEXT_MARKERS}) appear in the
 * bundle only when it does: the worker then runs its calls without
 * `AsyncLocalStorage`, which slows every `await` in the process.
 */
const runtimeShim = `
const rt = globalThis[Symbol.for(${JSON.stringify(RUNTIME_GLOBAL)})];
if (!rt) throw new Error('farpipe: this bundle must be loaded by a farpipe worker');
function __farpipeContext(r) { return r.context }
function __farpipeAll(r) { return r }
export const remote = rt.remote, input = rt.input, pool = rt.pool;
export const context = /* @__PURE__ */ __farpipeContext(rt);
export const FarpipeError = rt.FarpipeError, RemoteError = rt.RemoteError, TransportError = rt.TransportError,
  ProtocolError = rt.ProtocolError, SerializeError = rt.SerializeError, TimeoutError = rt.TimeoutError,
  CancelError = rt.CancelError, HostKeyError = rt.HostKeyError;
export default /* @__PURE__ */ __farpipeAll(rt);
`

/**
 * Words in a bundle's code that mean its calls need their context: the
 * shim's markers (it imports `context`, or the whole runtime), and what
 * prints (the worker tags each printed line with the call that printed it,
 * which it learns from the context).
 */
export const CONTEXT_MARKERS = /__farpipeContext|__farpipeAll|\bconsole\b|\bstdout\b|\bstderr\b/

/**
 * True when calls of functions in this bundle may need `context()`: the
 * bundle names it or the whole runtime, or prints. A function that reaches
 * `context()` some other way (`eval`, a computed property of the runtime
 * object) is not seen: its `context()` is the direct one, never aborted.
 */
export function needsContext(code: Uint8Array): boolean {
  const text = Buffer.from(code.buffer, code.byteOffset, code.byteLength).toString('latin1')
  // The inline source map (base64) is not code.
  const map = text.lastIndexOf('\n//# sourceMappingURL=')
  return CONTEXT_MARKERS.test(map < 0 ? text : text.slice(0, map))
}

/** Bundles by module URL: each module is built once per process. */
const byModule = new Map<string, Promise<Bundle>>()
/** Bundles by hash, to answer a worker that asks for one. */
const byHash = new Map<string, Bundle>()

/** The bundle with this hash, if this process built it. */
export function bundleByHash(hash: string): Bundle | undefined {
  return byHash.get(hash)
}

/** Bundles the module at `moduleUrl` (once per process) and returns it. */
export function bundleModule(moduleUrl: string): Promise<Bundle> {
  let p = byModule.get(moduleUrl)
  if (!p) {
    p = build(moduleUrl)
    byModule.set(moduleUrl, p)
    // A failed build may succeed after the user fixes the file; do not cache failures.
    p.catch(() => byModule.delete(moduleUrl))
  }
  return p
}

/** The first line of every bundle: CommonJS dependencies call require(); the bundle gets a real one, anchored where it is loaded from. */
export const REQUIRE_BANNER = "import { createRequire as __farpipeCreateRequire } from 'node:module'; const require = __farpipeCreateRequire(import.meta.url);"

/** Builds any entry file into one ESM bundle for Node (used for modules and for the worker itself). */
export async function buildFile(entry: string, options: { shimFarpipe: boolean; sourcemap?: boolean }): Promise<Uint8Array> {
  const esbuild = await import('esbuild')
  const plugins: import('esbuild').Plugin[] = [
    {
      name: 'farpipe',
      setup(build) {
        if (options.shimFarpipe) {
          build.onResolve({ filter: /^farpipe$/ }, () => ({ path: 'farpipe', namespace: 'farpipe-runtime' }))
          build.onLoad({ filter: /.*/, namespace: 'farpipe-runtime' }, () => ({ contents: runtimeShim, loader: 'js' }))
        }
        build.onLoad({ filter: /\.node$/ }, (args) => ({
          errors: [{ text: `native addon ${args.path} cannot be bundled: farpipe ships one JavaScript file to each host; install the package on the host and load it at run time, or use a pure-JS alternative` }],
        }))
      },
    },
  ]
  // The output is never written; its name only anchors the source map's relative paths.
  const outfile = path.join(path.dirname(entry), '.farpipe-bundle.mjs')
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    logLevel: 'silent',
    sourcemap: options.sourcemap ? 'external' : false,
    sourcesContent: false,
    plugins,
    // CommonJS dependencies call require(); give the bundle a real one.
    banner: { js: REQUIRE_BANNER },
  })
  const js = result.outputFiles.find((f) => f.path.endsWith('.mjs'))
  if (!js) throw new FarpipeError(`esbuild produced no output for ${entry}`)
  const map = result.outputFiles.find((f) => f.path.endsWith('.map'))
  if (!map) return js.contents
  // Inline the map with absolute file URLs, so remote stack traces name the
  // caller's files wherever the bundle is cached.
  const json = JSON.parse(map.text) as { sources: string[] }
  json.sources = json.sources.map((s) => (s.includes(':') ? s : pathToFileURL(path.resolve(path.dirname(outfile), s)).href))
  const comment = `\n//# sourceMappingURL=data:application/json;base64,${Buffer.from(JSON.stringify(json)).toString('base64')}\n`
  return Buffer.concat([js.contents, Buffer.from(comment)])
}

async function build(moduleUrl: string): Promise<Bundle> {
  if (!moduleUrl.startsWith('file:')) {
    throw new FarpipeError(`cannot bundle ${moduleUrl || 'a module with no file'}: remote functions must be defined in a module file`)
  }
  const file = fileURLToPath(moduleUrl)
  const name = path.relative(process.cwd(), file) || path.basename(file)
  let code: Uint8Array
  try {
    code = await buildFile(file, { shimFarpipe: true, sourcemap: true })
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { file: string; line: number; column: number } | null }[] }).errors
    const detail = errors?.length
      ? errors.map((e) => (e.location ? `${e.location.file}:${e.location.line}:${e.location.column + 1}: ${e.text}` : e.text)).join('; ')
      : (err as Error).message
    throw new FarpipeError(`bundling ${name} failed: ${detail}`, { cause: err })
  }
  const hash = createHash('sha256').update(code).digest('hex')
  const bundle: Bundle = { hash, code, name }
  byHash.set(hash, bundle)
  return bundle
}
