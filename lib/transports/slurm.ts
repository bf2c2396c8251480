/**
 * Slurm's `srun` as a command host's command: each worker is a job (or,
 * inside an allocation, a job step) that Slurm places. What farpipe adds to
 * the user's `srun` words, and what it reads from srun's stderr about the
 * scheduler's queue.
 *
 * - `--unbuffered`: srun forwards a task's stdout line by line otherwise,
 *   and frames have no newlines (the hello would never arrive).
 * - Inside an allocation (`SLURM_JOB_ID` set, as `salloc` does), srun
 *   starts job steps in it rather than new jobs: workers get `--exact` (a
 *   step takes only what it asks for, so several run side by side, not one
 *   holding the whole allocation) and the probe and uploads `--overlap`
 *   (they never wait behind the workers).
 * - A job or step waiting in the queue is not a dead worker: srun says so on
 *   stderr (`srun: job 12 queued and waiting for resources`, or `step
 *   creation temporarily disabled`), and says when it starts. Those lines
 *   pause the start deadlines ({@link SrunQueue}).
 * - srun killed with SIGKILL while its job waits leaves the job in the
 *   queue, to run later with nobody reading it: srun is stopped with
 *   SIGTERM, which revokes a pending job and ends a running one.
 * - `-Q`/`--quiet` is dropped from the user's words: it hides the queue lines.
 *
 * @module
 */
import * as path from 'node:path'

/** True when the command's program is srun. */
export function isSrun(command: readonly string[]): boolean {
  return path.basename(command[0] ?? '') === 'srun'
}

/** What a command process is for: a worker, or a short command (the probe, an upload). */
export type CommandUse = 'worker' | 'exec'

/**
 * The srun options farpipe adds for `use`, right after the program (srun
 * reads its options up to the first word that is not one, so they must
 * come before any program the user's words name), unless the user's words
 * already settle them.
 */
export function srunCommand(command: readonly string[], use: CommandUse, env: NodeJS.ProcessEnv = process.env): string[] {
  const [program, ...given] = command
  // srun's own words on stderr are how a job waiting in the queue is told from a dead one: --quiet would hide them.
  const args = given.filter((a) => a !== '-Q' && a !== '--quiet')
  const has = (...names: string[]) => args.some((a) => names.some((n) => a === n || a.startsWith(`${n}=`)))
  const extra: string[] = []
  if (!has('-u', '--unbuffered')) extra.push('--unbuffered')
  if (env.SLURM_JOB_ID) {
    if (use === 'exec') {
      if (!has('--overlap')) extra.push('--overlap')
    } else if (!has('--exact', '--overlap', '--exclusive')) extra.push('--exact')
  }
  return [program!, ...extra, ...args]
}

/**
 * Reads srun's words about its queue out of its stderr: `changed(job)` when
 * the job (or step) waits for resources, `changed(undefined)` once it got
 * them. The other lines are the worker's log.
 */
export class SrunQueue {
  /** The job waiting in the queue, while it waits. */
  job: string | undefined

  constructor(private readonly changed: (job: string | undefined) => void) {}

  /** Whole lines of srun's stderr; returns those that are not about its queue. */
  filter(text: string): string {
    let rest = ''
    for (const line of text.split(/(?<=\n)/)) if (!this.line(line)) rest += line
    return rest
  }

  private line(line: string): boolean {
    const waits = /^srun: job (\d+) queued and waiting for resources\s*$/.exec(line) ?? /^srun: Job (\d+) step creation temporarily disabled, retrying/.exec(line)
    if (waits) {
      this.job = waits[1]
      this.changed(this.job)
      return true
    }
    if (/^srun: job \d+ has been allocated resources\s*$/.test(line) || /^srun: Step created for (job \d+|StepId=)/.test(line)) {
      this.job = undefined
      this.changed(undefined)
      return true
    }
    return false
  }
}
