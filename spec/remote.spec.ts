import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { collect, thrown } from './helpers.ts'
import { pathToFileURL } from 'node:url'
import * as path from 'node:path'
import { context } from '../lib/context.ts'
import { bundleModule } from '../lib/bundle.ts'
import { FarpipeError } from '../lib/errors.ts'
import { exportNameOf, isGeneratorFunction, remote, remoteInfo } from '../lib/remote.ts'
import * as t from './fixtures/tasks.ts'

const r = suite('remote()')

r('returns the function itself, which still runs locally', async () => {
  const f = (a: number) => a + 1
  assert.is(remote(f), f)
  assert.is(t.add(1, 2), 3)
  assert.equal(await collect(t.countAsync(3)), [0, 1, 2])
})

r('records the defining module and whether the function is a generator', () => {
  const info = remoteInfo(t.countAsync)!
  assert.ok(info.module.endsWith('/spec/fixtures/tasks.ts'), info.module)
  assert.match(info.site, 'tasks.ts:')
  assert.is(info.generator, true)
  assert.is(remoteInfo(t.add)!.generator, false)
  assert.is(remoteInfo(() => 1), undefined)
})

r('tells generator functions apart, sync and async', () => {
  assert.ok(isGeneratorFunction(function* () {}))
  assert.ok(isGeneratorFunction(async function* () {}))
  assert.not.ok(isGeneratorFunction(async () => {}))
})

r('refuses what is not a function', () => {
  const err = thrown(() => remote(42 as never))
  assert.instance(err, TypeError)
  assert.match(err.message, 'remote() expects a function, got number')
})

r('context() outside a worker gives a context that never aborts', () => {
  const ctx = context()
  assert.is(ctx.host, 'local')
  assert.is(ctx.signal.aborted, false)
  assert.is(ctx.callId, 0)
})

r('finds the export name, and refuses a function that is not exported', async () => {
  assert.is(await exportNameOf(t.square, remoteInfo(t.square)!), 'square')
  const { getHidden } = await import('./fixtures/unexported.ts')
  const hidden = getHidden()
  try {
    await exportNameOf(hidden, remoteInfo(hidden)!)
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.instance(err, FarpipeError)
    assert.match((err as Error).message, 'Export it')
  }
})

const b = suite('bundleModule()')

const tasksUrl = pathToFileURL(path.resolve('spec/fixtures/tasks.ts')).href

b('bundles a module once, named by the sha256 of its code, with farpipe resolved to the worker runtime', async () => {
  const one = await bundleModule(tasksUrl)
  const two = await bundleModule(tasksUrl)
  assert.is(one, two)
  assert.match(one.hash, /^[0-9a-f]{64}$/)
  const code = Buffer.from(one.code).toString('utf8')
  assert.match(code, 'Symbol.for("farpipe.runtime")')
  assert.not.match(code, 'class FrameDecoder')
  assert.match(code, 'sourceMappingURL=data:application/json;base64,')
})

b('refuses a native addon, naming it', async () => {
  try {
    await bundleModule(pathToFileURL(path.resolve('spec/fixtures/native.ts')).href)
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.match((err as Error).message, 'bundling spec/fixtures/native.ts failed')
    assert.match((err as Error).message, 'sshcrypto.node cannot be bundled')
  }
})

b('refuses a module that is not a file', async () => {
  try {
    await bundleModule('data:text/javascript,export const x = 1')
    assert.unreachable('should have thrown')
  } catch (err) {
    assert.match((err as Error).message, 'must be defined in a module file')
  }
})

r.run()
b.run()
