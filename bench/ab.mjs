// `node bench/ab.mjs <other checkout> [rounds] [--label "what changed"]`: an
// A/B of this checkout (B) against another (A: a worktree at the commit
// before a change, built, with node_modules), alternating A and B runs of
// bench/ab-probe.ts (copied into A when it lacks it), `rounds` times each
// (default 6). This VM's speed swings between minutes, so only runs
// alternated in one sitting compare; it prints each side's median, and the
// median and range of the per-round ratios B/A, as a markdown table. With
// --label it also writes that table into bench/RESULTS.md as a section
// `## A/B: <label>` (replacing one of the same label), which full bench runs
// keep.
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const argv = process.argv.slice(2)
const at = argv.indexOf('--label')
const label = at >= 0 ? argv.splice(at, 2)[1] : undefined
const [otherArg, roundsArg] = argv
if (!otherArg || (at >= 0 && !label)) {
  console.error('usage: node bench/ab.mjs <other checkout> [rounds] [--label "what changed"]')
  process.exit(2)
}
const other = path.resolve(otherArg)
if (!existsSync(path.join(other, 'dist', 'index.js'))) {
  console.error(`${other}: no dist/index.js (build it first: node scripts/build.mjs)`)
  process.exit(2)
}
const probe = path.join(other, 'bench', 'ab-probe.ts')
if (!existsSync(probe)) copyFileSync(path.join(here, 'ab-probe.ts'), probe)
const rounds = Number(roundsArg ?? 6)

const run = (dir) => JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', 'bench/ab-probe.ts'], { cwd: dir, encoding: 'utf8' }).trim().split('\n').pop())
const A = []
const B = []
for (let i = 0; i < rounds; i++) {
  A.push(run(other))
  B.push(run(path.dirname(here)))
  console.error(`round ${i + 1}/${rounds}: A ${JSON.stringify(A.at(-1))}\n             B ${JSON.stringify(B.at(-1))}`)
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const git = (dir) => execFileSync('git', ['log', '-1', '--format=%h %s'], { cwd: dir, encoding: 'utf8' }).trim()
const rows = ['| figure | A (median) | B (median) | B/A per round: median (range) |', '|---|---|---|---|']
for (const k of Object.keys(A[0])) {
  const a = A.map((x) => x[k])
  const b = B.map((x) => x[k])
  const r = a.map((x, i) => b[i] / x)
  rows.push(`| ${k} | ${Math.round(median(a))} | ${Math.round(median(b))} | ${median(r).toFixed(2)} (${Math.min(...r).toFixed(2)}–${Math.max(...r).toFixed(2)}) |`)
}
console.log(rows.join('\n'))
if (label) {
  const results = path.join(here, 'RESULTS.md')
  const section = [
    `## A/B: ${label}`,
    '',
    `- Command: \`node bench/ab.mjs <A> ${rounds} --label "${label}"\` (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC), ${rounds} rounds alternated`,
    `- A: ${git(other)}`,
    `- B: ${git(path.dirname(here))}`,
    '- Items: 1M numbers from a sync generator; bytes: 512 MiB in 64 KiB chunks, down (yielded) and up (a streamed argument); latency: 3,000 sequential calls of `add` after 300 to warm; one worker. Latency is µs (lower is better), the rest per second.',
    '',
    ...rows,
    '',
  ].join('\n')
  const old = existsSync(results) ? readFileSync(results, 'utf8') : '# Benchmark results\n'
  const parts = old.split(/^(?=## )/m)
  const i = parts.findIndex((s) => s.startsWith(`## A/B: ${label}\n`))
  if (i >= 0) parts[i] = section
  else parts.push(section)
  writeFileSync(results, parts.map((s) => s.replace(/\n*$/, '\n')).join('\n'))
  console.log(`wrote the section "A/B: ${label}" of bench/RESULTS.md`)
}
