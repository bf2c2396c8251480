// Where a remote function was defined, as messages name it: the line of the
// remote() call in the user's own file, also when that file ran through a
// transform (tsx) whose generated lines differ. The "not exported" error is
// the message users meet.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { exportNameOf, remoteInfo } from '../lib/remote.ts'

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures')
const root = path.dirname(path.dirname(fixtures))

/** `file:line:column` of the remote() call in a fixture, as an editor counts (from 1). */
function siteOf(file: string): string {
  const lines = readFileSync(file, 'utf8').split('\n')
  const line = lines.findIndex((l) => l.includes('= remote('))
  return `${file}:${line + 1}:${lines[line]!.indexOf('remote(') + 1}`
}

/** The message of exportNameOf's refusal. */
async function refusal(fn: Function): Promise<string> {
  try {
    await exportNameOf(fn, remoteInfo(fn)!)
  } catch (err) {
    return (err as Error).message
  }
  throw new Error('expected exportNameOf to refuse a function that is not exported')
}

const s = suite('where a remote function was defined')

s('under tsx, the "not exported" error names the line of the .ts file, not the line tsx generated', async () => {
  const file = path.join(fixtures, 'unexported-site.ts')
  const { getHidden } = await import(pathToFileURL(file).href)
  const message = await refusal(getHidden())
  assert.match(message, `defined at ${siteOf(file)} is not exported`)
})

s('under plain node, a .mjs module is named at its own line', () => {
  const file = path.join(fixtures, 'unexported-site.mjs')
  // A separate node without tsx: the package's built files, as a JavaScript user runs them.
  const script = `
    import { exportNameOf, remoteInfo } from ${JSON.stringify(pathToFileURL(path.join(root, 'dist/remote.js')).href)}
    import { getHidden } from ${JSON.stringify(pathToFileURL(file).href)}
    const fn = getHidden()
    exportNameOf(fn, remoteInfo(fn)).then(() => console.log('exported?'), (err) => console.log(err.message))
  `
  const message = execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: fixtures, encoding: 'utf8' })
  assert.match(message, `defined at ${siteOf(file)} is not exported`)
})

s.run()
