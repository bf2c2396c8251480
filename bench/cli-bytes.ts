// The command line's bytes path (rows of the bytes section, bench/bytes.ts), as a Unix user compares it first: the
// whole command `farpipe pipe echo - --bytes --host h < file > /dev/null`
// against `ssh h cat < file > /dev/null` on the same sshd and file,
// alternated; and the command's start-up apart (the same command on an
// empty stdin: node, the bundle of the module, the pool, the teardown).
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sshd } from './context.ts'
import { cpuByRole, measure, median, pair, repeat, RUNS, sshRoles, type Row } from './lib.ts'

const MiB = 2 ** 20
const TOTAL = 256 * MiB
const FEW = 4 * MiB
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const cli = path.join(root, 'dist', 'cli', 'main.js')

/** Seconds `program args < input > /dev/null` takes, from spawn to exit. */
function timed(program: string, args: string[], input: string, env: NodeJS.ProcessEnv, spawned?: (pid: number) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const inFd = openSync(input, 'r')
    const outFd = openSync('/dev/null', 'w')
    const t0 = performance.now()
    const child = spawn(program, args, { stdio: [inFd, outFd, 'pipe'], env, cwd: root })
    spawned?.(child.pid!)
    let err = ''
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
    child.on('error', reject)
    child.on('close', (code) => {
      closeSync(inFd)
      closeSync(outFd)
      if (code !== 0) reject(new Error(`${program} ${args.join(' ')} exited with ${code}: ${err}`))
      else resolve((performance.now() - t0) / 1000)
    })
  })
}

/** The command line's rows: the whole command against `ssh h cat` (alternated), the start-up apart, and `--help`. */
export async function cliRows(): Promise<{ rows: Row[]; alias: string; cpu: { farpipe: string; ssh: string } }> {
  const s = await sshd()
  const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-bench-cli-'))
  const file = path.join(dir, 'data')
  const fd = openSync(file, 'w')
  const block = Buffer.alloc(MiB, 7)
  for (let i = 0; i < TOTAL / MiB; i++) writeSync(fd, block)
  closeSync(fd)
  const empty = path.join(dir, 'empty')
  closeSync(openSync(empty, 'w'))
  // A few MiB: what the first bytes of a new connection cost beyond the start-up (TCP's start on this loopback).
  const few = path.join(dir, 'few')
  const fewFd = openSync(few, 'w')
  for (let i = 0; i < FEW / MiB; i++) writeSync(fewFd, block)
  closeSync(fewFd)
  const config = path.join(s.home, '.ssh', 'config')
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: s.home }
  delete env.SSH_AUTH_SOCK
  const farpipe = (input: string, spawned?: (pid: number) => void) => timed(process.execPath, [cli, 'pipe', 'bench/tasks.ts#echo', '-', '--bytes', '--host', s.alias, '-F', config], input, env, spawned)
  const ssh = (input: string, spawned?: (pid: number) => void) => timed('ssh', ['-F', config, '-o', 'BatchMode=yes', s.alias, 'cat'], input, env, spawned)
  const rate = (secs: number[]) => secs.map((t) => TOTAL / MiB / t)
  // Once each unmeasured: the bundle of the module and the worker land in the cache.
  const [fp, an] = await pair(() => farpipe(file), () => ssh(file), RUNS)
  const [fpStart, anStart] = await pair(() => farpipe(empty), () => ssh(empty), RUNS)
  const startup = median(fpStart)
  const [fpFew, anFew] = await pair(() => farpipe(few), () => ssh(few), RUNS)
  const rows: Row[] = [
    { figure: `\`farpipe pipe echo - --bytes --host h\`, ${TOTAL / MiB} MiB, whole command`, farpipe: measure(rate(fp), 'MiB/s'), anchor: { name: '`ssh h cat`', measure: measure(rate(an), 'MiB/s') }, target: { text: '≥ 0.85×', holds: (r) => r >= 0.85 } },
    { figure: 'the same command on an empty stdin (start-up, pool, teardown)', farpipe: measure(fpStart.map((t) => t * 1000), 'ms', false), anchor: { name: '`ssh h cat` on an empty stdin', measure: measure(anStart.map((t) => t * 1000), 'ms', false) } },
    {
      figure: `the first ${FEW / MiB} MiB on a new connection, beyond the start-up (the same command on ${FEW / MiB} MiB minus the empty-stdin median)`,
      farpipe: measure(fpFew.map((t) => (t - startup) * 1000), 'ms', false),
      anchor: { name: '`ssh h cat`, the same way', measure: measure(anFew.map((t) => (t - median(anStart)) * 1000), 'ms', false) },
    },
    { figure: `${TOTAL / MiB} MiB without the start-up (whole command minus the empty-stdin median)`, farpipe: measure(fp.map((t) => TOTAL / MiB / Math.max(1e-3, t - startup)), 'MiB/s'), anchor: { name: '`ssh h cat`, the same way', measure: measure(an.map((t) => TOTAL / MiB / Math.max(1e-3, t - median(anStart))), 'MiB/s') } },
  ]
  const help = await repeat(async () => {
    const t0 = performance.now()
    execFileSync(process.execPath, [cli, '--help'], { stdio: 'ignore' })
    return performance.now() - t0
  })
  const bare = await repeat(async () => {
    const t0 = performance.now()
    execFileSync(process.execPath, ['-e', '0'], { stdio: 'ignore' })
    return performance.now() - t0
  })
  rows.push({ figure: '`farpipe --help`', farpipe: measure(help, 'ms', false), anchor: { name: '`node -e 0`', measure: measure(bare, 'ms', false) } })
  // Who used the CPU during one whole command of each (the machine has two cores).
  const cpuOf = async (command: (input: string, spawned: (pid: number) => void) => Promise<number>) => {
    let pid = -1
    const { result: secs, cpu } = await cpuByRole(sshRoles(() => pid, 'command'), () => command(file, (p) => (pid = p)))
    return `${secs.toFixed(2)} s: ${['command', 'sshd', 'far end'].map((r) => `${r} ${(cpu[r] ?? 0).toFixed(2)}`).join(', ')}`
  }
  const cpu = { farpipe: await cpuOf(farpipe), ssh: await cpuOf(ssh) }
  return { rows, alias: s.alias, cpu }
}

/** The command line's words for a note under its rows. */
export function cliNote(alias: string, cpu: { farpipe: string; ssh: string }): string {
  return `CPU seconds in use during one whole command of each, by process (from /proc, sampled every 20 ms): farpipe ${cpu.farpipe} (the far end is the worker); \`ssh h cat\` ${cpu.ssh} (the far end is \`cat\`). Whole commands, alternated, on the bench sshd (loopback): \`node dist/cli/main.js pipe bench/tasks.ts#echo - --bytes --host ${alias}\` and \`ssh ${alias} cat\`, stdin a ${TOTAL / MiB} MiB file, stdout /dev/null. The bundle and the worker are cached on the host after the first, unmeasured run.`
}

