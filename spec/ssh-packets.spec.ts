import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { packets } from '../lib/transports/ssh.ts'
import { shq, workerCommand } from '../lib/ssh/bootstrap.ts'

const p = suite('packets()')

p('cuts a batch into whole packets, the last one shorter, keeping every byte in order', () => {
  const parts = [Buffer.alloc(16, 1), Buffer.alloc(65536, 2), Buffer.alloc(16, 3), Buffer.alloc(65536, 4)]
  const out = packets(parts, 32768)
  const total = parts.reduce((n, b) => n + b.byteLength, 0)
  assert.is(out.length, Math.ceil(total / 32768))
  out.slice(0, -1).forEach((pk) => assert.is(pk.byteLength, 32768))
  assert.equal(Buffer.concat(out), Buffer.concat(parts))
})

p('passes views, not copies, for packets inside one buffer', () => {
  const big = Buffer.alloc(32768 * 2, 7)
  const out = packets([big], 32768)
  assert.is(out.length, 2)
  assert.ok(out.every((pk) => pk.buffer === big.buffer))
})

p('gives nothing for nothing', () => {
  assert.equal(packets([], 32768), [])
  assert.equal(packets([Buffer.alloc(0)], 32768), [])
})

const q = suite('remote commands')

q('quotes every argument for the shell, quotes included', () => {
  assert.is(shq("it's"), `'it'\\''s'`)
  assert.is(shq('$(rm -rf ~); `x`'), `'$(rm -rf ~); \`x\`'`)
})

q('starts the worker with exec, the node path, the environment and the bundle all quoted', () => {
  const cmd = workerCommand(
    { node: "/opt/my node", version: 'v20', platform: 'linux', arch: 'x64', cores: 2, cacheDir: '/c', workerFile: "/c/worker-'x'.mjs" },
    { A: 'b c', B: '$HOME' },
    ['--max-old-space-size=100'],
  )
  assert.is(cmd, `exec env 'A=b c' 'B=$HOME' '/opt/my node' --enable-source-maps '--max-old-space-size=100' '/c/worker-'\\''x'\\''.mjs'`)
})

q('refuses an environment variable name that is not a name', () => {
  assert.throws(() => workerCommand({ node: 'node', version: '', platform: '', arch: '', cores: 1, cacheDir: '', workerFile: 'w' }, { 'A;rm': 'x' }, []), /not a valid name/)
})

p.run()
q.run()
