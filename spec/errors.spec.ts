// The error classes keep their names when bundled: the worker is a bundle,
// and so may be a user's program. esbuild renames a class that refers to
// itself (`class _FarpipeError`), and minifying renames every class, so a
// name taken from `constructor.name` would leak as `_FarpipeError` or `t`.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { tempDir } from './helpers.ts'
import { buildFile } from '../lib/bundle.ts'
import * as plain from '../lib/errors.ts'

const errorsFile = path.join(path.dirname(fileURLToPath(import.meta.url)), '../lib/errors.ts')
const dir = tempDir('farpipe-errors-')

type Errors = typeof plain

/** Imports a bundle's code from a file of its own. */
async function load(code: Uint8Array | string, name: string): Promise<Errors> {
  const file = path.join(dir, `${name}.mjs`)
  writeFileSync(file, code)
  return (await import(pathToFileURL(file).href)) as Errors
}

/** lib/errors.ts as the worker and the library bundle it (lib/bundle.ts buildFile). */
const bundled = () => buildFile(errorsFile, { shimFarpipe: false }).then((code) => load(code, 'bundled'))

/** The same settings as buildFile, minified: what a user's bundler may do to farpipe. */
async function minified(): Promise<Errors> {
  const esbuild = await import('esbuild')
  const result = await esbuild.build({
    entryPoints: [errorsFile],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    logLevel: 'silent',
    minify: true,
  })
  return load(result.outputFiles[0]!.contents, 'minified')
}

/** One instance of every class, made through the module given. */
function instances(m: Errors): [string, Error][] {
  const origin = { errorName: 'TypeError', remoteStack: 'TypeError: x\n    at f (tasks.ts:1:1)', index: 0, host: 'local', worker: 0 }
  return [
    ['FarpipeError', new m.FarpipeError('m')],
    ['RemoteError', new m.RemoteError('m', origin)],
    ['TransportError', new m.TransportError('m')],
    ['ProtocolError', new m.ProtocolError('m')],
    ['SerializeError', new m.SerializeError('m', 'args[0]')],
    ['TimeoutError', new m.TimeoutError('m')],
    ['CancelError', new m.CancelError('m')],
    ['HostKeyError', new m.HostKeyError('m', 'SHA256:x')],
    ['MapError', new m.MapError('m', 0, 1)],
    ['FarpipeError', m.FarpipeError.from('not an error')],
  ]
}

const s = suite('error names')

for (const [label, make] of [
  ['as written (tsx)', async () => plain],
  ['bundled as lib/bundle.ts bundles (a class that refers to itself is renamed)', bundled],
  ['bundled and minified (every class is renamed)', minified],
] as const) {
  s(`each class is named as written, ${label}`, async () => {
    const m = await make()
    for (const [name, err] of instances(m)) {
      assert.is(err.name, name)
      assert.is(String(err), `${name}: ${err.message}`)
      assert.ok(err.stack?.startsWith(`${name}: `), `${name}'s stack starts with ${JSON.stringify(err.stack?.split('\n')[0])}`)
    }
  })

  s(`messages that name the class use its own name, ${label}`, async () => {
    const m = await make()
    const origin = { errorName: 'RangeError', remoteStack: 'RangeError: boom\n    at f (tasks.ts:3:9)', index: 2, host: 'gpu-1', worker: 1, callSite: '    at main (main.ts:7:3)' }
    const err = new m.RemoteError('boom', origin)
    assert.ok(err.stack?.startsWith('RemoteError: boom\n    at main (main.ts:7:3)'), err.stack)
  })
}

s('a subclass a user writes keeps its own name', () => {
  class QuotaError extends plain.FarpipeError {}
  assert.is(new QuotaError('m').name, 'QuotaError')
})

s.run()
