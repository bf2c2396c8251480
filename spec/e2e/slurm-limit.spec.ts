// A job of a worker that reaches its time limit mid-call (see slurm.spec.ts
// for the rest): a file of its own, since Slurm counts time limits in
// minutes and checks them every half minute (60 to 90 s), against a
// one-node cluster of its own.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { pool, TransportError, type CommandHost, type PoolOptions } from 'farpipe'
import * as s from '../fixtures/slurm.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, rejection, tempDir, until } from '../helpers.ts'
import { noSlurm, startSlurm, type Slurm } from './slurm.ts'

const CLUSTER: CommandHost = { name: 'cluster', command: ['srun', '-N1', '-n1'] }

if (!noSlurm('slurm: a time limit')) {
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

  const c = suite('slurm: a time limit')
  c.after(() => slurm.stop())
  c.after.each(async () => {
    await slurm.command('scancel', ['-n', 'filler']).catch(() => '')
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

  c.run()
}
