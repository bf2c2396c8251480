// Slurm as the pool's hosts: `srun` as a command host's command, against a
// one-node cluster the spec starts (spec/e2e/slurm.ts). Each worker is a
// job the scheduler placed; inside an allocation, a job step. A worker
// waiting in the queue is not a dead one; a job cancelled or out of time is
// a lost worker; close() leaves nothing in the queue.
import { createHash } from 'node:crypto'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pool, TransportError, type CommandHost } from 'farpipe'
import * as s from '../fixtures/slurm.ts'
import * as t from '../fixtures/tasks.ts'
import * as trust from '../fixtures/trust.ts'
import { collect, markerPath, readMarker, rejection, tempDir, until } from '../helpers.ts'
import { slurmSpec, type SlurmSpec } from './slurm.ts'

const MiB = 2 ** 20

const spec = await slurmSpec('slurm')
if (spec) specs(spec)

function specs({ slurm, open, emptyQueue, fill }: SlurmSpec): void {
  const c = suite('slurm: srun as a command host')
  c.after(() => slurm.stop())
  c.after.each(async () => {
    await slurm.command('scancel', ['-n', 'filler']).catch(() => '')
  })

  c('srun as users write it: each worker is a job of its own, a stream comes from inside it (SLURM_JOB_ID), and close() leaves the queue empty', async () => {
    const p = await open()
    try {
      await until(() => p.stats().hosts[0]!.workers.every((w) => w.up), 20_000, 'both workers')
      const jobs = await Promise.all([p.run(s.job), p.run(s.job)])
      const running = await slurm.jobs()
      assert.is(running.length, 2, JSON.stringify(running))
      assert.ok(running.every((j) => j.state === 'R'))
      for (const j of jobs) assert.ok(running.some((r) => r.id === j.job), `job ${j.job} is in the queue`)
      const items = await collect(p.run(s.numbered, 1000))
      assert.equal(items.map((x) => x.i), Array.from({ length: 1000 }, (_, i) => i))
      assert.ok(items.every((x) => x.job === items[0]!.job && running.some((r) => r.id === x.job)))
    } finally {
      await p.close()
    }
    await emptyQueue()
  })

  c('map of 300 items over 3 workers: each result once, in order, from three jobs', async () => {
    const p = await open({ workers: 3 })
    try {
      const results = await collect(p.map(s.slowSquare, Array.from({ length: 300 }, (_, i) => i), { concurrency: 6 }))
      assert.equal(results.map((r) => r.y), Array.from({ length: 300 }, (_, i) => i * i))
      assert.is(new Set(results.map((r) => r.job)).size, 3)
    } finally {
      await p.close()
    }
    await emptyQueue()
  })

  c('64 MiB up and back through srun, intact', async () => {
    const p = await open({ workers: 1 })
    try {
      const sent = createHash('sha256')
      const back = createHash('sha256')
      async function* data() {
        for (let i = 0; i < 64; i++) {
          const chunk = new Uint8Array(MiB).fill(i)
          sent.update(chunk)
          yield chunk
        }
      }
      let bytes = 0
      let remote = ''
      for await (const x of p.run(s.echoHashed, data())) {
        if (typeof x === 'string') remote = x
        else {
          back.update(x)
          bytes += x.byteLength
        }
      }
      assert.is(bytes, 64 * MiB)
      const digest = sent.digest('hex')
      assert.is(remote, digest, 'what arrived there')
      assert.is(back.digest('hex'), digest, 'what came back')
    } finally {
      await p.close()
    }
  })

  c('a break reaches the finally of the generator inside the job', async () => {
    const marker = markerPath()
    const p = await open({ workers: 1 })
    try {
      let n = 0
      for await (const _ of p.run(trust.endlessWithCleanup, marker)) if (++n === 100) break
      assert.is(await readMarker(marker), 'finally ran')
      assert.is(await p.run(t.add, 1, 2), 3, 'the worker goes on')
    } finally {
      await p.close()
    }
  })

  c("scancel of a worker's job mid-map: a TransportError for that worker, its items run again once elsewhere, each result once; the slot gets a new job", async () => {
    const p = await open({ workers: 2 })
    try {
      await until(() => p.stats().hosts[0]!.workers.every((w) => w.up), 20_000, 'both workers')
      const victim = (await p.run(s.job)).job!
      const results = p.map(s.slowSquare, Array.from({ length: 400 }, (_, i) => i), { concurrency: 8 })
      const got: number[] = []
      for await (const r of results) {
        got.push(r.y)
        if (got.length === 50) await slurm.command('scancel', [victim])
      }
      assert.equal(got, Array.from({ length: 400 }, (_, i) => i * i))
      assert.ok(results.progress.rerun >= 1, 'items of the cancelled job ran again')
      const jobs = await Promise.all([p.run(s.job), p.run(s.job), p.run(s.job)])
      assert.ok(jobs.every((j) => j.job !== victim), 'no call goes to the cancelled job')
      assert.ok(p.stats().hosts[0]!.workers.reduce((n, w) => n + w.exits, 0) >= 1)
    } finally {
      await p.close()
    }
    await emptyQueue()
  })

  c('a command that holds its output back fails the start with a hint, not a bare timeout', async () => {
    // Passes its output on by whole lines (as srun does without --unbuffered): the probe ends, so its output comes; a worker's frames stay held.
    const byLine = 'import sys\nfor line in sys.stdin.buffer:\n  sys.stdout.buffer.write(line); sys.stdout.buffer.flush()'
    const held: CommandHost = { name: 'held', command: ['sh', '-c', `"$@" | python3 -c '${byLine}'`, 'sh'] }
    const err = await rejection(pool({ hosts: [held], workers: 1, startTimeout: 1500, cacheDir: tempDir() }))
    assert.instance(err, TransportError)
    assert.match(err.message, /did not say hello within 1500 ms; it sent (nothing|\d+ bytes first: .*, the start of a hello and no more) \(a command that holds its output back until a newline, as srun does without --unbuffered/)
  })

  c.run()
}
