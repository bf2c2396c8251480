// Where the cycles of the bytes path go, at both ends: CPU profiles (`node
// --cpu-prof`) of the command line piping 256 MiB through `echo` over SSH
// and of the worker that served it, and of a library caller echoing 256 MiB
// three times in 64 KiB chunks (profiled from inside, through the
// inspector) and of its worker. The workers are profiled through a `node`
// on the sshd's PATH that adds --cpu-prof. Its section lists each
// profile's busiest functions by self time.
import { spawnSync } from 'node:child_process'
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { pool } from 'farpipe'
import { startSshd } from '../spec/e2e/sshd.ts'
import type { Section } from './lib.ts'
import * as b from './tasks.ts'

const MiB = 2 ** 20
const TOTAL = 256 * MiB
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))

interface Profile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]
  samples: number[]
  timeDeltas: number[]
}

/** One line for the largest profile in `where` (a worker's probe node is a small one): busy time and the busiest functions by self time. */
function summary(where: string, title: string): string {
  const found = readdirSync(where)
    .filter((n) => n.endsWith('.cpuprofile'))
    .map((n) => JSON.parse(readFileSync(path.join(where, n), 'utf8')) as Profile)
    .map((prof) => {
      const byId = new Map(prof.nodes.map((n) => [n.id, n]))
      const self = new Map<string, number>()
      prof.samples.forEach((id, i) => {
        const f = byId.get(id)!.callFrame
        const key = `${f.functionName || '(anonymous)'}${f.url ? ` ${path.basename(f.url).replace(/^worker-[0-9a-f]+\.mjs$/, 'worker.mjs')}:${f.lineNumber + 1}` : ''}`
        self.set(key, (self.get(key) ?? 0) + (prof.timeDeltas[i] ?? 0))
      })
      return self
    })
    .sort((x, y) => [...y.values()].reduce((a, c) => a + c, 0) - [...x.values()].reduce((a, c) => a + c, 0))
  const self = found[0]
  if (!self) return `${title}: no profile`
  const total = [...self.values()].reduce((a, c) => a + c, 0)
  const busy = total - (self.get('(idle)') ?? 0)
  const top = [...self]
    .filter(([k]) => k !== '(idle)' && k !== '(program)')
    .sort((x, y) => y[1] - x[1])
    .slice(0, 10)
    .map(([k, v]) => `${k} ${(v / 1000).toFixed(0)}`)
  return `${title}: busy ${(busy / 1e6).toFixed(2)} s of ${(total / 1e6).toFixed(2)} s; busiest (self ms): ${top.join(', ')}`
}

export async function run(): Promise<Section> {
  const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-profile-'))
  const bin = path.join(dir, 'bin')
  const profiles = path.join(dir, 'profiles')
  const on = path.join(dir, 'on')
  mkdirSync(bin)
  mkdirSync(profiles)
  writeFileSync(path.join(bin, 'node'), `#!/bin/sh\nif [ -e ${on} ]; then exec ${process.execPath} --cpu-prof --cpu-prof-dir ${profiles}/worker "$@"; fi\nexec ${process.execPath} "$@"\n`)
  chmodSync(path.join(bin, 'node'), 0o755)
  // An sshd of its own: the bench's shares nothing with a PATH that profiles every node.
  const s = await startSshd({ alias: 'farpipe-profile', env: { PATH: `${bin}:${process.env.PATH}` } })
  const home = process.env.HOME
  try {
    const file = path.join(dir, 'data')
    writeFileSync(file, Buffer.alloc(TOTAL, 7))
    const config = path.join(s.home, '.ssh', 'config')
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: s.home }
    delete env.SSH_AUTH_SOCK
    const lines: string[] = []

    // The command line; one run unprofiled first puts the bundle and the worker in the cache.
    const cli = (profile: boolean) => {
      const fd = openSync(file, 'r')
      const args = [...(profile ? ['--cpu-prof', '--cpu-prof-dir', path.join(profiles, 'cli')] : []), path.join(root, 'dist/cli/main.js'), 'pipe', 'bench/tasks.ts#echo', '-', '--bytes', '--host', s.alias, '-F', config]
      const r = spawnSync(process.execPath, args, { stdio: [fd, 'ignore', 'pipe'], env, cwd: root })
      closeSync(fd)
      if (r.status !== 0) throw new Error(`farpipe exited with ${r.status}: ${r.stderr}`)
    }
    cli(false)
    writeFileSync(on, '')
    cli(true)
    rmSync(on)
    lines.push(summary(path.join(profiles, 'cli'), '`farpipe pipe bench/tasks.ts#echo - --bytes`, 256 MiB, the command'))
    lines.push(summary(path.join(profiles, 'worker'), 'its worker'))
    rmSync(path.join(profiles, 'worker'), { recursive: true, force: true })

    // The library: a warm pool, then three echoes of 256 MiB in 64 KiB chunks, this process profiled through the inspector.
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
    inspector.disconnect()
    await p.close()
    mkdirSync(path.join(profiles, 'caller'))
    writeFileSync(path.join(profiles, 'caller', 'caller.cpuprofile'), JSON.stringify(profile))
    lines.push(summary(path.join(profiles, 'caller'), 'a library caller echoing 256 MiB three times (64 KiB chunks over SSH), the caller'))
    lines.push(summary(path.join(profiles, 'worker'), 'its worker'))
    return {
      title: 'Bytes: where the cycles go (profiles of both ends)',
      rows: [],
      notes: [
        'CPU profiles (`node --cpu-prof`; the caller of the library through the inspector; each worker through a `node` on the sshd\'s PATH that adds --cpu-prof), self time by function; busy is the profile less `(idle)`. `(garbage collector)` is V8\'s, `writev`/`writeBuffer`/`read` are system calls, `decrypt`/`encrypt`/`randomFillSync` are ssh2\'s crypto (native) and its random packet padding, `_copyActual` is `Buffer.concat` (a frame assembled from the packets it arrived in).',
        ...lines.map((l) => `- ${l}`),
      ],
    }
  } finally {
    process.env.HOME = home
    await s.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
