// What the benchmarks share in one run, started on first use and stopped at
// the end: a real OpenSSH sshd on loopback (the same harness the specs use),
// farpipe pools on it and locally, and the anchors.
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { pool, type Pool } from 'farpipe'
import { startSshd, type Sshd } from '../spec/e2e/sshd.ts'
import { startGrpc, type GrpcPeer } from './peers/grpc.ts'
import { startSshAnchors, type SshAnchors } from './peers/ssh.ts'
import * as b from './tasks.ts'

const once = <T>(make: () => Promise<T>): (() => Promise<T>) => {
  let p: Promise<T> | undefined
  return () => (p ??= make())
}
const stops: (() => Promise<unknown>)[] = []

let started: Sshd | undefined
/** The sshd, if a benchmark started it. */
export const sshdIfStarted = (): Sshd | undefined => started

export const sshd = once(async (): Promise<Sshd> => {
  const s = await startSshd({ alias: 'farpipe-bench' })
  started = s
  // farpipe reads ~/.ssh/config and known_hosts from HOME: the harness's.
  process.env.HOME = s.home
  delete process.env.SSH_AUTH_SOCK
  stops.push(() => s.stop())
  return s
})

export const cacheDir = once(async () => mkdtempSync(path.join(tmpdir(), 'farpipe-bench-')))

async function warm(p: Pool): Promise<Pool> {
  await p.run(b.noop)
  for await (const _ of p.run(b.numbers, 10)) void _
  stops.unshift(() => p.close())
  return p
}

/** One local worker: one stream at a time is what is measured. */
export const localPool = once(async () => warm(await pool({ workers: 1, cacheDir: await cacheDir() })))
export const sshPool = once(async () => warm(await pool({ hosts: [(await sshd()).alias], workers: 1, cacheDir: await cacheDir() })))
export const grpc = once(async (): Promise<GrpcPeer> => {
  const g = await startGrpc()
  stops.push(() => g.close())
  return g
})
export const sshAnchors = once(async (): Promise<SshAnchors> => {
  const a = await startSshAnchors(await sshd())
  stops.push(() => a.close())
  return a
})

/** Stops everything started. */
export async function stopAll(): Promise<void> {
  for (const stop of stops.splice(0)) await stop().catch(() => {})
}
