import { pool } from 'farpipe'
import { startSshd } from '../spec/e2e/sshd.ts'
import * as b from './tasks.ts'
const dir = process.argv[2] ?? 'down'
const sshd = await startSshd()
process.env.HOME = sshd.home
const nodeArgs = process.env.WPROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof/worker'] : []
const p = await pool({ hosts: process.env.LOCAL ? undefined : [sshd.alias], workers: 1, nodeArgs, limits: process.env.SOFT ? { softFrameBytes: Number(process.env.SOFT) } : undefined })
await p.run(b.noop)
const G = 1 << 30
const chunk = new Uint8Array(65536)
function* src() { for (let s = 0; s < G; s += 65536) yield chunk }
for (let r = 0; r < 2; r++) {
  const t0 = performance.now(); let n = 0
  if (dir === 'down') for await (const c of p.run(b.bytes, G, 65536)) n += c.byteLength
  else if (dir === 'up') n = await p.run(b.sink, src())
  else for await (const c of p.run(b.echo, src())) n += (c as Uint8Array).byteLength
  console.log(dir, (n / 1048576 / ((performance.now() - t0) / 1000)).toFixed(0), 'MiB/s')
}
await p.close(); await sshd.stop()
