// A/B in one process: sync generators (numbers, objects) over SSH and local, old build vs this one, alternated.
import { startSshd } from './spec/e2e/sshd.ts'
import { mkdtempSync } from 'node:fs'
const NEW = await import('/work/main/dist/index.js')
const OLD = await import('/tmp/ab-old/dist/index.js')
const tNew = await import('/work/main/bench/tasks.ts')
const tOld = await import('/tmp/ab-old/bench/tasks.ts')
const sshd = await startSshd({ alias: 'ab' })
process.env.HOME = sshd.home
const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!
const N = 1_000_000
for (const where of ['ssh', 'local']) {
  const opts = (dir: string) => ({ workers: 1, cacheDir: dir, ...(where === 'ssh' ? { hosts: [sshd.alias] } : {}) })
  const pn = await NEW.pool(opts(mkdtempSync('/tmp/abn-')))
  const po = await OLD.pool(opts(mkdtempSync('/tmp/abo-')))
  for (const fn of ['numbers', 'objects']) {
    const rn: number[] = [], ro: number[] = []
    const rate = async (p: any, f: any) => { const t0 = performance.now(); let n = 0; for await (const _ of p.run(f, N)) n++; return N / ((performance.now() - t0) / 1000) }
    await rate(pn, tNew[fn]); await rate(po, tOld[fn])
    for (let i = 0; i < 7; i++) { rn.push(await rate(pn, tNew[fn])); ro.push(await rate(po, tOld[fn])) }
    console.log(where, fn, 'new', (med(rn) / 1e6).toFixed(2), 'M/s old', (med(ro) / 1e6).toFixed(2), 'M/s ratio', (med(rn) / med(ro)).toFixed(2))
  }
  await pn.close(); await po.close()
}
await sshd.stop()
