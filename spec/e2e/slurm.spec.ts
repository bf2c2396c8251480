// Slurm as the pool's hosts: `srun` as a command host's command, against a
// one-node cluster the spec starts (spec/e2e/slurm.ts). Each worker is a
// job the scheduler placed; inside an allocation, a job step. A worker
// waiting in the queue is not a dead one; a job cancelled or out of time is
// a lost worker; close() leaves nothing in the queue.
import { createHash } from 'node:crypto'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pool, TransportError, type CommandHost, type PoolOptions } from 'farpipe'
import * as s from '../fixtures/slurm.ts'
import * as t from '../fixtures/tasks.ts'
import * as trust from '../fixtures/trust.ts'
import { collect, markerPath, readMarker, rejection, sleep, tempDir, until } from '../helpers.ts'
import { CPUS, noSlurm, startSlurm, type Slurm } from './slurm.ts'

const MiB = 2 ** 20
const CLUSTER: CommandHost = { name: 'cluster', command: ['srun', '-N1', '-n1'] }

if (!noSlurm('slurm')) {
  const slurm = await startSlurm()
  // srun, like squeue, finds the cluster through SLURM_CONF in its environment: this process's.
  process.env.SLURM_CONF = slurm.conf
  delete process.env.SLURM_JOB_ID
  specs(slurm)
}

function specs(slurm: Slurm): void {
  const open = (options: PoolOptions = {}, host: CommandHost = CLUSTER) => pool({ hosts: [host], workers: 2, cacheDir: tempDir(), onLog: () => {}, ...options })
  /** Until the queue is empty (a job that ended stays a moment as CG). */
  const emptyQueue = () => until(async () => (await slurm.jobs()).length === 0, 20_000, 'the queue to be empty').catch(async (err) => {
    throw new Error(`${(err as Error).message}: ${JSON.stringify(await slurm.jobs())}\n${slurm.log()}`)
  })
  const fill = async (cpus: number) => (await slurm.command('sbatch', ['--parsable', '-o', '/dev/null', '-n', String(cpus), '-J', 'filler', '--wrap', 'sleep 600'])).trim()

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

  c('a worker waiting in the queue is not a dead one: the pool runs on the workers up, says "queued by the scheduler", and uses the others once room frees', async () => {
    // One CPU left: the probe, then worker 0, run; workers 1 and 2 wait, past their startTimeout.
    const filler = await fill(CPUS - 1)
    await until(async () => (await slurm.jobs()).some((j) => j.id === filler && j.state === 'R'), 20_000, 'the filler to run')
    const p = await open({ workers: 3, startTimeout: 1500 })
    try {
      assert.is(await p.run(t.add, 2, 3), 5)
      const queued = await until(() => {
        const w = p.stats().hosts[0]!.workers
        return w.filter((x) => x.queued).length === 2 && w
      }, 20_000, 'two workers queued')
      for (const w of queued.filter((x) => x.queued)) assert.match(w.queued!, /^queued by the scheduler \(job \d+\)$/)
      assert.is(queued.filter((x) => x.up).length, 1)
      await sleep(3000) // past startTimeout: the queued workers are not killed for it
      assert.is((await slurm.jobs()).filter((j) => j.state === 'PD').length, 2)
      assert.equal(await Promise.all([1, 2, 3].map((i) => p.run(t.add, i, i))), [2, 4, 6])
      await slurm.command('scancel', [filler])
      await until(() => p.stats().hosts[0]!.workers.every((w) => w.up && !w.queued), 30_000, 'the queued workers to start')
      const jobs = new Set((await Promise.all(Array.from({ length: 9 }, () => p.run(s.pauseJob, 200)))).map((j) => j.job))
      assert.is(jobs.size, 3, 'calls go to all three workers')
    } finally {
      await p.close()
    }
    await emptyQueue()
  })

  c('close() while workers wait in the queue takes their jobs out of it', async () => {
    const filler = await fill(CPUS - 1)
    await until(async () => (await slurm.jobs()).some((j) => j.id === filler && j.state === 'R'), 20_000, 'the filler to run')
    const p = await open({ workers: 3 })
    await until(() => p.stats().hosts[0]!.workers.filter((w) => w.queued).length === 2, 20_000, 'two workers queued')
    await p.close()
    await slurm.command('scancel', [filler])
    await emptyQueue()
  })

  c('inside an allocation (SLURM_JOB_ID set, as salloc does): the workers are steps of it, side by side, and close() ends them', async () => {
    const alloc = (await slurm.command('salloc', ['--no-shell', '-n', '2', '-J', 'alloc'])).trim()
    const id = (await slurm.jobs()).find((j) => j.name === 'alloc')!.id
    process.env.SLURM_JOB_ID = id
    try {
      const p = await open({ workers: 2 })
      try {
        await until(() => p.stats().hosts[0]!.workers.every((w) => w.up), 20_000, `both workers (${alloc})`)
        const where = await Promise.all([p.run(s.pauseJob, 300), p.run(s.pauseJob, 300)])
        assert.ok(where.every((w) => w.job === id), JSON.stringify(where))
        assert.is(new Set(where.map((w) => w.step)).size, 2, 'two steps')
        assert.equal((await slurm.jobs()).map((j) => j.id), [id], 'no job of their own')
      } finally {
        await p.close()
      }
      await until(async () => (await slurm.command('squeue', ['-h', '-s', '-j', id, '-o', '%i'])).split('\n').filter((l) => l.trim() && !l.includes('.extern')).length === 0, 20_000, 'no step left')
    } finally {
      delete process.env.SLURM_JOB_ID
      await slurm.command('scancel', [id])
    }
    await emptyQueue()
  })

  c('a time limit reached mid-call: the call fails with a TransportError that quotes srun (DUE TO TIME LIMIT), and the next call runs in a new job', async () => {
    // Slurm counts time limits in minutes and checks them every half minute: this one takes 60 to 90 s.
    const p = await open({ workers: 1 }, { ...CLUSTER, command: [...CLUSTER.command, '--time=1'] })
    try {
      const first = (await p.run(s.job)).job
      const err = await rejection(collect(p.run(t.slowItems, 100_000, 100)))
      assert.instance(err, TransportError)
      assert.is(err.reason, 'lost')
      assert.match(err.message, /DUE TO TIME LIMIT/)
      assert.is.not((await p.run(s.job)).job, first)
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
