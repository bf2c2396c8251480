import { pool } from 'farpipe'
import * as u from './bench/user-tasks.ts'
const dir = process.argv[3] ?? '/tmp/profw2'
const p = await pool({ workers: 1, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`] })
for (let i = 0; i < 5; i++) { let n = 0; for await (const _ of p.run(u[process.argv[2] as 'asyncNumbers'], 1_000_000)) n++ }
await p.close()
