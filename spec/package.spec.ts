// The package as people install it. `npm pack` runs from a temporary copy of
// the repository (its prepack build deletes and rewrites dist/, which other
// processes may be using here), then two fresh apps in temporary folders
// install the tarball, one with the latest TypeScript and @types/node, one
// with an older pair (TOOLCHAINS: typescript 5.9, @types/node 20). In each, tsc
// compiles the README's project (spec/readme.ts: its tsconfig.json, tasks.ts,
// main.ts and every block as a module) under the README's tsconfig, and every
// declaration the tarball ships under strict with no skipLibCheck and only
// the package's dependencies installed. In the latest app the README's quick
// start also compiles under a bare strict nodenext tsconfig, and runs with
// `tsc && node`, with the tsx farpipe brings, with Bun and with Deno.
// Installing needs the npm registry: without it those tests are skipped.
import { tempDir } from './helpers.ts'
import { readmeProject } from './readme.ts'
import { spawn } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
/** The whole file stays well under the runner's 180 s per file; every command gets what is left of this. */
const END = Date.now() + 150_000
/** What the copy needs: the build (prepack) and the files the tarball ships. */
const COPY = ['package.json', 'tsconfig.json', 'lib', 'scripts', 'README.md', 'LICENSE', 'docs/design.md', 'bench/RESULTS.md']
const FIBONACCI = ['0', '1', '1', '2', '3', '5', '8', '13', '21', '34']

/**
 * The environment for npm in the temporary folders, without what `npm test`
 * set for this package: its folder, its name and scripts, and `-s`'s silent
 * log level, which would hide the warnings this file looks for.
 */
const env = Object.fromEntries(
  // And without FORCE_COLOR, which the test runner sets to 0: Deno colours its console for any value of it.
  Object.entries(process.env).filter(([k]) => k !== 'FORCE_COLOR' && !/^npm_(config_local_prefix|config_loglevel|package_|lifecycle_|command)/i.test(k)),
)

interface Ran {
  code: number | null
  stdout: string
  stderr: string
  /** The command, its folder, how it ended and its output: the message when something is wrong. */
  report: string
}

/** Temporary folders to remove at the end (the app's node_modules is large). */
const made: string[] = []
function temp(prefix: string): string {
  const dir = tempDir(prefix)
  made.push(dir)
  return dir
}

/** Runs a command, killed (with its children) after `ms` or when the file's time is up; never rejects. */
function run(cmd: string, args: string[], cwd: string, ms = Infinity): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    let hung = false
    const timer = setTimeout(
      () => {
        hung = true
        try {
          process.kill(-child.pid!, 'SIGKILL')
        } catch {}
      },
      Math.max(1000, Math.min(ms, END - Date.now())),
    )
    const finish = (code: number | null, how: string) => {
      clearTimeout(timer)
      const report = `${cmd} ${args.join(' ')} (in ${cwd}) ${hung ? 'was killed: out of time' : how}\n--- stdout ---\n${stdout}--- stderr ---\n${stderr}`
      resolve({ code, stdout, stderr, report })
    }
    child.on('error', (err) => finish(null, `could not start: ${err.message}`))
    child.on('close', (code, signal) => finish(code, `exited with ${code ?? signal}`))
  })
}

/** Runs a command that must succeed; returns its output. */
async function must(cmd: string, args: string[], cwd: string): Promise<Ran> {
  const r = await run(cmd, args, cwd)
  if (r.code !== 0) throw new Error(r.report)
  return r
}

interface Packed {
  tarball: string
  files: string[]
  size: number
  /** The scripts of the package.json inside the tarball. */
  scripts: Record<string, string>
}

let packed: Promise<Packed> | undefined
/** Packs a copy of the repository into a temporary folder (once). */
function pack(): Promise<Packed> {
  return (packed ??= (async () => {
    const copy = temp('fp-pack-copy-')
    for (const entry of COPY) cpSync(path.join(root, entry), path.join(copy, entry), { recursive: true })
    symlinkSync(path.join(root, 'node_modules'), path.join(copy, 'node_modules'), 'dir')
    const out = temp('fp-pack-')
    const r = await must('npm', ['pack', '--json', '--pack-destination', out], copy)
    const [info] = JSON.parse(r.stdout) as { filename: string; size: number; files: { path: string }[] }[]
    if (!info) throw new Error(`npm pack printed no package\n${r.report}`)
    const manifest = JSON.parse(readFileSync(path.join(copy, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }
    return { tarball: path.join(out, info.filename), files: info.files.map((f) => f.path), size: info.size, scripts: manifest.scripts ?? {} }
  })())
}

/** A consumer's toolchain: what an app installs beside the tarball. */
interface Toolchain {
  /** How test names say it. */
  label: string
  packages: string[]
}

/**
 * What consumers install: the newest TypeScript and Node types, and an
 * older pair: the TypeScript the package is built with (5.9, still the
 * JavaScript compiler) and the types of its oldest Node (20). No tsx: the
 * README says farpipe brings it.
 */
const TOOLCHAINS = {
  latest: { label: 'latest typescript and @types/node', packages: ['typescript@latest', '@types/node@latest'] },
  older: { label: 'typescript@5.9 and @types/node@20', packages: ['typescript@5.9', '@types/node@20'] },
} satisfies Record<string, Toolchain>
type ToolchainName = keyof typeof TOOLCHAINS

interface App {
  toolchain: ToolchainName
  dir: string
  install: Ran
}

const apps = new Map<ToolchainName, Promise<App>>()
/** A fresh ESM app with the tarball and `toolchain` installed (once each). */
function install(toolchain: ToolchainName): Promise<App> {
  let app = apps.get(toolchain)
  if (!app) {
    app = (async () => {
      const { tarball } = await pack()
      // Not named after farpipe, so that a warning naming farpipe is about the package.
      const dir = temp(`fp-consumer-${toolchain}-`)
      writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }, null, 2))
      const began = Date.now()
      const r = await must('npm', ['install', '--no-audit', '--no-fund', '--loglevel=warn', tarball, ...TOOLCHAINS[toolchain].packages], dir)
      console.log(`  ${toolchain} app (${TOOLCHAINS[toolchain].packages.join(', ')}): installed in ${((Date.now() - began) / 1000).toFixed(1)} s`)
      return { toolchain, dir, install: r }
    })()
    apps.set(toolchain, app)
  }
  return app
}

/** A file to write: a name relative to its folder, and its text. */
interface ExampleFile {
  name: string
  text: string
}

/**
 * Writes `files` (a tsconfig.json among them) into the folder `folder` of
 * the app, and compiles them there with the app's own tsc (whatever version
 * the toolchain installed); `args` go to tsc after `-p`. Resolves with the
 * run, which passed when it exited 0 and printed nothing.
 */
async function compileExamples(app: App, folder: string, files: ExampleFile[], args: string[] = []): Promise<Ran> {
  const dir = path.join(app.dir, folder)
  if (!files.some((f) => f.name === 'tsconfig.json')) throw new Error(`compileExamples: no tsconfig.json among ${files.map((f) => f.name).join(', ')}`)
  for (const f of files) {
    mkdirSync(path.dirname(path.join(dir, f.name)), { recursive: true })
    writeFileSync(path.join(dir, f.name), f.text)
  }
  const began = Date.now()
  const r = await run(path.join(app.dir, 'node_modules', '.bin', 'tsc'), ['-p', path.join(folder, 'tsconfig.json'), ...args], app.dir)
  console.log(`  ${app.toolchain} app: tsc -p ${folder} in ${((Date.now() - began) / 1000).toFixed(1)} s`)
  return r
}

/** Whether the npm registry answers; the reason to skip when it does not. */
async function registry(): Promise<string | undefined> {
  const r = await run('npm', ['view', '--fetch-retries=0', 'typescript@latest', 'version'], temp('fp-registry-'), 30_000)
  if (r.code === 0) return undefined
  if (r.code === null) return 'the npm registry is not reachable: npm view typescript got no answer within 30 s'
  const why = r.stderr.split('\n').filter((l) => l.startsWith('npm error') && !l.includes('complete log'))
  return `the npm registry is not reachable: npm view typescript failed (${why.slice(0, 2).join('; ') || `exit ${r.code}`})`
}

const s = suite('package')

s('the tarball ships dist, lib, LICENSE, README and the two docs it links, and no specs, scripts or bench code', async () => {
  const { files, size } = await pack()
  const list = files.join('\n')
  for (const f of ['LICENSE', 'README.md', 'docs/design.md', 'bench/RESULTS.md', 'package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/worker.mjs', 'lib/index.ts']) {
    assert.ok(files.includes(f), `${f} is not in the tarball:\n${list}`)
  }
  const stray = files.filter((f) => !/^(dist|lib)\//.test(f) && !['LICENSE', 'README.md', 'package.json', 'docs/design.md', 'bench/RESULTS.md'].includes(f))
  assert.equal(stray, [], `files the package does not need:\n${stray.join('\n')}`)
  console.log(`  tarball: ${files.length} files, ${(size / 1024).toFixed(1)} kB`)
})

s('the package runs no script of its own when installed', async () => {
  const { scripts } = await pack()
  for (const name of ['preinstall', 'install', 'postinstall', 'prepare']) assert.not.ok(scripts[name], `package.json has a ${name} script: ${scripts[name]}`)
})

const offline = await registry()
if (offline) console.log(`skipping the install tests: ${offline}`)
const online = offline ? s.skip : s
// Both apps install side by side from the start: an install mostly waits on
// the registry, and one after the other they would not fit in the file's time.
// (The catch only marks the promise handled; the tests await it themselves.)
if (!offline) for (const name of Object.keys(TOOLCHAINS) as ToolchainName[]) install(name).catch(() => {})

const project = readmeProject()
/** The README's project as spec/readme.ts reads it: its tsconfig.json, tasks.ts and main.ts, and every other block as a module of its own. */
const readme: ExampleFile[] = [...project.files, ...project.fragments]
/** The "Use it in your project" files (its first tasks.ts and main.ts blocks, and its tsconfig.json), as a user copies them. */
const quickStart: ExampleFile[] = project.quickStart

/** A relative module specifier ending in a TypeScript extension (`'./remote.ts'`), outside comment lines. */
const RELATIVE_TS = /['"](\.{1,2}\/[^'"]*?(?<!\.d)\.[mc]?tsx?)['"]/g

/** Every `.d.ts` under `dir`, relative to it. */
function declarationsIn(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter((f) => /\.d\.[mc]?ts$/.test(f)).sort()
}

for (const name of Object.keys(TOOLCHAINS) as ToolchainName[]) {
  const { label } = TOOLCHAINS[name]

  online(`installs into a fresh app with ${label}, with no npm warning about farpipe`, async () => {
    const { install: r } = await install(name)
    const warnings = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^npm warn/i.test(l) && /farpipe/i.test(l))
    assert.equal(warnings, [], r.report)
  })

  online(`tsc (${label}) compiles the README's project and every block of it under the README's tsconfig.json`, async () => {
    const r = await compileExamples(await install(name), 'readme', readme, ['--noEmit'])
    assert.is(r.code, 0, r.report)
    assert.is(r.stdout + r.stderr, '', r.report)
  })

  online(`tsc (${label}) compiles every declaration the tarball ships with only its dependencies: no @types/ssh2, strict, no skipLibCheck`, async () => {
    const app = await install(name)
    const dist = path.join(app.dir, 'node_modules', 'farpipe', 'dist')
    assert.not.ok(existsSync(path.join(app.dir, 'node_modules', '@types', 'ssh2')), '@types/ssh2 came with the package: this test would prove nothing')
    const shipped = declarationsIn(dist)
    const compilerOptions = {
      strict: true,
      target: 'es2022',
      module: 'nodenext',
      // No DOM and no `types`: the node types come from index.d.ts's reference, as for any consumer.
      lib: ['es2023', 'esnext.disposable'],
      types: [],
      skipLibCheck: false,
      noEmit: true,
    }
    // Every shipped declaration, not only what index.d.ts reaches: tools that
    // walk the package, and the legacy `node10` resolution, ignore `exports`.
    const files = ['consumer.ts', ...shipped.map((f) => `../node_modules/farpipe/dist/${f}`)]
    const r = await compileExamples(app, 'declarations', [
      { name: 'tsconfig.json', text: JSON.stringify({ compilerOptions, files }, null, 2) },
      { name: 'consumer.ts', text: "import * as farpipe from 'farpipe'\nexport type Api = typeof farpipe\n" },
    ])
    assert.is(r.code, 0, r.report)
    assert.is(r.stdout + r.stderr, '', r.report)
  })
}

online('the declarations the tarball ships import each other by their .js names', async () => {
  // tsc reads `./remote.ts` in a .d.ts as `./remote.d.ts`; editors and declaration tools look for the file named.
  const dist = path.join((await install('latest')).dir, 'node_modules', 'farpipe', 'dist')
  const named: string[] = []
  for (const f of declarationsIn(dist)) {
    for (const line of readFileSync(path.join(dist, f), 'utf8').split('\n')) {
      if (/^\s*(\*|\/\/|\/\*)/.test(line)) continue
      for (const [, spec] of line.matchAll(RELATIVE_TS)) named.push(`dist/${f}: '${spec}'`)
    }
  }
  assert.equal(named, [], `declarations that import a .ts file, which dist does not have:\n${named.join('\n')}`)
})

online(`tsc (${TOOLCHAINS.latest.label}) compiles the README's main.ts with only strict and module nodenext (no lib, no target, no types)`, async () => {
  // The least a consumer writes; without allowImportingTsExtensions, main.ts imports ./tasks.js as tsc users write it.
  const plain = { compilerOptions: { strict: true, module: 'nodenext', noEmit: true } }
  const files = quickStart.map((f) =>
    f.name === 'tsconfig.json' ? { name: f.name, text: JSON.stringify(plain, null, 2) } : { name: f.name, text: f.text.replaceAll(`'./tasks.ts'`, `'./tasks.js'`) },
  )
  const r = await compileExamples(await install('latest'), 'plain', files)
  assert.is(r.code, 0, r.report)
  assert.is(r.stdout + r.stderr, '', r.report)
})

let quick: Promise<{ app: App; tsc: Ran }> | undefined
/** The README's quick-start files compiled (and emitted) as they are, in the latest app (once). */
function compileQuickStart(): Promise<{ app: App; tsc: Ran }> {
  return (quick ??= (async () => {
    const app = await install('latest')
    return { app, tsc: await compileExamples(app, 'quick', quickStart) }
  })())
}

online('npx tsc && node main.js, as the README says: it prints the fibonacci numbers', async () => {
  const { app, tsc } = await compileQuickStart()
  assert.is(tsc.code, 0, tsc.report)
  const r = await must(process.execPath, ['main.js'], path.join(app.dir, 'quick'))
  assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
})

online('npx tsx main.ts runs it the same, with the tsx farpipe brings', async () => {
  const { app } = await compileQuickStart()
  const r = await must('npx', ['--no-install', 'tsx', 'main.ts'], path.join(app.dir, 'quick'))
  assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
})

// Bun and Deno run the same files from the app that installed the tarball (the devDependencies bring them).
const runtimes = [
  { name: 'bun main.ts', bin: path.join(root, 'node_modules', 'bun', 'bin', 'bun.exe'), args: ['main.ts'] },
  { name: 'deno run -A main.ts', bin: path.join(root, 'node_modules', '@deno', 'linux-x64-glibc', 'deno'), args: ['run', '-A', 'main.ts'] },
]
for (const rt of runtimes) {
  const test = existsSync(rt.bin) ? online : s.skip
  test(`${rt.name} runs it the same, from the installed tarball`, async () => {
    const { app } = await compileQuickStart()
    const r = await run(rt.bin, rt.args, path.join(app.dir, 'quick'))
    assert.is(r.code, 0, r.report)
    assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
  })
}

s.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})

s.run()
