// The README as a tested document (see spec/readme.ts for how its blocks
// become a project): every file and fragment type-checks under the README's
// own tsconfig.json with the project's TypeScript, every helper an example
// uses is defined in the README or comes from farpipe, and the runnable
// blocks run: on the local pool, or (```ts ssh) against three spec sshds
// that answer as gpu-1, gpu-2 and gpu-3. A README change that breaks an
// example fails here.
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { tempDir } from './helpers.ts'
import { readmeProject, type Fragment } from './readme.ts'
import { findSshd, startSshd, type Sshd } from './e2e/sshd.ts'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
/** Inside the repository, so that `import 'farpipe'` resolves to the build by package self-reference. */
const dir = path.join(root, 'spec', '.readme')
const project = readmeProject()

interface Ran {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a command in the project's folder, killed (with its workers) after `ms`. */
function run(cmd: string, args: string[], env: Record<string, string> = {}, ms = 90_000): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: dir, env: { ...process.env, NO_COLOR: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${ms} ms)`
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {}
    }, ms)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

function where(f: Fragment | { name: string }, r: Ran): string {
  const line = 'line' in f ? `README.md line ${f.line}` : f.name
  return `${line} (${f.name}) exited with ${r.code}\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`
}

const blocks = suite('README: its code')
const cache = tempDir('farpipe-readme-cache-')

blocks.before(() => {
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  for (const f of [...project.files, ...project.fragments]) writeFileSync(path.join(dir, f.name), f.text)
})

blocks('has the project files a user copies: tasks.ts, main.ts and tsconfig.json', () => {
  assert.equal(project.quickStart.map((f) => f.name).sort(), ['main.ts', 'tasks.ts', 'tsconfig.json'])
  assert.ok(project.fragments.length >= 10, `only ${project.fragments.length} fragments`)
})

blocks('every file and fragment type-checks under the README\'s tsconfig.json', async () => {
  const r = await run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json', '--noEmit'])
  assert.is(r.code, 0, `tsc found errors in the README's code:\n${r.stdout}${r.stderr}`)
})

blocks('main.ts runs as written, with tsx', async () => {
  const r = await run(process.execPath, ['--import', 'tsx', 'main.ts'], { XDG_CACHE_HOME: cache })
  assert.is(r.code, 0, where({ name: 'main.ts' }, r))
  assert.equal(r.stdout.trim().split('\n'), ['0', '1', '1', '2', '3', '5', '8', '13', '21', '34'])
})

for (const f of project.fragments.filter((x) => x.trial === 'local')) {
  blocks(`the block at line ${f.line} runs on the local pool`, async () => {
    const r = await run(process.execPath, ['--import', 'tsx', f.name], { XDG_CACHE_HOME: cache })
    assert.is(r.code, 0, where(f, r))
  })
}

blocks.run()

const ssh = project.fragments.filter((x) => x.trial === 'ssh')
if (ssh.length > 0 || project.shell.length > 0) {
  const s = suite('README: its SSH blocks')
  if (!findSshd()) {
    s.skip('the SSH blocks (sshd not installed)', () => {})
  } else {
    let hosts: Sshd[] = []
    s.before(async () => {
      const first = await startSshd({ alias: 'gpu-1', address: '127.0.0.1' })
      hosts = [first, await startSshd({ alias: 'gpu-2', address: '127.0.0.2', home: first.home }), await startSshd({ alias: 'gpu-3', address: '127.0.0.3', home: first.home })]
    })
    s.after(async () => {
      await Promise.all(hosts.map((h) => h.stop()))
    })
    for (const f of ssh) {
      s(`the block at line ${f.line} runs against sshds answering as gpu-1, gpu-2 and gpu-3`, async () => {
        const r = await run(process.execPath, ['--import', 'tsx', f.name], { HOME: hosts[0]!.home, XDG_CACHE_HOME: cache, SSH_AUTH_SOCK: '' })
        assert.is(r.code, 0, where(f, r))
      })
    }
    for (const block of project.shell) {
      // Each line of the block as a command of its own (comments are the shell's), with `farpipe` on the PATH.
      for (const line of block.text.split('\n').filter((l) => l.trim() && !l.trim().startsWith('#'))) {
        s(`the command line \`${line.replace(/\s+#.*$/, '').trim()}\` (line ${block.line}) exits 0`, async () => {
          const bin = path.join(dir, '.bin')
          mkdirSync(bin, { recursive: true })
          writeFileSync(path.join(bin, 'farpipe'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(root, 'dist', 'cli', 'main.js'))} "$@"\n`, { mode: 0o755 })
          // What the lines read: a file to gzip.
          writeFileSync(path.join(dir, 'big.tar'), Buffer.alloc(3 * 1024 * 1024, 'farpipe '))
          const env = { HOME: hosts[0]!.home, XDG_CACHE_HOME: cache, SSH_AUTH_SOCK: '', PATH: `${bin}:${process.env.PATH}` }
          const r = await run('/bin/sh', ['-c', line], env)
          assert.is(r.code, 0, `\`${line}\` exited with ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 2000)}--- stderr ---\n${r.stderr}`)
          if (line.includes('> big.tar.gz')) assert.ok(gunzipSync(readFileSync(path.join(dir, 'big.tar.gz'))).equals(readFileSync(path.join(dir, 'big.tar'))), 'big.tar.gz is big.tar, gzipped')
        })
      }
    }
  }
  s.run()
}
