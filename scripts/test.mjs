#!/usr/bin/env node
// The test runner. uvu alone prints no passed/failed line and can exit 0
// when a hook fails (its runner swallows the error) or when a test rejects
// with a non-Error, so each spec file runs in its own process under a time
// limit, and this script reads uvu's own summary and the exit code:
//
// - a file counts (Total - Passed) failures, and one more when it exited
//   non-zero, printed no summary, ran no test, or hung past its limit;
// - the last line is `N passed, N failed, N skipped`;
// - the exit code is non-zero on any failure and when no test ran at all.
//
// Usage: node scripts/test.mjs [filter ...]   (filters match spec paths)
// Env:   FARPIPE_TEST_TIMEOUT  seconds per file (default 180)
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const limit = Number(process.env.FARPIPE_TEST_TIMEOUT ?? 180) * 1000
const filters = process.argv.slice(2)

function specs(dir) {
  const out = []
  for (const name of readdirSync(dir).sort()) {
    const full = path.join(dir, name)
    if (statSync(full).isDirectory()) out.push(...specs(full))
    else if (name.endsWith('.spec.ts')) out.push(full)
  }
  return out
}

const files = specs(path.join(root, 'spec')).filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))

/** Runs one spec file; resolves with its counts. */
function runFile(file) {
  return new Promise((resolve) => {
    const rel = path.relative(root, file)
    process.stdout.write(`\n━━ ${rel}\n`)
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      process.stdout.write(d)
    })
    child.stderr.on('data', (d) => process.stderr.write(d))
    let hung = false
    const timer = setTimeout(() => {
      hung = true
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {}
    }, limit)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      // Whatever the spec started (workers, sshd) goes with it.
      try {
        process.kill(-child.pid, 'SIGKILL')
      } catch {}
      const num = (label) => {
        const m = out.match(new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm'))
        return m ? Number(m[1]) : undefined
      }
      const total = num('Total')
      const passed = num('Passed') ?? 0
      const skipped = num('Skipped') ?? 0
      const problems = []
      let failed = total === undefined ? 0 : total - passed
      if (hung) problems.push(`hung: killed after ${limit / 1000} s`)
      else if (total === undefined) problems.push(`printed no uvu summary (exit ${code ?? signal})`)
      else if (code !== 0) problems.push(`exited with ${code ?? signal}`)
      if (total === 0 && skipped === 0 && !hung) problems.push('ran no test')
      if (failed > 0) problems.push(`${failed} test(s) failed`)
      if (problems.length > 0 && failed === 0) failed = 1
      resolve({ rel, passed, failed, skipped, problems })
    })
  })
}

const results = []
for (const file of files) results.push(await runFile(file))

const sum = (k) => results.reduce((n, r) => n + r[k], 0)
const passed = sum('passed')
const failed = sum('failed')
const skipped = sum('skipped')
process.stdout.write('\n')
for (const r of results) if (r.problems.length) process.stdout.write(`FAIL ${r.rel}: ${r.problems.join('; ')}\n`)
if (files.length === 0) process.stdout.write(`no spec files matched ${filters.join(' ') || 'spec/**/*.spec.ts'}\n`)
process.stdout.write(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`)
process.exitCode = failed > 0 || passed === 0 ? 1 : 0
