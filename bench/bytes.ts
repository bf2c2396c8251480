// Bytes at the speed of the pipe: each figure of issue 22 beside its anchor,
// in one run. The command line as whole commands against `ssh h cat`; file
// bodies read one after another against the same bytes as top-level yields;
// 1 GiB up, echoed and down against a bare ssh2 channel and OpenSSH.
import { pool } from 'farpipe'
import { cacheDir, sshAnchors, localPool, sshd, sshPool } from './context.ts'
import * as b from './tasks.ts'
import { cpuByRole, measure, pair, RUNS, sshRoles, type Row, type Section } from './lib.ts'
import { down, echo, up } from './bulk-bytes.ts'
import { nested } from './nested.ts'
import { cliNote, cliRows } from './cli-bytes.ts'

const GiB = Number(process.env.FARPIPE_BENCH_BYTES ?? 1 << 30)
const BODIES = Number(process.env.FARPIPE_BENCH_NESTED_BYTES ?? 512 * 2 ** 20)
const mibs = (v: number[]) => measure(v, 'MiB/s')
const atLeast = (x: number) => ({ text: `≥ ${x}×`, holds: (r: number) => r >= x })

export async function run(): Promise<Section> {
  const rows: Row[] = []
  const cli = await cliRows()
  cli.rows[0]!.target = atLeast(0.85)
  rows.push(...cli.rows)
  const files = BODIES / 2 ** 20
  for (const [where, open] of [['SSH', sshPool], ['local pool', localPool]] as const) {
    const p = await open()
    const [fp, top] = await pair(() => nested(p, files, BODIES), () => down(p, BODIES))
    rows.push({ figure: `${files} MiB as ${files} file bodies of 1 MiB read one after another, ${where}`, farpipe: mibs(fp), anchor: { name: 'the same bytes as top-level yields', measure: mibs(top) }, target: atLeast(0.95) })
  }
  const p = await sshPool()
  const a = await sshAnchors()
  const size = `${(GiB / 2 ** 30).toFixed(GiB % 2 ** 30 ? 2 : 0)} GiB`
  const [fpUp, bareUp] = await pair(() => up(p, GiB), () => a.ssh2Up(GiB))
  rows.push({ figure: `${size} up, 64 KiB chunks, SSH`, farpipe: mibs(fpUp), anchor: { name: 'bare ssh2 channel', measure: mibs(bareUp) }, target: atLeast(0.9) })
  const [fpEcho, bareEcho] = await pair(() => echo(p, GiB), () => a.ssh2Echo(GiB))
  rows.push({ figure: `${size} echo, 64 KiB chunks, SSH`, farpipe: mibs(fpEcho), anchor: { name: 'bare ssh2 channel', measure: mibs(bareEcho) }, target: atLeast(0.8) })
  const [fpDown, bareDown] = await pair(() => down(p, GiB), () => a.ssh2Down(GiB))
  rows.push({ figure: `${size} down, 64 KiB chunks, SSH`, farpipe: mibs(fpDown), anchor: { name: 'bare ssh2 channel', measure: mibs(bareDown) }, target: atLeast(0.9) })
  // A new pool is a new process on the host and a new connection: its first bytes against its next (what a one-shot command gets).
  const firsts: number[] = []
  const seconds: number[] = []
  for (let i = 0; i < RUNS; i++) {
    const fresh = await pool({ hosts: [(await sshd()).alias], workers: 1, cacheDir: await cacheDir() })
    await fresh.run(b.noop)
    firsts.push(await echo(fresh, 256 * 2 ** 20))
    seconds.push(await echo(fresh, 256 * 2 ** 20))
    await fresh.close()
  }
  rows.push({ figure: '256 MiB echo, 64 KiB chunks, SSH: a new pool\'s first', farpipe: mibs(firsts), anchor: { name: 'the same pool\'s second', measure: mibs(seconds) } })
  const [fpDown2, head] = await pair(() => down(p, GiB), async () => (await a.opensshDown(GiB)).mibps)
  rows.push({ figure: `${size} down, 64 KiB chunks, SSH`, farpipe: mibs(fpDown2), anchor: { name: 'OpenSSH `ssh host head -c`', measure: mibs(head) }, target: atLeast(1.0) })
  // Who spends the cycles, per MiB moved: one more run of each, farpipe and its anchor, watched from /proc.
  const perMiB = async (run: () => Promise<number>) => {
    const { cpu } = await cpuByRole(sshRoles(() => process.pid, 'caller'), run)
    const mib = GiB / 2 ** 20
    return ['caller', 'sshd', 'far end'].map((r) => `${r} ${(((cpu[r] ?? 0) / mib) * 1000).toFixed(2)}`).join(', ')
  }
  const cycles: string[] = []
  for (const [dir, mine, bare] of [
    ['up', () => up(p, GiB), () => a.ssh2Up(GiB)],
    ['echo', () => echo(p, GiB), () => a.ssh2Echo(GiB)],
    ['down', () => down(p, GiB), () => a.ssh2Down(GiB)],
  ] as const) {
    cycles.push(`${dir}: farpipe ${await perMiB(mine)}; bare ssh2 ${await perMiB(bare)}`)
  }
  return {
    title: 'Bytes at the speed of the pipe',
    rows,
    notes: [
      cliNote(cli.alias, cli.cpu),
      'File bodies: a remote `async function*` yields `{ name, body }` items, each body a ReadableStream of 64 KiB chunks, read to its end before the next item is taken; the anchor yields the same chunks as the items of one call. Up, echo and down: one call on one warm SSH worker, 64 KiB `Uint8Array` chunks; the bare ssh2 channel runs `cat`/`head -c` at its far end on the same sshd. OpenSSH figures are its data phase (first byte to last).',
      'Why the goals do not hold on this machine (issue 22), with the profiles in the section "Bytes: where the cycles go". It has two cores, and every figure here is CPU-bound: farpipe moves bytes through three busy processes (caller, sshd, worker) where the anchors use two (client, sshd) and a `cat` that costs next to nothing. ' +
        '(1) The command line pays, before a byte moves, node\'s start (~90 ms), loading farpipe and ssh2 (~130 ms), an SSH handshake in JavaScript (~95 ms), bundling the module (esbuild, ~40 ms) and a node on the host for the worker (~140 ms): the empty-stdin row, against `ssh`\'s ~250 ms in C. Then the first MiBs of any new connection on this loopback stall for half a second or more, OpenSSH\'s too (the "first 4 MiB" row; the kernel counts spurious loss probes, `TcpExtTCPLossProbes` with as many `DSACK`s, in them), which a one-shot command never earns back. After that the command\'s own process spends about four times the CPU of OpenSSH\'s client per byte (the CPU note above): ssh2 encrypts, pads with random bytes and writes each 32 KiB packet from JavaScript, and a process that starts gets its memory fresh (page faults, garbage collection while its heap grows). A warm caller with a new connection and worker is slow for its first bytes too: the row "a new pool\'s first" against its second. ' +
        '(2) Up and echo: the worker reads (and for echo frames and sends back) every chunk, about 0.6-1 ms of CPU per MiB more than `cat`, which sshd and the caller lose on two cores; the caller spends more than the bare client too (each chunk\'s frame header is an SSH packet of its own). (3) Down is within a few percent of the bare channel and ahead of OpenSSH. (4) File bodies: on the worker a body is a ReadableStream read with a promise per chunk, where the anchor\'s chunks come from a plain generator in a loop, and each body costs the caller a stream and the worker a pump. ' +
        'Tried, measured alternated against the commit before, and left out for want of a gain: granting the next body its window when a body is first read (512 MiB as 512 bodies: 0.79-0.84x against 0.74-0.79x, within noise), one frame for consecutive chunks of a stream so that one header goes before several (up 398 / 342 MiB/s against 418 / 333, echo slower: a frame is whole before its first chunk moves on), and earlier a 1 MiB first window for bodies.',
      `CPU milliseconds per MiB moved, by process (from /proc, one more run of each; the far end is farpipe's worker, or the bare channel's \`cat\`/\`head\`): ${cycles.join('; ')}.`,
    ],
  }
}
