// A job of a worker that reaches its time limit mid-call (see slurm.spec.ts
// for the rest): a file of its own, since Slurm counts time limits in
// minutes and checks them every half minute (60 to 90 s), against a
// one-node cluster of its own.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { TransportError } from 'farpipe'
import * as s from '../fixtures/slurm.ts'
import * as t from '../fixtures/tasks.ts'
import { collect, rejection } from '../helpers.ts'
import { CLUSTER, slurmSpec, type SlurmSpec } from './slurm.ts'


const spec = await slurmSpec('slurm: a time limit')
if (spec) specs(spec)

function specs({ slurm, open, emptyQueue, fill }: SlurmSpec): void {
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
