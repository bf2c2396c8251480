// Slurm's queue (see slurm.spec.ts for the rest): a worker whose job waits
// in the queue is not a dead one and takes no calls meanwhile, a job
// cancelled while it waits costs only its slot, close() and a caller ended
// by a signal leave nothing in the queue, and inside an allocation the
// workers are steps of it. Against a one-node cluster of its own.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import * as s from '../fixtures/slurm.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, sleep, until } from '../helpers.ts'
import { CPUS, slurmSpec, type SlurmSpec } from './slurm.ts'

/** A caller of its own, for the spec that ends one with a signal. */
const callerScript = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'slurm-caller.ts')

const spec = await slurmSpec('slurm: the queue')
if (spec) specs(spec)

function specs({ slurm, open, emptyQueue, fill }: SlurmSpec): void {
  const c = suite('slurm: the scheduler\'s queue, allocations, signals')
  c.after(() => slurm.stop())
  c.after.each(async () => {
    await slurm.command('scancel', ['-n', 'filler']).catch(() => '')
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

  c("scancel of a worker's job while it waits in the queue: that slot starts again later; the host stays up and the running worker serves the calls", async () => {
    const filler = await fill(CPUS - 1)
    await until(async () => (await slurm.jobs()).some((j) => j.id === filler && j.state === 'R'), 20_000, 'the filler to run')
    const p = await open({ workers: 2 })
    try {
      const queued = await until(() => p.stats().hosts[0]!.workers.find((w) => w.queued), 20_000, 'a queued worker')
      const job = /\(job (\d+)\)/.exec(queued.queued!)![1]!
      await slurm.command('scancel', [job])
      await until(() => !p.stats().hosts[0]!.workers.some((w) => w.queued === queued.queued), 20_000, 'the cancelled job to be noticed')
      // Before: the host went down ("its connection was lost") and the calls waited for a probe queued behind the filler.
      assert.is(p.hosts[0]!.up, true)
      assert.equal(await Promise.all([1, 2, 3].map((i) => p.run(t.add, i, i))), [2, 4, 6])
    } finally {
      await p.close()
    }
    await slurm.command('scancel', [filler])
    await emptyQueue()
  })

  c('calls handed a worker whose new job turns out to wait in the queue go to the worker that runs (a map does not stall)', async () => {
    const filler = await fill(CPUS - 2)
    await until(async () => (await slurm.jobs()).some((j) => j.id === filler && j.state === 'R'), 20_000, 'the filler to run')
    const p = await open({ workers: 2 })
    try {
      await until(() => p.stats().hosts[0]!.workers.every((w) => w.up), 20_000, 'both workers')
      const jobs = new Set((await Promise.all([p.run(s.pauseJob, 300), p.run(s.pauseJob, 300)])).map((j) => j.job!))
      const [victim, survivor] = [...jobs]
      // The victim's CPU goes to a job that waited for it: the victim's slot, started again on demand, queues.
      const waiting = await fill(1)
      await slurm.command('scancel', [victim!])
      await until(async () => (await slurm.jobs()).some((j) => j.id === waiting && j.state === 'R'), 20_000, 'the waiting job to take the CPU')
      const results = await collect(p.map(s.slowSquare, Array.from({ length: 40 }, (_, i) => i), { concurrency: 4 }))
      assert.equal(results.map((r) => r.y), Array.from({ length: 40 }, (_, i) => i * i))
      assert.ok(results.every((r) => r.job === survivor), 'every item ran on the worker that runs')
      await slurm.command('scancel', [waiting])
    } finally {
      await p.close()
    }
    await slurm.command('scancel', [filler])
    await emptyQueue()
  })

  c("a caller ended by SIGTERM while its workers' jobs wait in the queue leaves nothing in it", async () => {
    const filler = await fill(CPUS - 1)
    await until(async () => (await slurm.jobs()).some((j) => j.id === filler && j.state === 'R'), 20_000, 'the filler to run')
    const child = spawn(process.execPath, ['--import', 'tsx', callerScript, 'sigterm-caller'], { env: process.env, stdio: ['ignore', 'pipe', 'inherit'] })
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.setEncoding('utf8').on('data', (d: string) => d.includes('ready') && resolve())
        child.on('exit', (code) => reject(new Error(`the caller exited with ${code} before it was ready`)))
      })
      await until(async () => (await slurm.jobs()).some((j) => j.name === 'sigterm-caller' && j.state === 'PD'), 20_000, 'a worker job waiting in the queue')
      child.kill('SIGTERM')
      const [, signal] = (await once(child, 'exit')) as [number | null, string | null]
      assert.is(signal, 'SIGTERM', 'the caller ends by its signal, as it would have')
      await until(async () => !(await slurm.jobs()).some((j) => j.name === 'sigterm-caller'), 20_000, 'its jobs to leave the queue')
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    await slurm.command('scancel', [filler])
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

  c.run()
}
