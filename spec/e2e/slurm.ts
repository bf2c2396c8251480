// A one-node Slurm cluster for the specs: munged with its own key and
// socket, slurmctld and slurmd in the foreground on loopback ports of their
// own, a temp config (SLURM_CONF), state and spool dirs, all under one temp
// dir; nothing of the system's (/etc/slurm, /run/munge) is read or touched.
// The daemons are stopped by their pids. Slurm's daemons run jobs as any
// user only when they run as root, so the cluster needs root; without the
// binaries or root the Slurm specs skip.
//
// `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none` need no
// cgroups; `SlurmdParameters=config_overrides` lets the node say it has
// CPUS cpus whatever the machine has, so the specs can fill it and queue.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { accessSync, chmodSync, constants, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import * as path from 'node:path'
import { promisify } from 'node:util'
import { suite } from 'uvu'
import { pool, type CommandHost, type Pool, type PoolOptions } from 'farpipe'
import { freePort, sleep, tempDir, until } from '../helpers.ts'

const run = promisify(execFile)

/** CPUs the node says it has: as many single-CPU workers run at once. */
export const CPUS = 4

const PROGRAMS = ['munged', 'slurmctld', 'slurmd', 'srun', 'squeue', 'sbatch', 'scancel']
const DIRS = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin']

function find(program: string): string | undefined {
  for (const dir of [...DIRS, ...(process.env.PATH ?? '').split(path.delimiter)]) {
    if (!path.isAbsolute(dir)) continue
    try {
      accessSync(path.join(dir, program), constants.X_OK)
      return path.join(dir, program)
    } catch {}
  }
  return undefined
}

/** Why a cluster cannot start here, or undefined when it can. */
export function whyNoSlurm(): string | undefined {
  const missing = PROGRAMS.filter((p) => !find(p))
  if (missing.length > 0) return `${missing.join(', ')} not installed (Debian: slurm-wlm, munge)`
  if (process.getuid?.() !== 0) return 'slurmd runs jobs only as root'
  return undefined
}

/**
 * For a spec file of Slurm suites: true when no cluster can start, after
 * registering one skipped suite named `name` that says why (a file that
 * runs no test would fail the runner).
 */
export function noSlurm(name: string): boolean {
  const why = whyNoSlurm()
  if (!why) return false
  console.log(`${why}: skipping ${name}`)
  const s = suite(name)
  s.skip(`${name} (${why})`, () => {})
  s.run()
  return true
}

export interface Slurm {
  /** The config file: give it as SLURM_CONF to srun, squeue, sbatch and scancel. */
  conf: string
  /** The environment for Slurm's commands: this process's with SLURM_CONF set. */
  env: NodeJS.ProcessEnv
  /** The jobs in the queue (`squeue`): id, state (PD, R, CG…), name. */
  jobs(): Promise<{ id: string; state: string; name: string }[]>
  /** Runs one of Slurm's commands (`sbatch`, `scancel`, `scontrol`…) against this cluster; resolves with its stdout. */
  command(program: string, args: string[]): Promise<string>
  /** The daemons' logs, for a failing spec's message. */
  log(): string
  stop(): Promise<void>
}

/** Starts the cluster and waits until its node takes jobs. */
export async function startSlurm(): Promise<Slurm> {
  const dir = tempDir('farpipe-slurm-')
  for (const d of ['state', 'spool', 'log']) mkdirSync(path.join(dir, d))
  const key = path.join(dir, 'munge.key')
  writeFileSync(key, randomBytes(1024))
  chmodSync(key, 0o400)
  const socket = path.join(dir, 'munge.sock')
  const [ctldPort, slurmdPort] = [await freePort(), await freePort()]
  const me = hostname().split('.')[0]!
  // Its own node name: two clusters of specs may run at once.
  const node = `fp-${randomBytes(3).toString('hex')}`
  const conf = path.join(dir, 'slurm.conf')
  writeFileSync(
    conf,
    [
      'ClusterName=farpipe-spec',
      `SlurmctldHost=${me}(127.0.0.1)`,
      'SlurmUser=root',
      'SlurmdUser=root',
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${slurmdPort}`,
      'AuthType=auth/munge',
      `AuthInfo=socket=${socket}`,
      'CredType=cred/munge',
      `StateSaveLocation=${dir}/state`,
      `SlurmdSpoolDir=${dir}/spool`,
      `SlurmctldPidFile=${dir}/slurmctld.pid`,
      `SlurmdPidFile=${dir}/slurmd.pid`,
      `SlurmctldLogFile=${dir}/log/slurmctld.log`,
      `SlurmdLogFile=${dir}/log/slurmd.log`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'SchedulerType=sched/backfill',
      'SchedulerParameters=sched_interval=1',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      'SlurmdParameters=config_overrides',
      'ReturnToService=2',
      'MpiDefault=none',
      // Time limits are checked every few seconds, not every 30: a spec can see one reached.
      'InactiveLimit=0',
      'KillWait=2',
      'MinJobAge=2',
      `NodeName=${node} NodeHostname=${me} NodeAddr=127.0.0.1 CPUs=${CPUS} State=UNKNOWN`,
      `PartitionName=spec Nodes=${node} Default=YES MaxTime=INFINITE State=UP`,
      '',
    ].join('\n'),
  )
  const env: NodeJS.ProcessEnv = { ...process.env, SLURM_CONF: conf }
  delete env.SLURM_JOB_ID
  const daemons: ChildProcess[] = []
  const daemon = (program: string, args: string[]) => {
    const child = spawn(find(program)!, args, { env, stdio: ['ignore', 'ignore', 'ignore'] })
    daemons.push(child)
    return child
  }
  const killAll = () => {
    for (const d of daemons) if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL')
  }
  process.on('exit', killAll)
  daemon('munged', ['-F', '-S', socket, `--key-file=${key}`, `--pid-file=${dir}/munged.pid`, `--log-file=${dir}/log/munged.log`, `--seed-file=${dir}/munge.seed`, '--force'])
  await waitFor(async () => (await run(find('munge')!, ['-n', '-S', socket])).stdout.length > 0, 'munged')
  daemon('slurmctld', ['-D', '-i', '-f', conf])
  daemon('slurmd', ['-D', '-f', conf, '-N', node])
  const command = async (program: string, args: string[]) => (await run(find(program)!, args, { env })).stdout
  await waitFor(async () => /idle/.test(await command('sinfo', ['-h', '-o', '%T'])), 'the node to be idle')
  const log = () =>
    ['slurmctld', 'slurmd']
      .map((d) => {
        try {
          return `--- ${d}\n${readFileSync(path.join(dir, 'log', `${d}.log`), 'utf8').split('\n').slice(-30).join('\n')}`
        } catch {
          return ''
        }
      })
      .join('\n')
  return {
    conf,
    env,
    command,
    log,
    jobs: async () =>
      (await command('squeue', ['-h', '-o', '%i %t %j']))
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const [id = '', state = '', name = ''] = l.trim().split(/\s+/)
          return { id, state, name }
        }),
    stop: async () => {
      process.off('exit', killAll)
      for (const d of daemons.reverse()) {
        if (d.exitCode !== null || d.signalCode !== null) continue
        d.kill('SIGTERM')
        await Promise.race([new Promise((r) => d.once('exit', r)), sleep(5000)])
        if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL')
      }
    },
  }
}

async function waitFor(check: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  let last: unknown
  while (Date.now() < end) {
    try {
      if (await check()) return
    } catch (err) {
      last = err
    }
    await sleep(100)
  }
  throw new Error(`the spec Slurm cluster: ${what} did not come up within ${ms} ms${last ? `: ${(last as Error).message}` : ''}`)
}

/** The host of the Slurm specs: `srun` as users write it. */
export const CLUSTER: CommandHost = { name: 'cluster', command: ['srun', '-N1', '-n1'] }

/** What a Slurm spec file works with: its cluster, and helpers on it. */
export interface SlurmSpec {
  slurm: Slurm
  /** A pool of `host` (2 workers unless told), its own cache, logs dropped. */
  open(options?: PoolOptions, host?: CommandHost): Promise<Pool>
  /** Waits until the queue is empty (a job that ended stays a moment as CG); fails with the queue and the daemons' logs. */
  emptyQueue(): Promise<void>
  /** A job named `filler` that holds `cpus` CPUs (its output nowhere); resolves with its id. */
  fill(cpus: number): Promise<string>
}

/**
 * For a Slurm spec file: starts a cluster of its own (or registers one
 * skipped suite named `name` and resolves undefined when none can start),
 * points this process's SLURM_CONF at it (srun, like squeue, finds the
 * cluster there), and gives the helpers. Stop it with `slurm.stop()`.
 */
export async function slurmSpec(name: string): Promise<SlurmSpec | undefined> {
  if (noSlurm(name)) return undefined
  const slurm = await startSlurm()
  process.env.SLURM_CONF = slurm.conf
  delete process.env.SLURM_JOB_ID
  return {
    slurm,
    open: (options = {}, host = CLUSTER) => pool({ hosts: [host], workers: 2, cacheDir: tempDir(), onLog: () => {}, ...options }),
    emptyQueue: () =>
      until(async () => (await slurm.jobs()).length === 0, 20_000, 'the queue to be empty').then(
        () => undefined,
        async (err) => {
          throw new Error(`${(err as Error).message}: ${JSON.stringify(await slurm.jobs())}\n${slurm.log()}`)
        },
      ),
    fill: async (cpus) => (await slurm.command('sbatch', ['--parsable', '-o', '/dev/null', '-n', String(cpus), '-J', 'filler', '--wrap', 'sleep 600'])).trim(),
  }
}
