// Bytes through Slurm's `srun` (a one-node cluster started here, as the
// specs start it: spec/e2e/slurm.ts): a worker that is a job, its frames
// carried by srun's I/O forwarding, against `srun --unbuffered` running
// `head -c` (down) and `cat` (up and back) on the same bytes, alternated.
import { spawn } from 'node:child_process'
import { pool, type Pool } from 'farpipe'
import { startSlurm, whyNoSlurm } from '../spec/e2e/slurm.ts'
import { cacheDir } from './context.ts'
import { measure, pair, RUNS, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

const MiB = 2 ** 20
const TOTAL = 128 * MiB
const CHUNK = 64 * 1024

/** MiB/s of `srun --unbuffered -N1 -n1 <args>`, fed `input` bytes (if any), reading all it writes. */
function srun(args: string[], input: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn('srun', ['--unbuffered', '-N1', '-n1', ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
    let got = 0
    child.stdout.on('data', (d: Buffer) => (got += d.byteLength))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(got / MiB / ((performance.now() - t0) / 1000)) : reject(new Error(`srun exited with ${code}`))))
    if (input === 0) return child.stdin.end()
    const chunk = Buffer.alloc(CHUNK)
    let sent = 0
    const write = () => {
      while (sent < input) {
        sent += CHUNK
        if (!child.stdin.write(chunk)) return void child.stdin.once('drain', write)
      }
      child.stdin.end()
    }
    write()
  })
}

async function down(p: Pool): Promise<number> {
  const t0 = performance.now()
  let n = 0
  for await (const c of p.run(b.bytes, TOTAL, CHUNK)) n += c.byteLength
  return n / MiB / ((performance.now() - t0) / 1000)
}

async function echo(p: Pool): Promise<number> {
  const chunk = new Uint8Array(CHUNK)
  const t0 = performance.now()
  let n = 0
  const source = (function* () {
    for (let i = 0; i < TOTAL / CHUNK; i++) yield chunk
  })()
  for await (const c of p.run(b.echo, source)) n += (c as Uint8Array).byteLength
  return n / MiB / ((performance.now() - t0) / 1000)
}

export async function run(): Promise<Section> {
  const why = whyNoSlurm()
  if (why) return { title: 'Slurm: bytes through srun', rows: [], notes: [`Not measured: ${why}.`] }
  const slurm = await startSlurm()
  const before = process.env.SLURM_CONF
  process.env.SLURM_CONF = slurm.conf
  try {
    const p = await pool({ hosts: [{ name: 'cluster', command: ['srun', '-N1', '-n1'] }], workers: 1, cacheDir: await cacheDir(), onLog: () => {} })
    const rows: Row[] = []
    try {
      await p.run(b.noop)
      const at = (x: number) => x >= 0.8
      const [fd, ad] = await pair(() => down(p), () => srun(['head', '-c', String(TOTAL), '/dev/zero'], 0), RUNS)
      rows.push({ figure: `${TOTAL / MiB} MiB down through srun, 64 KiB chunks`, farpipe: measure(fd, 'MiB/s'), anchor: { name: `srun --unbuffered head -c`, measure: measure(ad, 'MiB/s') }, target: { text: '≥ 0.8×', holds: at } })
      const [fe, ae] = await pair(() => echo(p), () => srun(['cat'], TOTAL), RUNS)
      rows.push({ figure: `${TOTAL / MiB} MiB up and back (echo) through srun`, farpipe: measure(fe, 'MiB/s'), anchor: { name: 'srun --unbuffered cat', measure: measure(ae, 'MiB/s') }, target: { text: '≥ 0.8×', holds: at } })
    } finally {
      await p.close()
    }
    return {
      title: 'Slurm: bytes through srun',
      rows,
      notes: [
        'A one-node Slurm cluster on this machine (spec/e2e/slurm.ts); the worker is a job started by `srun -N1 -n1` (farpipe adds `--unbuffered`), its frames carried by srun\'s I/O forwarding through slurmstepd. The anchor is the same srun running `head -c` or `cat` on the same bytes, each run starting its own job (so the anchor pays a job start that the warm pool does not), alternated with farpipe.',
      ],
    }
  } finally {
    if (before === undefined) delete process.env.SLURM_CONF
    else process.env.SLURM_CONF = before
    await slurm.stop()
  }
}
