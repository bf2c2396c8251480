// Callers on Bun and Deno: each runtime (from the devDependencies `bun` and
// `@deno/linux-x64-glibc`) runs spec/fixtures/runtime-caller.ts, which
// imports the built farpipe by package self-reference and runs the README's
// streaming examples, a remote error and a cancel on local workers (which run
// on Node), then, with no node on PATH, pool()'s error and pool({ node }).
// The caller prints one JSON line per case; each test checks one.
//
// And the README's own project (its tasks.ts, main.ts and tsconfig.json, as
// spec/readme.ts reads them), copied as they are into a folder of this
// repository (where `farpipe` resolves to the build), runs the four ways the
// README gives: tsx, tsc then node, Bun, and Deno.
import { tempDir, markerPath } from './helpers.ts'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { readmeProject } from './readme.ts'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const caller = path.join(root, 'spec', 'fixtures', 'runtime-caller.ts')
/** How long one run of the caller may take, in ms. */
const LIMIT = 90_000

interface Runtime {
  name: string
  bin: string
  /** Arguments before the script. Deno needs permissions: the caller spawns workers and reads and writes files. */
  args: string[]
}

const runtimes: Runtime[] = [
  { name: 'Bun', bin: path.join(root, 'node_modules', 'bun', 'bin', 'bun.exe'), args: [] },
  { name: 'Deno', bin: path.join(root, 'node_modules', '@deno', 'linux-x64-glibc', 'deno'), args: ['run', '--allow-all'] },
]

interface Run {
  cases: Map<string, Record<string, unknown>>
  /** What to show when a case is missing or wrong. */
  report: string
}

/** Runs the caller on `rt` with `env` added, killed past LIMIT; resolves with its cases by name (never rejects: the tests say what is wrong). */
function runCaller(rt: Runtime, env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(rt.bin, [...rt.args, caller], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group, so a run past its limit is killed with its workers.
      detached: true,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    let hung = false
    const timer = setTimeout(() => {
      hung = true
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {}
    }, LIMIT)
    const finish = (how: string) => {
      clearTimeout(timer)
      const cases = new Map<string, Record<string, unknown>>()
      for (const line of stdout.split('\n')) {
        if (!line.startsWith('{')) continue
        try {
          const c = JSON.parse(line) as Record<string, unknown>
          if (typeof c.case === 'string') cases.set(c.case, c)
        } catch {
          // not one of ours; shown in the report
        }
      }
      const report = `${rt.name} ${hung ? `was killed after ${LIMIT} ms` : how}\n--- stdout ---\n${stdout}--- stderr ---\n${stderr}`
      resolve({ cases, report })
    }
    child.on('error', (err) => finish(`could not start: ${err.message}`))
    child.on('close', (code, signal) => finish(`exited with ${code ?? signal}`))
  })
}

/** The case `name` of a run, with the run's report to show if it is wrong; throws with the report when it is missing or failed. */
function caseOf(run: Run, name: string): Record<string, unknown> & { report: string } {
  const c = run.cases.get(name)
  if (!c) throw new Error(`case ${name} printed nothing; ${run.report}`)
  if (c.error) throw new Error(`case ${name} failed: ${String(c.stack ?? c.error)}\n${run.report}`)
  return { ...c, report: run.report }
}

for (const rt of runtimes) {
  const s = suite(`runtimes: ${rt.name} as the caller`)
  const missing = !existsSync(rt.bin)
  if (missing) console.log(`skipping ${rt.name}: ${rt.bin} is missing (npm ci installs it from the devDependencies)`)
  const test = missing ? s.skip : s

  const marker = markerPath()
  let examples: Promise<Run> | undefined
  let noNode: Promise<Run> | undefined
  /** One case of the examples run (started by the first test that needs it). */
  const example = async (name: string) => {
    const run = await (examples ??= runCaller(rt, { FARPIPE_RUNTIME_MARKER: marker }))
    return caseOf(run, name)
  }
  /** One case of the run with no node on PATH (an empty folder): pool() must say what to do; pool({ node }) must work. */
  const withoutNode = async (name: string) => {
    const run = await (noNode ??= runCaller(rt, { FARPIPE_RUNTIME_MODE: 'no-node', FARPIPE_NODE: process.execPath, PATH: tempDir() }))
    return caseOf(run, name)
  }

  test(`runs the caller on ${rt.name} and its workers on Node`, async () => {
    const c = await example('runtime')
    assert.is(c.caller, rt.name.toLowerCase(), c.report)
    assert.equal(c.worker, { release: 'node', node: process.versions.node, bun: null, deno: false }, c.report)
    assert.ok((await example('done')).caller, 'the caller ran to its end')
  })

  test('output streaming: the README fibonacci example yields each number, then the result', async () => {
    const c = await example('output')
    assert.equal(c.items, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34], c.report)
    assert.is(c.result, null, c.report)
  })

  test('input streaming: the README runningMean example gets an iterator item by item', async () => {
    const c = await example('input')
    assert.equal(c.means, [1, 1.5, 2], c.report)
  })

  test('both ways: the README movingAverage example is a pipeThrough stage', async () => {
    const c = await example('pipe')
    assert.equal(c.out, [1, 1.5, 2, 3, 4, 5], c.report)
  })

  test('a remote error arrives as a RemoteError with the remote message, after the items before it', async () => {
    const c = await example('error')
    assert.equal(c.items, [0, 1], c.report)
    assert.is(c.remoteError, true, c.report)
    assert.is(c.code, 'ERR_REMOTE', c.report)
    assert.is(c.errorName, 'RangeError', c.report)
    assert.match(String(c.message), 'failed after 2', c.report)
    assert.is(c.index, 2, c.report)
    assert.is(c.cause, 'RangeError: failed after 2', c.report)
  })

  test('breaking out of for await cancels the call and runs the remote finally', async () => {
    const c = await example('cancel')
    assert.equal(c.items, [0, 1, 2, 3], c.report)
    assert.equal(c.marker, { finally: true }, c.report)
  })

  test('with no node on PATH, pool() fails with a TransportError that says to install Node or pass node', async () => {
    const c = await withoutNode('no-node')
    assert.is(c.transportError, true, c.report)
    assert.is(c.code, 'ERR_TRANSPORT', c.report)
    assert.is(c.reason, 'node', c.report)
    assert.match(String(c.message), `this process runs on ${rt.name}: no node was found on PATH`, c.report)
    assert.match(String(c.message), 'Install Node.js >= 20', c.report)
    assert.match(String(c.message), 'pool({ node:', c.report)
  })

  test('pool({ node }) runs the workers on that node when none is on PATH', async () => {
    const c = await withoutNode('node-option')
    assert.equal(c.items, [0, 1, 1, 2, 3], c.report)
    assert.equal(c.worker, { release: 'node', node: process.versions.node, bun: null, deno: false }, c.report)
  })

  s.run()
}

const readme = suite('runtimes: the README\'s main.ts, the four ways it gives')
/** The folder the README's files are copied to (inside the repository: see the top of this file). */
const app = path.join(root, 'spec', '.readme-app')
const FIBONACCI = ['0', '1', '1', '2', '3', '5', '8', '13', '21', '34']

/** Runs a command in the app's folder; resolves with its exit code and output (killed with its workers past LIMIT). */
function inApp(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; report: string }> {
  return new Promise((resolve) => {
    // Without FORCE_COLOR, which the test runner sets to 0: Deno colours its console for any value of it.
    const { FORCE_COLOR: _, ...env } = process.env
    const child = spawn(cmd, args, { cwd: app, env: { ...env, NO_COLOR: '1', XDG_CACHE_HOME: tempDir() }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {}
    }, LIMIT)
    const done = (code: number | null, how: string) => {
      clearTimeout(timer)
      resolve({ code, stdout, report: `${cmd} ${args.join(' ')} ${how}\n--- stdout ---\n${stdout}--- stderr ---\n${stderr}` })
    }
    child.on('error', (err) => done(null, `could not start: ${err.message}`))
    child.on('close', (code, signal) => done(code, `exited with ${code ?? signal}`))
  })
}

readme.before(() => {
  rmSync(app, { recursive: true, force: true })
  mkdirSync(app, { recursive: true })
  for (const f of readmeProject().quickStart) writeFileSync(path.join(app, f.name), f.text)
})

readme('npx tsx main.ts', async () => {
  const r = await inApp(path.join(root, 'node_modules', '.bin', 'tsx'), ['main.ts'])
  assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
})

readme('npx tsc && node main.js (target es2022: Node 20 runs what tsc made of await using)', async () => {
  const tsc = await inApp(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')])
  assert.is(tsc.code, 0, tsc.report)
  const r = await inApp(process.execPath, ['main.js'])
  assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
})

for (const rt of runtimes) {
  const test = existsSync(rt.bin) ? readme : readme.skip
  test(rt.name === 'Bun' ? 'bun main.ts' : 'deno run -A main.ts', async () => {
    const r = await inApp(rt.bin, [...(rt.name === 'Deno' ? ['run', '-A'] : []), 'main.ts'])
    assert.equal(r.stdout.trim().split('\n'), FIBONACCI, r.report)
  })
}

readme.run()
