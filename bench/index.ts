// `npm run bench [filter ...]`: runs the benchmark files (one per question)
// whose names match the filters, and writes bench/RESULTS.md with the
// machine, the command and every table. A run of one of the benchmarks
// that own a section (`user-code`, `reliability`, `faults`, `many-hosts`, `nested`, `resume`, `slurm`, `bytes`, `profile-bytes`: they take minutes, the full
// run most of an hour) alone replaces that one section of RESULTS.md, with
// its own command and date under its heading.
import { cpus, totalmem, release } from 'node:os'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { stopAll } from './context.ts'
import { renderSection, RUNS, type Section } from './lib.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const all = ['small-items', 'input-bidi', 'bulk-bytes', 'latency', 'memory', 'user-code', 'reliability', 'faults', 'many-hosts', 'nested', 'resume', 'slurm', 'bytes', 'profile-bytes']
/** Benchmarks whose section a run of them alone replaces in RESULTS.md (found by its heading, the section's title). */
const ownSection = new Set(['user-code', 'reliability', 'faults', 'many-hosts', 'nested', 'resume', 'slurm', 'bytes', 'profile-bytes'])
const filters = process.argv.slice(2)
// A filter that names a benchmark exactly picks that one (`bytes` is not also `bulk-bytes`); otherwise a part of a name picks every match.
const chosen = all.filter((name) => filters.length === 0 || filters.some((f) => (all.includes(f) ? name === f : name.includes(f))))
if (chosen.length === 0) {
  console.error(`no benchmark matches ${filters.join(' ')}; there are: ${all.join(', ')}`)
  process.exit(2)
}

const sections: Section[] = []
const started = new Date()
try {
  for (const name of chosen) {
    const t0 = performance.now()
    console.log(`▶ ${name}`)
    const mod = (await import(`./${name}.ts`)) as { run(): Promise<Section> }
    const section = await mod.run()
    sections.push(section)
    console.log(renderSection(section))
    console.log(`  (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`)
  }
} catch (err) {
  // Say what sshd saw, if it was involved: a dropped connection is otherwise a mystery.
  const { sshdIfStarted } = await import('./context.ts')
  const s = sshdIfStarted()
  if (s) console.error(`sshd log (last lines):\n${s.log().split('\n').slice(-30).join('\n')}`)
  throw err
} finally {
  await stopAll()
}

// Settings that shrink a run are part of the command that produced it.
const knobs = Object.entries(process.env).filter(([k]) => k.startsWith('FARPIPE_BENCH_')).map(([k, v]) => `${k}=${v} `).join('')
const addon = existsSync(path.join(here, '..', 'node_modules/ssh2/lib/protocol/crypto/build/Release/sshcrypto.node'))
const machine = [
  `- Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}`,
  `- Node ${process.version}; ssh2 native crypto addon: ${addon ? 'built' : 'MISSING (SSH figures are not representative)'}`,
  `- Command: \`${knobs}npm run bench${filters.length ? ` -- ${filters.join(' ')}` : ''}\` (${started.toISOString().slice(0, 16).replace('T', ' ')} UTC)`,
  `- Every figure is the median of ${RUNS} runs with min–max; every anchor was measured in the same run, on the same machine, against the same loopback sshd.`,
  "- gRPC is `@grpc/grpc-js` at its best: channel option `grpc.per_rpc_retry_buffer_size: 0` (without it, its client and bidi streaming run about 15× slower).",
]
const out = ['# Benchmark results', '', ...machine, '', ...sections.map(renderSection).flatMap((s) => [s, ''])].join('\n')
const results = path.join(here, 'RESULTS.md')
if (filters.length === 0) {
  // A/B sections (written by bench/ab.mjs) record a change against the commit before it: a full run keeps them.
  const kept = existsSync(results) ? readFileSync(results, 'utf8').split(/^(?=## )/m).filter((s) => s.startsWith('## A/B')) : []
  writeFileSync(results, [out.replace(/\n*$/, '\n'), ...kept.map((s) => `\n${s.replace(/\n*$/, '\n')}`)].join(''))
  console.log('wrote bench/RESULTS.md')
} else {
  writeFileSync(path.join(here, `RESULTS.partial.md`), out)
  const name = chosen[0]!
  if (chosen.length === 1 && ownSection.has(name) && sections.length === 1 && existsSync(results)) {
    // Its own section of RESULTS.md, with the command and machine that produced it under the heading; the rest stays as the last full run left it.
    const [heading, ...body] = renderSection(sections[0]!).split('\n')
    const section = [heading, '', ...machine.slice(0, 3), ...body].join('\n') + '\n'
    const old = readFileSync(results, 'utf8')
    const title = sections[0]!.title.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    const start = old.search(new RegExp(`^## ${title}[ \\t]*$`, 'm'))
    let updated: string
    if (start < 0) updated = `${old.replace(/\n*$/, '')}\n\n${section}`
    else {
      const next = old.slice(start + 1).search(/^## /m)
      updated = old.slice(0, start) + section + (next < 0 ? '' : `\n${old.slice(start + 1 + next)}`)
    }
    writeFileSync(results, updated)
    console.log(`a run of ${name} alone: replaced its section of bench/RESULTS.md (and wrote bench/RESULTS.partial.md)`)
  } else {
    console.log(`a filtered run: wrote bench/RESULTS.partial.md (RESULTS.md is only written by a full run, or by a run of one of ${[...ownSection].join(', ')} alone for its section)`)
  }
}

// Whatever a benchmark left running must not keep the bench from ending: say what it was, then end.
setTimeout(() => {
  console.error(`the bench is done but something keeps the process alive: ${JSON.stringify(process.getActiveResourcesInfo())}`)
  process.exit(1)
}, 10_000).unref()
