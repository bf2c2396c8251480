// A call that survives a dropped connection (PoolOptions.resumeWindow),
// over the bench sshd reached through a TCP proxy that cuts and refuses
// connections: how long after the network comes back the first new item
// arrives, how much each side keeps to send again with the default windows,
// and what resuming costs when nothing drops (resume on against off,
// alternated in the same run).
import { pool, type CommandHost, type Pool } from 'farpipe'
import { startTcpProxy, type TcpProxy } from '../spec/fixtures/tcp-proxy.ts'
import { cacheDir, sshd } from './context.ts'
import { measure, repeat, RUNS, type Row, type Section } from './lib.ts'
import * as b from './tasks.ts'

const MiB = 2 ** 20
const ALIAS = 'farpipe-bench-resume'
/** How long the network is down in each outage. */
const OUTAGE_MS = 2000

async function open(resumeWindow?: number, host: string | CommandHost = ALIAS): Promise<Pool> {
  const p = await pool({ hosts: [host], workers: 1, cacheDir: await cacheDir(), onLog: () => {}, ...(resumeWindow === undefined ? {} : { resumeWindow }) })
  await p.run(b.noop)
  return p
}

/**
 * Ms from the network coming back to the first item made after the drop:
 * a stream is read in the background; the network goes down (cut, then
 * refused) for OUTAGE_MS, long enough for the reader to take every item
 * that arrived before; then it comes back.
 */
async function backToFirstItem(p: Pool, proxy: TcpProxy): Promise<number> {
  const arrivals: number[] = []
  const call = p.run(b.numbers, Number.MAX_SAFE_INTEGER)
  const reading = (async () => {
    for await (const _ of call) arrivals.push(performance.now())
  })().catch(() => {})
  while (arrivals.length < 10_000) await new Promise((r) => setTimeout(r, 5))
  proxy.refuse()
  proxy.cut()
  await new Promise((r) => setTimeout(r, OUTAGE_MS))
  const back = performance.now()
  proxy.allow()
  while (!(arrivals.at(-1)! > back)) await new Promise((r) => setTimeout(r, 1))
  const first = arrivals.find((t) => t > back)!
  await call.cancel()
  await reading
  return first - back
}

/** Ms from a worker killed mid-stream (its connection up) to its call's failure: a command host must reconnect and ask a relay to learn it. */
async function killedToFailure(p: Pool): Promise<number> {
  const pid = await p.run(b.pid)
  const it = p.run(b.numbers, Number.MAX_SAFE_INTEGER)[Symbol.asyncIterator]()
  await it.next()
  const t0 = performance.now()
  process.kill(pid, 'SIGKILL')
  try {
    for (;;) await it.next()
  } catch {
    return performance.now() - t0
  }
}

/** The most bytes this side kept to send again while `work` ran on a fresh pool. */
async function keptPeak(work: (p: Pool) => Promise<unknown>): Promise<number> {
  const p = await open()
  try {
    await work(p)
    return p.stats().hosts[0]!.workers[0]!.resumeBytesPeak
  } finally {
    await p.close()
  }
}

/**
 * Runs `a` and `b` `n` times each, after one unmeasured run of each, taking
 * turns at going first (lib.ts's pair always runs `a` first; here the two
 * pools are alike, and which runs first weighed more than resuming did).
 */
async function alternated(a: () => Promise<number>, b: () => Promise<number>, n: number): Promise<[number[], number[]]> {
  await a()
  await b()
  const as: number[] = []
  const bs: number[] = []
  for (let i = 0; i < n; i++) {
    if (i % 2) {
      as.push(await a())
      bs.push(await b())
    } else {
      bs.push(await b())
      as.push(await a())
    }
  }
  return [as, bs]
}

async function down(p: Pool, total: number): Promise<number> {
  const t0 = performance.now()
  let n = 0
  for await (const c of p.run(b.bytes, total, 65536)) n += c.byteLength
  return n / MiB / ((performance.now() - t0) / 1000)
}

async function items(p: Pool, n: number): Promise<number> {
  const t0 = performance.now()
  let k = 0
  for await (const _ of p.run(b.numbers, n)) k++
  return k / ((performance.now() - t0) / 1000)
}

async function tinyCalls(p: Pool, n: number): Promise<number> {
  const t0 = performance.now()
  for (let i = 0; i < n; i++) await p.run(b.noop)
  return ((performance.now() - t0) * 1000) / n
}

export async function run(): Promise<Section> {
  const s = await sshd()
  const proxy = await startTcpProxy({ host: s.host, port: s.port })
  s.viaProxy(proxy.port, ALIAS)
  try {
    const rows: Row[] = []
    const resumed = await open()
    try {
      rows.push({ figure: `network back → first new item (after a ${OUTAGE_MS / 1000} s outage)`, farpipe: measure(await repeat(() => backToFirstItem(resumed, proxy), RUNS, 0), 'ms', false) })
    } finally {
      await resumed.close()
    }
    // The same through a command host (the system ssh client): a reconnection is a probe, then a relay, each a new ssh.
    const command: CommandHost = { name: 'via-ssh', command: ['ssh', '-F', `${s.home}/.ssh/config`, '-o', 'BatchMode=yes', ALIAS] }
    const viaSsh = await open(undefined, command)
    try {
      rows.push({ figure: `command host (ssh): network back → first new item (after a ${OUTAGE_MS / 1000} s outage)`, farpipe: measure(await repeat(() => backToFirstItem(viaSsh, proxy), RUNS, 0), 'ms', false) })
      rows.push({ figure: 'command host (ssh): a worker killed → its call fails', farpipe: measure(await repeat(() => killedToFailure(viaSsh), RUNS, 0), 'ms', false) })
    } finally {
      await viaSsh.close()
    }
    const upload = async (p: Pool) => {
      const chunk = new Uint8Array(65536)
      await p.run(b.sink, (function* () {
        for (let i = 0; i < (256 * MiB) / chunk.byteLength; i++) yield chunk
      })())
    }
    const peaks = [
      ['256 MiB down, 64 KiB chunks', (p: Pool) => down(p, 256 * MiB)],
      ['256 MiB up, 64 KiB chunks', upload],
      ['1M small items down', (p: Pool) => items(p, 1_000_000)],
    ] as const
    for (const [what, work] of peaks) {
      rows.push({ figure: `bytes the caller keeps to resend, peak: ${what}`, farpipe: measure(await repeat(() => keptPeak(work), RUNS, 0).then((v) => v.map((x) => x / MiB)), 'MiB', false) })
    }
    // Nothing drops: resume on (the default) against off, alternated.
    const on = await open()
    const off = await open(0)
    try {
      const ab = [
        ['256 MiB down, SSH', 'MiB/s', true, (p: Pool) => down(p, 256 * MiB)],
        ['1M small items down, SSH', 'items/s', true, (p: Pool) => items(p, 1_000_000)],
        ['tiny call round trip, SSH', 'µs', false, (p: Pool) => tinyCalls(p, 2000)],
      ] as const
      for (const [what, unit, higher, fn] of ab) {
        const [a, z] = await alternated(() => fn(on), () => fn(off), 2 * RUNS)
        rows.push({ figure: `${what}, resume on`, farpipe: measure(a, unit, higher), anchor: { name: 'resume off', measure: measure(z, unit, higher) } })
      }
    } finally {
      await on.close()
      await off.close()
    }
    return {
      title: 'Resuming after a dropped connection',
      rows,
      notes: [
        `The connection goes through a TCP proxy in the bench process. An outage cuts every connection and refuses new ones for ${OUTAGE_MS / 1000} s; while calls wait to resume the pool tries the host every second, so the first figure includes up to a second of waiting for the next attempt, then an SSH handshake, the stream-local channel and the resume handshake.`,
        'A command host cannot tell a killed worker from a dropped connection by how `ssh` ended (255 for both): it runs a relay through the command (a new ssh), which finds the worker gone; the killed-worker figure is that cost. After an outage, a relay that finds the host unreachable makes the pool probe it before the next relay: the command host’s resume figure includes a probe and a relay, two ssh handshakes and two node starts.',
        'Bytes kept: what the caller holds to send again (`stats().hosts[i].workers[j].resumeBytesPeak`), with the default windows; the worker keeps the same kind of bound for what it sends.',
      ],
    }
  } finally {
    await proxy.close()
  }
}
