import { createServer } from 'node:net'
// Shared by the specs: a guard that turns stray rejections into failures
// (uvu would otherwise let them pass), temp dirs, and small waits.
import { mkdtempSync, readdirSync, readFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'

process.on('unhandledRejection', (reason) => {
  console.error('unhandled rejection in a spec:', reason)
  process.exit(1)
})

/** A fresh temporary directory. */
export function tempDir(prefix = 'farpipe-spec-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix))
}

/** A path in a fresh temporary directory, for a remote function to write a marker to. */
export function markerPath(): string {
  return path.join(tempDir(), 'marker')
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** Waits until `check` returns a truthy value (polling), or fails after `ms`. Returns that value. */
export async function until<T>(check: () => T | undefined | false, ms = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = check()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

/** The JSON a remote function wrote to `file`, once it exists and is complete. */
export async function readMarker(file: string): Promise<any> {
  const text = await until(() => existsSync(file) && readFileSync(file, 'utf8'), 10_000, `marker ${file}`)
  return JSON.parse(text)
}

/** Collects an async iterable into an array. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

/** Awaits a promise that must reject; returns the rejection. */
export async function rejection(p: Promise<unknown> | PromiseLike<unknown>): Promise<any> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection, but the promise resolved')
}

/** Calls a function that must throw; returns what it threw. */
export function thrown(fn: () => unknown): any {
  try {
    fn()
  } catch (err) {
    return err
  }
  throw new Error('expected a throw, but the function returned')
}

/** Whether `pid` runs (a killed orphan may stay a zombie until it is reaped, which counts as gone). */
export function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** This process's worker processes (zombies included; not esbuild's service), from /proc. */
export function workerChildren(): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) !== process.pid) continue
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes('esbuild')) continue
      out.push({ pid: Number(name), state: fields[0]! })
    } catch {
      // gone meanwhile
    }
  }
  return out
}

/** Runs `fn` and returns the sizes of the Buffers allocated meanwhile (alloc, allocUnsafe, concat, copying from). */
export function allocations(fn: () => void): number[] {
  const sizes: number[] = []
  const { alloc, allocUnsafe, concat, from } = Buffer
  Buffer.alloc = ((n: number, ...rest: never[]) => (sizes.push(n), alloc.call(Buffer, n, ...rest))) as typeof Buffer.alloc
  Buffer.allocUnsafe = ((n: number) => (sizes.push(n), allocUnsafe.call(Buffer, n))) as typeof Buffer.allocUnsafe
  Buffer.concat = ((list: readonly Uint8Array[], n?: number) => {
    const out = concat.call(Buffer, list, n)
    sizes.push(out.byteLength)
    return out
  }) as typeof Buffer.concat
  Buffer.from = ((...args: unknown[]) => {
    // A view of an ArrayBuffer allocates nothing; a copy of bytes does.
    if (args[0] instanceof Uint8Array) sizes.push(args[0].byteLength)
    return (from as (...a: unknown[]) => Buffer).apply(Buffer, args)
  }) as typeof Buffer.from
  try {
    fn()
  } finally {
    Object.assign(Buffer, { alloc, allocUnsafe, concat, from })
  }
  return sizes
}

/** A loopback port that was free a moment ago (nothing listens on it now). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as { port: number }).port
  await new Promise((r) => server.close(r))
  return port
}
