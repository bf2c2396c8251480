// What every benchmark shares: repeated runs, medians with their range, and
// the rows RESULTS.md is made of. Benchmarks are not tests: they measure and
// report, they assert nothing.
import { readFileSync } from 'node:fs'
import { pool, type Pool, type PoolOptions } from 'farpipe'

/** How many times each figure is measured (the median is reported, with min and max). */
export const RUNS = Number(process.env.FARPIPE_BENCH_RUNS ?? 5)

/** One measured quantity: its runs, and whether more is better. */
export interface Measure {
  values: number[]
  unit: string
  /** True for throughput, false for latency and memory. */
  higherIsBetter: boolean
}

/** One row of a results table: farpipe's figure, the anchor's from the same run, their ratio, and the target. */
export interface Row {
  figure: string
  farpipe: Measure
  anchor?: { name: string; measure: Measure }
  /** What the ratio must reach, e.g. `≥ 3×` or `< 1×`; shown with whether it holds. */
  target?: { text: string; holds: (ratio: number, farpipe: number) => boolean }
  note?: string
}

/** A section of RESULTS.md: one question, its rows, and notes. */
export interface Section {
  title: string
  rows: Row[]
  notes: string[]
  /** A table of its own shape, for sections that are not figures against anchors (shown after the rows, if any). */
  table?: { head: string[]; rows: string[][] }
}

/** Runs `fn` `n` times (after `warmup` unmeasured runs) and returns what each run measured. */
export async function repeat(fn: () => Promise<number>, n = RUNS, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn()
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push(await fn())
  return out
}

/**
 * Runs `a` and `b` alternately, `n` times each (after one unmeasured run of
 * each), and returns what each measured. Alternating keeps slow drifts of
 * the machine (other load, CPU frequency) out of the ratio between them.
 */
export async function pair(a: () => Promise<number>, b: () => Promise<number>, n = RUNS): Promise<[number[], number[]]> {
  await a()
  await b()
  const as: number[] = []
  const bs: number[] = []
  for (let i = 0; i < n; i++) {
    as.push(await a())
    bs.push(await b())
  }
  return [as, bs]
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** The p-th percentile (0..100) of a list of samples. */
export function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

export const measure = (values: number[], unit: string, higherIsBetter = true): Measure => ({ values, unit, higherIsBetter })

function fmt(x: number): string {
  const a = Math.abs(x)
  if (a >= 1e6) return `${(x / 1e6).toFixed(2)}M`
  if (a >= 1e4) return `${(x / 1e3).toFixed(0)}k`
  if (a >= 100) return x.toFixed(0)
  if (a >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

/** `median (min–max) unit`. */
export function show(m: Measure): string {
  return `${fmt(median(m.values))} (${fmt(Math.min(...m.values))}–${fmt(Math.max(...m.values))}) ${m.unit}`
}

/** farpipe ÷ anchor for throughput; anchor ÷ farpipe would hide which is better, so latency ratios are farpipe ÷ anchor too (lower is better). */
export function ratio(row: Row): number | undefined {
  if (!row.anchor) return undefined
  return median(row.farpipe.values) / median(row.anchor.measure.values)
}

/** Renders a section as Markdown. */
export function renderSection(s: Section): string {
  const lines = [`## ${s.title}`]
  if (s.rows.length > 0 || !s.table) lines.push('', '| figure | farpipe | anchor (same run) | ratio | target |', '|---|---|---|---|---|')
  for (const r of s.rows) {
    const q = ratio(r)
    const target = r.target ? `${r.target.text} ${r.target.holds(q ?? NaN, median(r.farpipe.values)) ? '✅' : '❌'}` : ''
    lines.push(
      `| ${r.figure} | ${show(r.farpipe)} | ${r.anchor ? `${r.anchor.name}: ${show(r.anchor.measure)}` : ''} | ${q === undefined ? '' : `${q.toFixed(2)}×`} | ${target} |`,
    )
  }
  if (s.table) {
    const cell = (c: string) => c.replace(/\|/g, '\\|').replace(/\n/g, ' ')
    lines.push('', `| ${s.table.head.map(cell).join(' | ')} |`, `|${s.table.head.map(() => '---').join('|')}|`)
    for (const r of s.table.rows) lines.push(`| ${r.map(cell).join(' | ')} |`)
  }
  for (const n of s.notes) lines.push('', n)
  return lines.join('\n')
}

/** Peak and current RSS of a process on this machine, from /proc (KiB → bytes). */
export function rssOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) * 1024
  return { rss: kb('VmRSS'), peak: kb('VmHWM') }
}

/** Resets a process's peak RSS (VmHWM) to its current RSS, where the kernel allows (Linux ≥ 4.0). */
export function resetPeak(pid: number): boolean {
  try {
    // Writing 5 to clear_refs resets the peak RSS.
    require('node:fs').writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}

const require = (await import('node:module')).createRequire(import.meta.url)

/** CPU seconds (user + system) a process has used so far, from /proc (0 if it is gone). */
export function cpuSeconds(pid: number): number {
  return procStat(pid)?.cpu ?? 0
}

/** Runs `fn` and reports how busy each process was meanwhile (CPU seconds per wall second, 1 = one core). */
export async function busy<T>(pids: Record<string, number[]>, fn: () => Promise<T>): Promise<{ result: T; load: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, ps]) => [k, ps.reduce((s, p) => s + cpuSeconds(p), 0)]))
  const t0 = performance.now()
  const result = await fn()
  const wall = (performance.now() - t0) / 1000
  const load = Object.fromEntries(Object.entries(pids).map(([k, ps]) => [k, (ps.reduce((s, p) => s + cpuSeconds(p), 0) - before[k]!) / wall]))
  return { result, load }
}

/** Items per second from a count and a start time. */
export function perSecond(n: number, t0: number): number {
  return n / ((performance.now() - t0) / 1000)
}

/** MiB per second. */
export function mibps(bytes: number, t0: number): number {
  return bytes / 1048576 / ((performance.now() - t0) / 1000)
}

/** Milliseconds from `pool(options)` to the first item of `one` (a one-item generator); the pool is closed after. */
export async function coldStart(options: PoolOptions, one: Parameters<Pool['run']>[0]): Promise<number> {
  const t0 = performance.now()
  const p = await pool(options)
  for await (const _ of p.run(one)) break
  const ms = performance.now() - t0
  await p.close()
  return ms
}

interface ProcStat {
  pid: number
  ppid: number
  comm: string
  cpu: number
}

/** A process as /proc/<pid>/stat has it now, or undefined once it has exited. */
function procStat(pid: number): ProcStat | undefined {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // comm may hold spaces and parens: it ends at the last ')'. After it, ppid is field 4, utime 14, stime 15 (1-based), in clock ticks (100 Hz).
    const close = st.lastIndexOf(')')
    const f = st.slice(close + 2).split(' ')
    return { pid, ppid: Number(f[1]), comm: st.slice(st.indexOf('(') + 1, close), cpu: (Number(f[11]) + Number(f[12])) / 100 }
  } catch {
    return undefined
  }
}

function procStats(): Map<number, ProcStat> {
  const out = new Map<number, ProcStat>()
  for (const name of require('node:fs').readdirSync('/proc') as string[]) {
    const p = /^\d+$/.test(name) ? procStat(Number(name)) : undefined
    if (p) out.set(p.pid, p)
  }
  return out
}

/**
 * CPU seconds (user + system) each role of processes used while `fn` ran,
 * processes that start and end meanwhile included: /proc is read every
 * 20 ms, and each process is given its role at the end, from what it was
 * when last seen (a child forked by sshd is named `sshd` until it execs;
 * `role` sees every process seen, for its ancestry; undefined: not
 * counted). What a process used in the last 20 ms before it ended is missed.
 */
export async function cpuByRole<T>(role: (p: ProcStat, seen: Map<number, ProcStat>) => string | undefined, fn: () => Promise<T>): Promise<{ result: T; cpu: Record<string, number> }> {
  const before = procStats()
  const seen = new Map(before)
  const used = new Map<number, { from: number; to: number }>()
  const sample = () => {
    for (const p of procStats().values()) {
      seen.set(p.pid, p)
      const u = used.get(p.pid)
      if (u) u.to = p.cpu
      else used.set(p.pid, { from: before.get(p.pid)?.cpu ?? 0, to: p.cpu })
    }
  }
  sample()
  const timer = setInterval(sample, 20)
  try {
    const result = await fn()
    sample()
    const cpu: Record<string, number> = {}
    for (const [pid, u] of used) {
      const r = role(seen.get(pid)!, seen)
      if (r !== undefined) cpu[r] = (cpu[r] ?? 0) + Math.max(0, u.to - u.from)
    }
    return { result, cpu }
  } finally {
    clearInterval(timer)
  }
}

/** True when `p` runs under a process whose name starts with `sshd` (a session's command). */
function underSshd(p: ProcStat, seen: Map<number, ProcStat>): boolean {
  for (let q = seen.get(p.ppid), hops = 0; q && hops < 20; q = seen.get(q.ppid), hops++) if (q.comm.startsWith('sshd')) return true
  return false
}

/**
 * The roles of an SSH transfer for {@link cpuByRole}: the local end (the
 * process `own()` names, as `name`), `sshd`, and the `far end` (what runs
 * under sshd: farpipe's worker, or `cat`).
 */
export function sshRoles(own: () => number, name: string): (p: ProcStat, seen: Map<number, ProcStat>) => string | undefined {
  return (p, seen) => (p.pid === own() ? name : p.comm.startsWith('sshd') ? 'sshd' : underSshd(p, seen) ? 'far end' : undefined)
}
