// Bytes at the speed of the pipe: each figure of issue 22 beside its anchor,
// in one run. The command line as whole commands against `ssh h cat`; file
// bodies read one after another against the same bytes as top-level yields;
// 1 GiB up, echoed and down against a bare ssh2 channel and OpenSSH.
import { sshAnchors, localPool, sshPool } from './context.ts'
import { cpuByRole, measure, pair, underSshd, type Row, type Section } from './lib.ts'
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
  const [fpDown2, head] = await pair(() => down(p, GiB), async () => (await a.opensshDown(GiB)).mibps)
  rows.push({ figure: `${size} down, 64 KiB chunks, SSH`, farpipe: mibs(fpDown2), anchor: { name: 'OpenSSH `ssh host head -c`', measure: mibs(head) }, target: atLeast(1.0) })
  // Who spends the cycles, per MiB moved: one more run of each, farpipe and its anchor, watched from /proc.
  const role = (q: Parameters<typeof underSshd>[0], seen: Parameters<typeof underSshd>[1]) =>
    q.pid === process.pid ? 'caller' : q.comm.startsWith('sshd') ? 'sshd' : underSshd(q, seen) ? 'far end' : undefined
  const perMiB = async (run: () => Promise<number>) => {
    const { cpu } = await cpuByRole(role, run)
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
      `CPU milliseconds per MiB moved, by process (from /proc, one more run of each; the far end is farpipe's worker, or the bare channel's \`cat\`/\`head\`): ${cycles.join('; ')}.`,
    ],
  }
}
