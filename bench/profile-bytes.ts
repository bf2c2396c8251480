// Where the cycles of the bytes path go, both ends: CPU profiles (`node
// --cpu-prof`) of the command line piping 256 MiB through `echo` over SSH,
// of the worker that served it, and of a library caller echoing 256 MiB in
// 64 KiB chunks with its worker (the caller profiled from inside). The worker is profiled through a `node` on
// the sshd's PATH that adds --cpu-prof. Prints each profile's busiest
// functions (self time). Not part of `npm run bench`:
//   node --import tsx bench/profile-bytes.ts
import { spawnSync } from 'node:child_process'
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Session } from 'node:inspector/promises'
import { pool } from 'farpipe'
import { startSshd } from '../spec/e2e/sshd.ts'
import * as b from './tasks.ts'

const MiB = 2 ** 20
const TOTAL = 256 * MiB
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-profile-'))
const bin = path.join(dir, 'bin')
const profiles = path.join(dir, 'profiles')
const on = path.join(dir, 'on')
mkdirSync(bin)
mkdirSync(profiles)
writeFileSync(path.join(bin, 'node'), `#!/bin/sh\nif [ -e ${on} ]; then exec ${process.execPath} --cpu-prof --cpu-prof-dir ${profiles}/worker "$@"; fi\nexec ${process.execPath} "$@"\n`)
chmodSync(path.join(bin, 'node'), 0o755)
const s = await startSshd({ alias: 'farpipe-profile', env: { PATH: `${bin}:${process.env.PATH}` } })
const file = path.join(dir, 'data')
writeFileSync(file, Buffer.alloc(TOTAL, 7))
const config = path.join(s.home, '.ssh', 'config')
const env: NodeJS.ProcessEnv = { ...process.env, HOME: s.home }
delete env.SSH_AUTH_SOCK

/** The busiest functions of the profiles in `where`, by self time. */
function top(where: string, title: string): void {
  for (const name of readdirSync(where).filter((n) => n.endsWith('.cpuprofile'))) {
    const prof = JSON.parse(readFileSync(path.join(where, name), 'utf8')) as { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]; samples: number[]; timeDeltas: number[] }
    const byId = new Map(prof.nodes.map((n) => [n.id, n]))
    const self = new Map<string, number>()
    prof.samples.forEach((id, i) => {
      const f = byId.get(id)!.callFrame
      const key = `${f.functionName || '(anonymous)'} ${f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : ''}`.trim()
      self.set(key, (self.get(key) ?? 0) + (prof.timeDeltas[i] ?? 0))
    })
    const total = [...self.values()].reduce((x, y) => x + y, 0)
    if (total < 500_000) continue // a probe's short node, not the worker
    const idle = self.get('(idle)') ?? 0
    console.log(`\n${title}: ${(total / 1e6).toFixed(2)} s profiled, ${((total - idle) / 1e6).toFixed(2)} s busy`)
    for (const [k, v] of [...self].filter(([k]) => k !== '(idle)').sort((x, y) => y[1] - x[1]).slice(0, 14)) console.log(`  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`)
  }
}

// The command line: one unprofiled run puts the bundle and the worker in the cache.
const cli = (profile: boolean) => {
  const fd = openSync(file, 'r')
  const r = spawnSync(process.execPath, [...(profile ? ['--cpu-prof', '--cpu-prof-dir', path.join(profiles, 'cli')] : []), path.join(root, 'dist/cli/main.js'), 'pipe', 'bench/tasks.ts#echo', '-', '--bytes', '--host', s.alias, '-F', config], { stdio: [fd, 'ignore', 'pipe'], env, cwd: root })
  closeSync(fd)
  if (r.status !== 0) throw new Error(`farpipe exited with ${r.status}: ${r.stderr}`)
}
cli(false)
writeFileSync(on, '')
cli(true)
rmSync(on)
top(path.join(profiles, 'cli'), 'farpipe pipe echo - --bytes, 256 MiB: the command')
top(path.join(profiles, 'worker'), 'its worker')
rmSync(path.join(profiles, 'worker'), { recursive: true, force: true })

// The library: a warm pool, then one profiled echo of 256 MiB in 64 KiB chunks (this process is profiled when run with --cpu-prof).
process.env.HOME = s.home
writeFileSync(on, '')
const p = await pool({ hosts: [s.alias], workers: 1 })
rmSync(on)
function* chunks(): Generator<Uint8Array> {
  const c = new Uint8Array(64 * 1024)
  for (let n = 0; n < TOTAL; n += c.byteLength) yield c
}
await p.run(b.noop)
const inspector = new Session()
inspector.connect()
await inspector.post('Profiler.enable')
await inspector.post('Profiler.start')
for (let i = 0; i < 3; i++) for await (const _ of p.run(b.echo, chunks())) void _
const { profile } = await inspector.post('Profiler.stop')
mkdirSync(path.join(profiles, 'caller'))
writeFileSync(path.join(profiles, 'caller', 'caller.cpuprofile'), JSON.stringify(profile))
await p.close()
top(path.join(profiles, 'caller'), 'a library caller echoing 256 MiB three times (64 KiB chunks): the caller')
top(path.join(profiles, 'worker'), 'a library caller echoing 256 MiB three times: its worker')
await s.stop()
rmSync(dir, { recursive: true, force: true })
