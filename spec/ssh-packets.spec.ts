import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { packets } from '../lib/transports/ssh.ts'
import { shq, workerCommand } from '../lib/ssh/bootstrap.ts'

const p = suite('packets()')

p('keeps every byte in order, and no packet is longer than the packet size', () => {
  let seed = 7
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n)
  for (let round = 0; round < 50; round++) {
    const parts = Array.from({ length: 1 + rand(12) }, (_, i) => Buffer.alloc(rand(3) === 0 ? rand(100_000) : rand(64), i + 1))
    const out = packets(parts, 32768)
    assert.equal(Buffer.concat(out), Buffer.concat(parts))
    assert.ok(out.every((pk) => pk.byteLength > 0 && pk.byteLength <= 32768))
  }
})

p('a large buffer starts a packet of its own instead of being copied to top up the one before', () => {
  const parts = [Buffer.alloc(16, 1), Buffer.alloc(65536, 2), Buffer.alloc(16, 3), Buffer.alloc(65536, 4)]
  const out = packets(parts, 32768)
  assert.equal(out.map((pk) => pk.byteLength), [16, 32768, 32768, 16, 32768, 32768])
  assert.ok(out[1]!.buffer === parts[1]!.buffer && out[2]!.buffer === parts[1]!.buffer)
  assert.ok(out[4]!.buffer === parts[3]!.buffer && out[5]!.buffer === parts[3]!.buffer)
})

p('joins small pieces into one packet, and copies nothing out of a large buffer', () => {
  assert.equal(packets(Array.from({ length: 10 }, () => Buffer.alloc(100)), 32768).map((pk) => pk.byteLength), [1000])
  const big = Buffer.alloc(70000, 2)
  const out = packets([Buffer.alloc(16, 1), big, Buffer.alloc(16, 3)], 32768)
  // The big buffer's last 4464 bytes are more than a small piece: a view of their own.
  assert.equal(out.map((pk) => pk.byteLength), [16, 32768, 32768, 4464, 16])
  assert.ok(out.slice(1, 4).every((pk) => pk.buffer === big.buffer))
  // A short tail is small: it shares a packet with what follows.
  assert.equal(packets([Buffer.alloc(32768 + 100), Buffer.alloc(16)], 32768).map((pk) => pk.byteLength), [32768, 116])
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
  assert.is(cmd, `exec 3>&1 1>&2; export A='b c' B='$HOME'; exec '/opt/my node' --enable-source-maps '--max-old-space-size=100' '/c/worker-'\\''x'\\''.mjs'`)
})

q('refuses an environment variable name that is not a name', () => {
  assert.throws(() => workerCommand({ node: 'node', version: '', platform: '', arch: '', cores: 1, cacheDir: '', workerFile: 'w' }, { 'A;rm': 'x' }, []), /not a valid name/)
})

p.run()
q.run()
