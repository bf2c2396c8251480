// What user code writes to the worker process's own descriptors 1 and 2,
// past console.log and process.stdout (a logger writing with
// fs.writeSync(1, …), a child process with inherited stdio), on local
// workers, over SSH and on command hosts. It must never reach the frame
// channel (it once killed the worker: "frame of 1819043180 bytes exceeds
// maxFrameBytes"): the call goes on, and the text reaches onLog as the
// worker's stderr, as the line of the call in flight when there is only one.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { input, pool, type CommandHost, type LogEntry, type PoolOptions } from 'farpipe'
import * as w from '../fixtures/fd-writes.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, tempDir, until } from '../helpers.ts'
import { findSshd, startSshd } from './sshd.ts'

interface Target {
  name: string
  options: () => PoolOptions
}

const targets: Target[] = [
  { name: 'local workers', options: () => ({}) },
  { name: 'a command host', options: () => ({ hosts: [{ name: 'local-sh', command: ['sh', '-c', 'exec "$@"', 'sh'] } satisfies CommandHost] }) },
]
const sshd = findSshd() ? await startSshd({ alias: 'farpipe-output' }) : undefined
if (sshd) {
  process.env.HOME = sshd.home
  delete process.env.SSH_AUTH_SOCK
  process.on('exit', () => void sshd.stop())
  targets.push(
    { name: 'SSH', options: () => ({ hosts: [sshd.alias] }) },
    { name: 'a command host through ssh', options: () => ({ hosts: [{ name: 'via-ssh', command: ['ssh', '-F', `${sshd.home}/.ssh/config`, sshd.alias] }] }) },
  )
} else {
  console.log('sshd not installed: skipping the SSH cases of user output')
}

for (const target of targets) {
  const s = suite(`user output on ${target.name}`)
  const logs: LogEntry[] = []
  const cacheDir = tempDir()
  const open = (more: PoolOptions = {}) => pool({ workers: 1, cacheDir, onLog: (e) => void logs.push(e), ...target.options(), ...more })
  const seen = (line: string) => until(() => logs.find((e) => e.line === line), 10_000, `the line ${JSON.stringify(line)} in onLog`)

  for (const fd of [1, 2]) {
    s(`fs.writeSync(${fd}, …) in a remote function reaches onLog as the line of its call, and the call goes on`, async () => {
      const p = await open()
      try {
        const line = `hello from fd ${fd} on ${target.name}`
        const call = p.run(w.writesToFd, fd, `${line}\n`, input)
        const it = call[Symbol.asyncIterator]()
        const { value: callId } = await it.next()
        const entry = await seen(line)
        assert.equal({ fd: entry.fd, callId: entry.callId }, { fd: 2, callId })
        await call.writable.close()
        assert.is((await it.next()).done, true)
        assert.is(await call.result, 'done')
        assert.is(await p.run(t.add, 1, 2), 3)
      } finally {
        await p.close()
      }
    })
  }

  s('a child process with inherited stdio prints to onLog, and the call goes on', async () => {
    const p = await open()
    try {
      const line = `hello from a child on ${target.name}`
      const call = p.run(w.childPrints, `${line}\n`, input)
      const it = call[Symbol.asyncIterator]()
      const { value } = await it.next()
      assert.is(value!.status, 0)
      const entry = await seen(line)
      assert.is(entry.callId, value!.callId)
      await call.writable.close()
      assert.is((await it.next()).done, true)
      await call.result
    } finally {
      await p.close()
    }
  })

  s('a function that writes to fd 1 and returns gives its result, and its text arrives', async () => {
    const p = await open()
    try {
      const line = `returning on ${target.name}`
      assert.is(await p.run(w.writesThenReturns, 1, `${line}\n`, 42), 42)
      await seen(line)
    } finally {
      await p.close()
    }
  })

  s('text written while two calls are in flight belongs to no call', async () => {
    const p = await open()
    try {
      const first = p.run(w.writesToFd, 1, 'first\n', input)
      const one = first[Symbol.asyncIterator]()
      await one.next()
      await seen('first')
      const line = `with two calls on ${target.name}`
      const second = p.run(w.writesToFd, 1, `${line}\n`, input)
      const two = second[Symbol.asyncIterator]()
      await two.next()
      assert.is((await seen(line)).callId, 0)
      await first.writable.close()
      await second.writable.close()
      await Promise.all([first.result, second.result])
    } finally {
      await p.close()
    }
  })

  s('regression: console.log in a getter read while an item is encoded reaches onLog, and the items arrive whole', async () => {
    const p = await open()
    try {
      // Before: the log frame was written into the middle of the item's data frame, and the caller cut the worker off
      // ("frame of 809116269 bytes exceeds maxFrameBytes"), failing every call on it.
      const got = await collect(p.run(w.logsWhileEncoded, 3))
      assert.equal(got, [0, 1, 2].map((i) => ({ i, traced: i * 2 })))
      for (const i of [0, 1, 2]) await seen(`reading traced of item ${i}`)
      assert.is(await p.run(t.add, 1, 1), 2)
    } finally {
      await p.close()
    }
  })

  s('4 MiB written to fd 1 in lines arrives whole, and the worker takes the next call', async () => {
    const p = await open()
    try {
      const before = logs.length
      assert.is(await p.run(w.floodsFd1, 4096, 1024), 4096)
      await until(() => logs.slice(before).filter((e) => e.line === 'z'.repeat(1023)).length === 4096, 20_000, 'all 4096 lines')
      assert.is(await p.run(t.add, 2, 2), 4)
    } finally {
      await p.close()
    }
  })

  s.run()
}
