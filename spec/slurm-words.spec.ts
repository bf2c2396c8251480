// What farpipe adds to a host's `srun` words (lib/transports/slurm.ts), and
// how it reads srun's words about its queue out of its stderr.
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { isSrun, srunCommand, SrunQueue } from '../lib/transports/slurm.ts'

const s = suite('srun words')

s('srun is known by its program name, wherever it lives', () => {
  assert.ok(isSrun(['srun', '-N1']))
  assert.ok(isSrun(['/opt/slurm/bin/srun']))
  assert.not.ok(isSrun(['ssh', 'srun']))
  assert.not.ok(isSrun(['srunx']))
})

s('--unbuffered is added right after the program, before any program the user names, and not twice', () => {
  assert.equal(srunCommand(['srun', '-N1', '-n1'], 'worker', {}), ['srun', '--unbuffered', '-N1', '-n1'])
  assert.equal(srunCommand(['srun', '-N1', 'env', 'A=1'], 'worker', {}), ['srun', '--unbuffered', '-N1', 'env', 'A=1'])
  assert.equal(srunCommand(['srun', '-u', '-N1'], 'worker', {}), ['srun', '-u', '-N1'])
  assert.equal(srunCommand(['srun', '--unbuffered'], 'exec', {}), ['srun', '--unbuffered'])
})

s('-Q/--quiet is dropped: it would hide the lines that say a job waits in the queue', () => {
  assert.equal(srunCommand(['srun', '-Q', '-N', '1', '--quiet'], 'worker', {}), ['srun', '--unbuffered', '-N', '1'])
})

s('inside an allocation: workers get --exact (steps side by side), the probe --overlap (never behind the workers), unless the user chose', () => {
  const env = { SLURM_JOB_ID: '42' }
  assert.equal(srunCommand(['srun', '-n1'], 'worker', env), ['srun', '--unbuffered', '--exact', '-n1'])
  assert.equal(srunCommand(['srun', '-n1'], 'exec', env), ['srun', '--unbuffered', '--overlap', '-n1'])
  assert.equal(srunCommand(['srun', '--exclusive', '-n1'], 'worker', env), ['srun', '--unbuffered', '--exclusive', '-n1'])
  assert.equal(srunCommand(['srun', '--overlap'], 'worker', env), ['srun', '--unbuffered', '--overlap'])
  assert.equal(srunCommand(['srun', '--overlap'], 'exec', env), ['srun', '--unbuffered', '--overlap'])
})

s("srun's queue lines are read out of its stderr; the rest is the worker's log", () => {
  const seen: (string | undefined)[] = []
  const q = new SrunQueue((job) => seen.push(job))
  assert.is(q.filter('srun: job 12 queued and waiting for resources\n'), '')
  assert.is(q.job, '12')
  assert.is(q.filter('srun: job 12 has been allocated resources\nhello\n'), 'hello\n')
  assert.is(q.job, undefined)
  assert.is(q.filter('srun: Job 7 step creation temporarily disabled, retrying (Requested nodes are busy)\n'), '')
  assert.is(q.filter('srun: Step created for job 7\n'), '')
  assert.is(q.filter('srun: Step created for StepId=7.3\n'), '')
  assert.equal(seen, ['12', undefined, '7', undefined, undefined])
  // Other srun lines, and lines that only look alike, are log.
  const other = 'srun: error: *** STEP 3.0 ON fp1 CANCELLED AT 2026-12-03T16:00:00 ***\nmy job 12 queued and waiting for resources\n'
  assert.is(q.filter(other), other)
  assert.is(seen.length, 5)
})

s.run()
