// Signals a terminal sends to the caller's process group, and a caller that
// dies at once. Local workers run in a process group (and session) of their
// own: Ctrl-C reaches the caller only, which cancels its call so that the
// remote `finally` runs; and workers still go with a caller killed by
// SIGKILL, whose end they read on their stdin.
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { markerPath, running, until } from '../helpers.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const fixtures = path.join(root, 'spec/fixtures')

const s = suite('signals to the caller')

s("Ctrl-C sent to the caller's whole process group cancels the call and the remote finally runs (regression: the workers were killed with it)", async () => {
  const marker = markerPath()
  // `farpipe run`, leading its own process group as a shell's foreground job does.
  const child = spawn(process.execPath, [path.join(root, 'dist/cli/main.js'), 'run', 'cli-tasks.ts#endless', marker], {
    cwd: fixtures,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += d))
  child.stdout!.resume()
  const code = new Promise((resolve) => child.on('close', resolve))
  // The call runs once its first item is out.
  await new Promise((r) => child.stdout!.once('data', r))
  // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
  process.kill(-child.pid!, 'SIGINT')
  assert.is(await code, 130, stderr)
  assert.ok(existsSync(marker), `the remote finally did not run; stderr: ${stderr}`)
  assert.is(readFileSync(marker, 'utf8'), 'finally ran')
})

s('a caller killed with SIGKILL leaves no worker behind, busy or idle', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(fixtures, 'holds-workers.ts')], { cwd: fixtures, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  child.stderr!.on('data', (d) => (out += d))
  const pids = await until(() => out.includes('\n') && (JSON.parse(out.split('\n')[0]!) as number[]), 30_000, 'the workers to start')
  assert.is(pids.length, 2, out)
  assert.ok(pids.every(running))
  child.kill('SIGKILL')
  await until(() => !pids.some(running), 10_000, `workers ${pids.join(', ')} to exit after their caller was killed`)
})

s.run()
