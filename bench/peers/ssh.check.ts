/**
 * Runs every SSH anchor a few times against a fresh test sshd and prints the
 * figures and ciphers: `node --import tsx bench/peers/ssh.check.ts`.
 * Optional arguments: runs (default 3), bytes (default 1 GiB), items
 * (default 1,000,000).
 *
 * @module
 */
import { startSshd } from '../../spec/e2e/sshd.ts'
import { startSshAnchors, type ItemKind } from './ssh.ts'

const runs = Number(process.argv[2] ?? 3)
const bytes = Number(process.argv[3] ?? 1024 ** 3)
const items = Number(process.argv[4] ?? 1_000_000)

const fmt = (x: number, digits = 0) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })

async function repeat(label: string, once: () => Promise<string>): Promise<void> {
  const results: string[] = []
  for (let i = 0; i < runs; i++) results.push(await once())
  console.log(`${label.padEnd(28)} ${results.join('   ')}`)
}

const sshd = await startSshd({ alias: 'farpipe-bench' })
try {
  const anchors = await startSshAnchors(sshd)
  try {
    const c = await anchors.ciphers()
    console.log(`ciphers: ssh2 ${c.ssh2}, OpenSSH ${c.openssh}`)
    console.log(`${runs} runs each, ${fmt(bytes / 1024 ** 2)} MiB per byte run, ${fmt(items)} items per JSON-lines run\n`)
    const withSetup = (r: { mibps: number; setupMs: number }) => `${fmt(r.mibps)} MiB/s (setup ${fmt(r.setupMs)} ms)`
    await repeat('OpenSSH down', async () => withSetup(await anchors.opensshDown(bytes)))
    await repeat('OpenSSH up', async () => withSetup(await anchors.opensshUp(bytes)))
    await repeat('ssh2 down', async () => `${fmt(await anchors.ssh2Down(bytes))} MiB/s`)
    await repeat('ssh2 up', async () => `${fmt(await anchors.ssh2Up(bytes))} MiB/s`)
    await repeat('ssh2 echo', async () => `${fmt(await anchors.ssh2Echo(bytes))} MiB/s`)
    for (const kind of ['numbers', 'objects'] as ItemKind[]) {
      await repeat(`JSON lines over ssh2 (${kind})`, async () => `${fmt((await anchors.jsonLinesDown(items, kind)) / 1e6, 2)}M/s`)
    }
  } finally {
    await anchors.close()
  }
} finally {
  await sshd.stop()
}
