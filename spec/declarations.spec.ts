// The declarations dist/ ships, read the way a consumer's TypeScript reads
// them once farpipe is installed: with only the package's own dependencies
// and peers beside it (none of its devDependencies, so no @types/ssh2), and
// no skipLibCheck. Fast and offline: the package is laid out by hand in a
// temporary node_modules (its package.json and dist's .d.ts files, the
// dependencies linked from this repository's node_modules); the packed
// tarball and a real install are spec/package.spec.ts's business.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { tempDir } from './helpers.ts'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const dist = path.join(root, 'dist')

/** Every `.d.ts` under `dir`, as absolute paths. */
function declarations(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...declarations(full))
    else if (/\.d\.[mc]?ts$/.test(entry.name)) out.push(full)
  }
  return out.sort()
}

/** The module specifiers a declaration file names: imports, re-exports, `import("…")` types and `/// <reference path>`. */
function specifiers(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true)
  const out = sf.referencedFiles.map((r) => r.fileName)
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push(node.moduleSpecifier.text)
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push(node.argument.literal.text)
    } else if (ts.isExternalModuleReference(node) && ts.isStringLiteral(node.expression)) {
      out.push(node.expression.text)
    }
    ts.forEachChild(node, visit)
  }
  visit(sf)
  return out
}

/** What a relative specifier of Node's ESM resolution (`./x.js`) needs beside it: its declaration (`./x.d.ts`). */
const DECLARATION_OF: Record<string, string> = { '.js': '.d.ts', '.mjs': '.d.mts', '.cjs': '.d.cts' }

const s = suite('declarations')

s('every relative import in dist\'s declarations names a .js file whose .d.ts ships beside it', () => {
  const files = declarations(dist)
  assert.ok(files.some((f) => f.endsWith(`${path.sep}index.d.ts`)), `no dist/index.d.ts: build first (node scripts/build.mjs)`)
  const wrong: string[] = []
  for (const file of files) {
    for (const spec of specifiers(file).filter((x) => x.startsWith('./') || x.startsWith('../'))) {
      const ext = path.extname(spec)
      const decl = DECLARATION_OF[ext] && path.resolve(path.dirname(file), spec.slice(0, -ext.length) + DECLARATION_OF[ext])
      if (!decl || !existsSync(decl)) wrong.push(`${path.relative(root, file)}: '${spec}'${decl ? ` (no ${path.relative(root, decl)})` : ''}`)
    }
  }
  // tsc reads `./remote.ts` in a .d.ts as `./remote.d.ts`, but editors, API
  // extractors and declaration bundlers look for a file by that name.
  assert.equal(wrong, [], `relative imports that do not name a shipped declaration by its .js name:\n${wrong.join('\n')}`)
})

s('every shipped declaration type-checks with only the package\'s dependencies installed: strict, no skipLibCheck', () => {
  const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>
    peerDependencies?: Record<string, string>
  }
  const app = tempDir('fp-decl-app-')
  try {
    const pkg = path.join(app, 'node_modules', 'farpipe')
    mkdirSync(pkg, { recursive: true })
    cpSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'))
    const shipped = declarations(dist)
    for (const f of shipped) cpSync(f, path.join(pkg, path.relative(root, f)), { recursive: true })
    // Linked, not copied: the compiler follows the link to the real folder,
    // whose own neighbours (undici-types beside @types/node) are there too,
    // but nothing resolves *to* a package that is not linked here.
    const deps = Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })
    for (const name of deps) {
      const real = path.join(root, 'node_modules', name)
      if (!existsSync(real)) continue
      mkdirSync(path.dirname(path.join(app, 'node_modules', name)), { recursive: true })
      symlinkSync(real, path.join(app, 'node_modules', name), 'dir')
    }
    assert.not.ok(existsSync(path.join(app, 'node_modules', '@types', 'ssh2')), '@types/ssh2 is not among the package\'s dependencies')
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    writeFileSync(path.join(app, 'consumer.ts'), "import * as farpipe from 'farpipe'\nexport type Api = typeof farpipe\n")
    const { options, errors } = ts.convertCompilerOptionsFromJson(
      {
        strict: true,
        target: 'es2022',
        module: 'nodenext',
        moduleResolution: 'nodenext',
        // No DOM: the web streams and EventTarget must come from the node
        // types that index.d.ts references, as they do for a Node consumer.
        lib: ['es2023', 'esnext.disposable'],
        types: [],
        skipLibCheck: false,
        noEmit: true,
      },
      app,
    )
    assert.equal(errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')), [])
    // Every shipped declaration is a root, not only what index.d.ts reaches:
    // `exports` hides the others from Node's resolution, but not from tools
    // that walk the package, nor from a tsconfig on the legacy `node10`
    // resolution, which ignores `exports`.
    const roots = [path.join(app, 'consumer.ts'), ...shipped.map((f) => path.join(pkg, path.relative(root, f)))]
    const program = ts.createProgram(roots, options)
    const diagnostics = ts.getPreEmitDiagnostics(program)
    const host: ts.FormatDiagnosticsHost = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => app, getNewLine: () => '\n' }
    assert.is(diagnostics.length, 0, `the declarations do not compile for a consumer:\n${ts.formatDiagnostics(diagnostics, host)}`)
    const fromDist = program.getSourceFiles().filter((f) => f.fileName.includes('/node_modules/farpipe/dist/'))
    assert.ok(fromDist.length >= shipped.length, `the program read ${fromDist.length} of the ${shipped.length} shipped declarations`)
  } finally {
    rmSync(app, { recursive: true, force: true })
  }
})

s.run()
