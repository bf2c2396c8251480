#!/usr/bin/env node
// The test suite on a busy machine: the whole suite (or the spec files the
// filters match) while two busy loops compete for the cores, as on a shared
// CI machine. A spec that passes only on an idle machine is a flaky spec;
// this is where it shows.
//
// Usage: node scripts/test-busy.mjs [--times N] [filter ...]
//   --times N   run the suite N times in a row, stopping at the first failure (default 1)
// Env:   FARPIPE_BUSY_LOOPS   busy loops to run (default 2)
//        FARPIPE_TEST_TIMEOUT seconds per spec file (default here 360: everything takes about twice as long)
//
// The last line is the test runner's own `N passed, N failed`, and the exit
// code is non-zero on any failure.
import { spawn } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const args = process.argv.slice(2)
let times = 1
const at = args.indexOf('--times')
if (at >= 0) {
  times = Number(args[at + 1])
  if (!Number.isInteger(times) || times < 1) {
    console.error(`--times expects an integer >= 1, got ${args[at + 1] ?? 'nothing'}`)
    process.exit(2)
  }
  args.splice(at, 2)
}
const loops = Number(process.env.FARPIPE_BUSY_LOOPS ?? 2)

// Each loop is a process of its own at normal priority, spinning until killed.
const busy = Array.from({ length: loops }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }))
const stopBusy = () => {
  for (const b of busy) b.kill('SIGKILL')
}
process.on('exit', stopBusy)
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopBusy()
    process.exit(130)
  })
}

/** One run of the test runner; resolves with its exit code. */
function run() {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(root, 'scripts', 'test.mjs'), ...args], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, FARPIPE_TEST_TIMEOUT: process.env.FARPIPE_TEST_TIMEOUT ?? '360' },
    })
    child.on('close', (code, signal) => resolve(code ?? (signal ? 1 : 0)))
  })
}

let code = 0
for (let i = 1; i <= times && code === 0; i++) {
  console.log(`\n━━━━ busy run ${i} of ${times}: ${loops} busy loops competing for the cores\n`)
  code = await run()
}
stopBusy()
process.exit(code)
