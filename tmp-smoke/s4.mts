import { pool } from 'farpipe'
import * as n from '/work/main/spec/fixtures/nested.ts'
const p = await pool({ workers: 1 })
try {
  const call = p.run(n.sameTwice)
  for await (const x of call) console.log('item', x)
  console.log('result', await call.result)
} catch (e) { console.log('err', e) } finally { await p.close() }
