import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import './helpers.ts'
import { buildFile, needsContext } from '../lib/bundle.ts'

const here = path.dirname(fileURLToPath(import.meta.url))
const s = suite('needsContext')
const dir = mkdtempSync(path.join(tmpdir(), 'farpipe-bundle-'))
const bundleOf = async (source: string) => {
  const file = path.join(dir, `m${Math.random().toString(36).slice(2)}.ts`)
  writeFileSync(file, source)
  return buildFile(file, { shimFarpipe: true, sourcemap: true })
}

s('is false for a module that never names context() nor prints (its calls skip AsyncLocalStorage)', async () => {
  assert.is(needsContext(await buildFile(path.join(here, 'fixtures/plain-tasks.ts'), { shimFarpipe: true, sourcemap: true })), false)
  assert.is(needsContext(await bundleOf("import * as fp from 'farpipe'\nexport const f = fp.remote(async function* () { yield 1 })\n")), false)
})

s('is true for a module that imports context, the whole runtime, or prints', async () => {
  assert.is(needsContext(await buildFile(path.join(here, 'fixtures/tasks.ts'), { shimFarpipe: true, sourcemap: true })), true)
  assert.is(needsContext(await bundleOf("import { remote, context } from 'farpipe'\nexport const f = remote(() => context().callId)\n")), true)
  assert.is(needsContext(await bundleOf("import * as fp from 'farpipe'\nexport const f = fp.remote(() => fp.context().callId)\n")), true)
  assert.is(needsContext(await bundleOf("import fp from 'farpipe'\nexport const f = fp.remote(() => 1)\n")), true)
  assert.is(needsContext(await bundleOf("import { remote } from 'farpipe'\nexport const f = remote(() => console.log('hi'))\n")), true)
  assert.is(needsContext(await bundleOf("import { remote } from 'farpipe'\nexport const f = remote(() => process.stdout.write('hi'))\n")), true)
})

s.run()
