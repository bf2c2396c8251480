// The README as a project: its code blocks, read the way a user copies them.
//
// - A block whose first line is `// <name>` (`// tasks.ts`, `// main.ts`,
//   `// tsconfig.json`) is that file. Several `// tasks.ts` blocks make one
//   file, in the order they come (the guide adds functions to the project's
//   tasks.ts); their imports are merged.
// - Any other `ts` block is a fragment of a caller's code: it is compiled as
//   a module of its own that imports `pool` and every export of tasks.ts, and
//   opens `p` (`await using p = await pool()`), which the fragment may shadow
//   with a pool of its own.
// - A `ts` block's info string says how far it is tried: ```` ```ts ```` is
//   type-checked and run on the local pool; ```` ```ts ssh ```` is run against
//   the spec sshd, which answers as the hosts the README names (`gpu-1`,
//   `gpu-2`, `gpu-3`); ```` ```ts types ```` is only type-checked (it names
//   hosts or commands no spec has, such as `kubectl`). A ```` ```sh ssh ````
//   block is a list of command lines, run one by one in the project's folder
//   with `farpipe` on the PATH, against the spec sshd.
//
// spec/readme.spec.ts type-checks every file and fragment under the README's
// own tsconfig.json and runs the runnable ones; spec/runtimes.spec.ts runs
// the project's tasks.ts and main.ts with tsx, tsc and node, Bun and Deno;
// spec/package.spec.ts compiles them against the packed tarball.
import { readFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))

/** One fenced code block of the README. */
export interface Block {
  /** The language of its info string (`ts`, `jsonc`, `sh`, ...). */
  lang: string
  /** The other words of its info string (`ssh`, `types`). */
  flags: string[]
  /** The file it is, from a first line `// <name>`, if it is one. */
  file: string | undefined
  /** Its text, without the `// <name>` line of a file. */
  text: string
  /** The README line its fence opens on (from 1), for messages. */
  line: number
}

/** How far a fragment is tried. */
export type Trial = 'local' | 'ssh' | 'types'

/** A file of the README's project. */
export interface ProjectFile {
  name: string
  text: string
}

/** A fragment, as a module that compiles and runs on its own. */
export interface Fragment extends ProjectFile {
  /** The README line its block opens on. */
  line: number
  trial: Trial
}

/** The README's project: its files (tsconfig.json, tasks.ts, main.ts, ...) and its fragments as modules. */
export interface ReadmeProject {
  files: ProjectFile[]
  fragments: Fragment[]
  /** Shell blocks marked ```` ```sh ssh ````: command lines run in the project's folder against the spec sshds. */
  shell: { line: number; text: string }[]
  /** The project's own tasks.ts and main.ts as the "Use it in your project" section gives them (its first block of each), and its tsconfig.json. */
  quickStart: ProjectFile[]
}

/** The README's text. */
export function readmeText(): string {
  return readFileSync(path.join(root, 'README.md'), 'utf8')
}

/** Every fenced code block of `markdown`, in order (fences of three or more backticks, at any indent). */
export function blocks(markdown: string): Block[] {
  const out: Block[] = []
  const lines = markdown.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})\s*([\w-]*)\s*(.*)$/.exec(lines[i]!)
    if (!open) continue
    const [, indent, fence, lang, rest] = open
    const body: string[] = []
    let j = i + 1
    for (; j < lines.length && !new RegExp(`^\\s*${fence}\\s*$`).test(lines[j]!); j++) body.push(lines[j]!.slice(indent!.length))
    const first = /^(?:\/\/|#)\s*([\w./-]+\.(?:ts|mts|js|mjs|json|jsonc))\s*$/.exec(body[0] ?? '')
    out.push({
      lang: lang!,
      flags: rest!.split(/\s+/).filter(Boolean),
      file: first ? first[1] : undefined,
      text: (first ? body.slice(1) : body).join('\n'),
      line: i + 1,
    })
    i = j
  }
  return out
}

interface Imports {
  /** Named imports by module: name → the specifier text (`a`, `type B`, `c as d`). */
  named: Map<string, Map<string, string>>
  /** Other import lines, as written (namespace and default imports, side-effect imports). */
  other: string[]
}

const NAMED = /^import\s+(type\s+)?\{([^}]*)\}\s+from\s+(['"])([^'"]+)\3;?\s*$/

/** Splits a module's leading import lines from the rest; multi-line named imports are joined first. */
function splitImports(text: string): { imports: Imports; body: string } {
  const imports: Imports = { named: new Map(), other: [] }
  const joined = text.replace(/^import\s+(type\s+)?\{[^}]*\}\s+from\s+['"][^'"]+['"];?/gm, (m) => m.replace(/\s*\n\s*/g, ' '))
  const body: string[] = []
  for (const line of joined.split('\n')) {
    const named = NAMED.exec(line.trim())
    if (named) {
      const [, typeOnly, list, , from] = named
      const names = imports.named.get(from!) ?? new Map<string, string>()
      imports.named.set(from!, names)
      for (const raw of list!.split(',')) {
        const spec = raw.trim()
        if (!spec) continue
        const word = typeOnly && !spec.startsWith('type ') ? `type ${spec}` : spec
        const local = word.replace(/^type\s+/, '').split(/\s+as\s+/).pop()!
        // A value import wins over a type-only import of the same name.
        if (!names.has(local) || names.get(local)!.startsWith('type ')) names.set(local, word)
      }
    } else if (/^import\s/.test(line.trim())) {
      if (!imports.other.includes(line.trim())) imports.other.push(line.trim())
    } else body.push(line)
  }
  return { imports, body: body.join('\n') }
}

function mergeImports(into: Imports, from: Imports): void {
  for (const [mod, names] of from.named) {
    const mine = into.named.get(mod) ?? new Map<string, string>()
    into.named.set(mod, mine)
    for (const [local, word] of names) if (!mine.has(local) || mine.get(local)!.startsWith('type ')) mine.set(local, word)
  }
  for (const line of from.other) if (!into.other.includes(line)) into.other.push(line)
}

function importLines(imports: Imports): string {
  const named = [...imports.named].map(([mod, names]) => `import { ${[...names.values()].join(', ')} } from '${mod}'`)
  return [...imports.other, ...named].join('\n')
}

/** The names a module exports with `export const|function|class|async function`. */
function exportsOf(text: string): string[] {
  return [...text.matchAll(/^export\s+(?:const|let|function\*?|async\s+function\*?|class)\s+(\w+)/gm)].map((m) => m[1]!)
}

/** The README's project (see the top of this file). */
export function readmeProject(markdown = readmeText()): ReadmeProject {
  const all = blocks(markdown)
  const files = new Map<string, { imports: Imports; bodies: string[] }>()
  const fresh = (): Imports => ({ named: new Map(), other: [] })
  const quickStart: ProjectFile[] = []
  const fragments: Fragment[] = []
  for (const b of all) {
    if (b.file) {
      if (!quickStart.some((f) => f.name === b.file)) quickStart.push({ name: b.file, text: `${b.text.trimEnd()}\n` })
      if (/\.json$|\.jsonc$/.test(b.file)) {
        if (!files.has(b.file)) files.set(b.file, { imports: fresh(), bodies: [b.text] })
        continue
      }
      const { imports, body } = splitImports(b.text)
      const f = files.get(b.file) ?? { imports: fresh(), bodies: [] as string[] }
      files.set(b.file, f)
      mergeImports(f.imports, imports)
      f.bodies.push(body.trim())
    }
  }
  const project: ProjectFile[] = [...files].map(([name, f]) =>
    /\.json/.test(name) ? { name, text: `${f.bodies[0]!.trimEnd()}\n` } : { name, text: `${importLines(f.imports)}\n\n${f.bodies.join('\n\n')}\n` },
  )
  const tasks = project.find((f) => f.name === 'tasks.ts')
  const taskNames = tasks ? exportsOf(tasks.text) : []
  for (const b of all) {
    if (b.file || (b.lang !== 'ts' && b.lang !== 'typescript')) continue
    const { imports, body } = splitImports(b.text)
    const harness: Imports = { named: new Map([['farpipe', new Map([['pool', 'pool']])]]), other: [] }
    if (taskNames.length > 0) harness.named.set('./tasks.ts', new Map(taskNames.map((n): [string, string] => [n, n])))
    mergeImports(harness, imports)
    const trial: Trial = b.flags.includes('types') ? 'types' : b.flags.includes('ssh') ? 'ssh' : 'local'
    const text = [
      `// README.md line ${b.line} (${trial === 'types' ? 'type-checked' : `run: ${trial}`})`,
      importLines(harness),
      '',
      'await using p = await pool()',
      '{',
      body.trim(),
      '}',
      '',
    ].join('\n')
    fragments.push({ name: `readme-${b.line}.ts`, text, line: b.line, trial })
  }
  const shell = all.filter((b) => b.lang === 'sh' && b.flags.includes('ssh')).map((b) => ({ line: b.line, text: b.text }))
  return { files: project, fragments, quickStart, shell }
}
