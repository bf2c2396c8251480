// How fast is `farpipe pipe --bytes` through an identity function over SSH,
// next to OpenSSH's own client piping through `cat`? Both against the spec
// harness's sshd on loopback, same file, stdin from the file and stdout to
// /dev/null, alternated; wall time includes connecting (and, for farpipe,
// starting node and the pool). Needs `npm run build`.
//
//   node --import tsx bench/cli-pipe.ts            (FARPIPE_BENCH_MIB=256, FARPIPE_BENCH_RUNS=3)
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startSshd } from '../spec/e2e/sshd.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const mib = Number(process.env.FARPIPE_BENCH_MIB ?? 256)
const runs = Number(process.env.FARPIPE_BENCH_RUNS ?? 3)

const sshd = await startSshd({ alias: 'farpipe-bench' })
const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-bench-cli-'))
const file = path.join(dir, 'in.bin')
const chunk = randomBytes(1 << 20)
writeFileSync(file, Buffer.concat(Array.from({ length: mib }, () => chunk)))
const env: NodeJS.ProcessEnv = { ...process.env, HOME: sshd.home }
delete env.SSH_AUTH_SOCK

const commands = {
  farpipe: [process.execPath, path.join(root, 'dist/cli/main.js'), 'pipe', 'cli-tasks.ts#identity', '-', '--bytes', '--host', sshd.alias],
  'ssh cat': ['ssh', '-F', path.join(sshd.home, '.ssh/config'), '-o', 'BatchMode=yes', sshd.alias, 'cat'],
}

/** Runs one command with the file on stdin and /dev/null on stdout; resolves with seconds. */
function time(argv: string[]): Promise<number> {
  const t0 = performance.now()
  const child = spawn(argv[0]!, argv.slice(1), { cwd: path.join(root, 'spec/fixtures'), env, stdio: [openSync(file, 'r'), openSync('/dev/null', 'w'), 'inherit'] })
  return new Promise((resolve, reject) =>
    child.on('close', (code) => (code === 0 ? resolve((performance.now() - t0) / 1000) : reject(new Error(`${argv.join(' ')} exited with ${code}`)))),
  )
}

const results: Record<string, number[]> = { farpipe: [], 'ssh cat': [] }
try {
  await time(commands.farpipe) // warm: the bundle and worker are cached on the host after this
  for (let i = 0; i < runs; i++) {
    for (const [name, argv] of Object.entries(commands)) results[name]!.push(mib / (await time(argv)))
  }
} finally {
  await sshd.stop()
  rmSync(dir, { recursive: true, force: true })
}
console.log(`${mib} MiB through an identity over SSH (loopback), ${runs} runs each, alternated:`)
for (const [name, r] of Object.entries(results)) {
  const sorted = [...r].sort((a, b) => a - b)
  console.log(`  ${name.padEnd(8)} median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} MiB/s  (runs: ${r.map((x) => x.toFixed(0)).join(', ')})`)
}
