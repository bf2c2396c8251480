// The package as people install it. `npm pack` runs from a temporary copy of
// the repository (its prepack build deletes and rewrites dist/, which other
// processes may be using here), then a fresh app in a temporary folder
// installs the tarball with the latest TypeScript, @types/node and tsx,
// compiles the README's first example under a plain strict nodenext
// tsconfig (no skipLibCheck, no `types`) and runs it with node and with tsx.
// Installing needs the npm registry: without it those tests are skipped.
import { tempDir } from './helpers.ts'
import { spawn } from 'node:child_process'
import { cpSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
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
  Object.entries(process.env).filter(([k]) => !/^npm_(config_local_prefix|config_loglevel|package_|lifecycle_|command)/i.test(k)),
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

/**
 * The README's first example, as a tsc user writes it (`./tasks.js`
 * imports): the code under its first `// tasks.ts` and `// main.ts` lines,
 * each up to the next such file name or the end of its ```ts block.
 */
function readmeExample(): { tasks: string; main: string } {
  const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
  const parts = new Map<string, string>()
  for (const [, code = ''] of readme.matchAll(/```ts\n([\s\S]*?)```/g)) {
    for (const part of code.split(/^(?=\/\/ [\w-]+\.ts\b)/m)) {
      const name = /^\/\/ ([\w-]+\.ts)\b/.exec(part)?.[1]
      if (name && !parts.has(name)) parts.set(name, part)
    }
  }
  const tasks = parts.get('tasks.ts')
  const main = parts.get('main.ts')
  if (!tasks || !main) throw new Error('README.md has no ```ts code under a `// tasks.ts` and a `// main.ts` line (its first example)')
  return { tasks, main: main.replaceAll(`'./tasks.ts'`, `'./tasks.js'`) }
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

let installed: Promise<{ app: string; install: Ran }> | undefined
/** A fresh ESM app with the tarball, the latest typescript and @types/node, and tsx installed (once). */
function install(): Promise<{ app: string; install: Ran }> {
  return (installed ??= (async () => {
    const { tarball } = await pack()
    // Not named after farpipe, so that a warning naming farpipe is about the package.
    const app = temp('fp-consumer-')
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }, null, 2))
    const r = await must(
      'npm',
      ['install', '--no-audit', '--no-fund', '--loglevel=warn', tarball, 'typescript@latest', '@types/node@latest', 'tsx'],
      app,
    )
    const { tasks, main } = readmeExample()
    writeFileSync(path.join(app, 'tasks.ts'), tasks)
    writeFileSync(path.join(app, 'main.ts'), main)
    const compilerOptions = {
      strict: true,
      module: 'nodenext',
      moduleResolution: 'nodenext',
      target: 'es2022',
      // es2023: what farpipe is built with (Node 20's language);
      // esnext.disposable: `await using` (which @types/node adds anyway).
      lib: ['es2023', 'esnext.disposable'],
    }
    writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions }, null, 2))
    // The least a consumer writes: the README says no `lib` is needed either.
    const plain = { compilerOptions: { strict: true, module: 'nodenext', noEmit: true } }
    writeFileSync(path.join(app, 'tsconfig.plain.json'), JSON.stringify(plain, null, 2))
    return { app, install: r }
  })())
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

online('installs into a fresh app with no npm warning about farpipe', async () => {
  const { install: r } = await install()
  const warnings = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^npm warn/i.test(l) && /farpipe/i.test(l))
  assert.equal(warnings, [], r.report)
})

let compiled: Promise<Ran> | undefined
/** The app's `tsc` run (once). */
async function compile(): Promise<Ran> {
  const { app } = await install()
  return (compiled ??= run('npx', ['tsc', '-p', 'tsconfig.json'], app))
}

online('tsc compiles the README example: strict nodenext, no skipLibCheck, no types', async () => {
  const r = await compile()
  assert.is(r.code, 0, r.report)
  assert.is(r.stdout + r.stderr, '', r.report)
})

online('tsc compiles it with only strict and module nodenext (no lib, no target)', async () => {
  const { app } = await install()
  const r = await run('npx', ['tsc', '-p', 'tsconfig.plain.json'], app)
  assert.is(r.code, 0, r.report)
  assert.is(r.stdout + r.stderr, '', r.report)
})

online('node runs the compiled example: it prints the fibonacci numbers', async () => {
  const { app } = await install()
  const c = await compile()
  if (c.code !== 0) throw new Error(c.report)
  const r = await must(process.execPath, ['main.js'], app)
  assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
})

online('tsx runs main.ts the same', async () => {
  const { app } = await install()
  const r = await must('npx', ['tsx', 'main.ts'], app)
  assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
})

s.after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})

s.run()
