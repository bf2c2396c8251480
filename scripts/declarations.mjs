// The declarations dist/ ships, made to stand on their own (run by
// build.mjs after tsc):
//
// 1. Relative imports name the .js file. The sources import `./remote.ts`
//    (allowImportingTsExtensions), and rewriteRelativeImportExtensions
//    rewrites that in the JavaScript but not in the declarations
//    (microsoft/TypeScript#61037). tsc reads `./remote.ts` in a .d.ts as
//    `./remote.d.ts`, but editors, API extractors and declaration bundlers
//    look for a file by the name written.
// 2. Only what the package's types entry reaches ships. Internal modules'
//    declarations name their own tools' types (lib/ssh/connect.ts names
//    ssh2's `Client`, whose types are @types/ssh2, a devDependency): shipped,
//    they are files a consumer's tools cannot resolve. `exports` lets no one
//    import them, so they go. A reached declaration that names a package is
//    spec/declarations.spec.ts's business: it compiles the lot with only the
//    package's dependencies installed.
//
// The parser, not a pattern, finds the specifiers: doc comments quote
// `import ... from './tasks.ts'` as users write it, and those stay.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import * as path from 'node:path'

const require = createRequire(import.meta.url)
const ts = require('typescript')

/** What tsc's rewriteRelativeImportExtensions makes of each source extension. */
const JS_OF = { '.ts': '.js', '.tsx': '.js', '.mts': '.mjs', '.cts': '.cjs' }
/** The declaration beside each JavaScript extension. */
const DECLARATION_OF = { '.js': '.d.ts', '.mjs': '.d.mts', '.cjs': '.d.cts' }

const relative = (spec) => spec.startsWith('./') || spec.startsWith('../')

/** Every `.d.ts` (`.d.mts`, `.d.cts`) under `dir`. */
function declarationFiles(dir) {
  const out = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...declarationFiles(full))
    else if (/\.d\.[mc]?ts$/.test(entry.name)) out.push(full)
  }
  return out
}

/**
 * The module specifiers of a declaration file, each with where its text
 * (inside the quotes) starts and ends: imports, re-exports, `import("…")`
 * types, `import x = require("…")` and `/// <reference path>`.
 */
function specifiers(file, text) {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
  const out = sf.referencedFiles.map((r) => ({ text: r.fileName, start: r.pos, end: r.end, reference: true }))
  const literal = (node) => out.push({ text: node.text, start: node.getStart(sf) + 1, end: node.getEnd() - 1 })
  const visit = (node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      literal(node.moduleSpecifier)
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      literal(node.argument.literal)
    } else if (ts.isExternalModuleReference(node) && ts.isStringLiteral(node.expression)) {
      literal(node.expression)
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

/** `text` with its relative `.ts` (`.tsx`, `.mts`, `.cts`) module specifiers naming the JavaScript instead. */
function rewrite(file, text) {
  const edits = specifiers(file, text).filter((s) => !s.reference && relative(s.text) && !/\.d\.[mc]?ts$/.test(s.text) && JS_OF[path.extname(s.text)])
  let out = text
  for (const s of edits.sort((a, b) => b.start - a.start)) {
    const ext = path.extname(s.text)
    out = out.slice(0, s.start) + s.text.slice(0, -ext.length) + JS_OF[ext] + out.slice(s.end)
  }
  return out
}

/** The declaration a relative specifier of `from` names, or undefined when it names none. */
function target(from, s) {
  if (s.reference) return path.resolve(path.dirname(from), s.text)
  const ext = path.extname(s.text)
  return DECLARATION_OF[ext] && path.resolve(path.dirname(from), s.text.slice(0, -ext.length) + DECLARATION_OF[ext])
}

/**
 * Rewrites the relative specifiers of every declaration under `dist`, then
 * removes the declarations that `entry` (and the package's own name, for a
 * self-import) does not reach. Throws when a reached declaration names a
 * relative file that is not there. Returns the shipped and removed files.
 */
export function publishDeclarations(dist, entry, name) {
  const files = declarationFiles(dist)
  const texts = new Map()
  for (const file of files) {
    const text = rewrite(file, readFileSync(file, 'utf8'))
    texts.set(file, text)
    writeFileSync(file, text)
  }
  const reached = new Set()
  const missing = []
  const todo = [entry]
  while (todo.length > 0) {
    const file = todo.pop()
    if (reached.has(file)) continue
    reached.add(file)
    for (const s of specifiers(file, texts.get(file))) {
      if (s.text === name) todo.push(entry)
      if (!relative(s.text) && !s.reference) continue
      const decl = target(file, s)
      if (decl && texts.has(decl)) todo.push(decl)
      else missing.push(`${path.relative(dist, file)}: '${s.text}'`)
    }
  }
  if (missing.length > 0) throw new Error(`declarations that name a file dist does not have:\n${missing.join('\n')}`)
  const removed = files.filter((f) => !reached.has(f))
  for (const file of removed) rmSync(file)
  return { shipped: [...reached], removed }
}
