/**
 * The local transport: worker processes on this machine, started with this
 * process's own `node`, speaking frames over their stdin and stdout. The
 * embedded default of `pool()`.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process'
import * as os from 'node:os'
import { TransportError } from '../errors.ts'
import type { Channel } from '../link.ts'
import { workerBundle } from '../worker/locate.ts'
import type { Transport, TransportEvents } from './transport.ts'

/** Options of the local transport. */
export interface LocalOptions {
  /** Worker processes to run. @default os.availableParallelism() */
  workers?: number
  /** Extra arguments for `node` (before the worker file), e.g. `['--max-old-space-size=4096']`. @default [] */
  nodeArgs?: string[]
  /** Extra environment variables for the workers (merged over this process's). */
  env?: Record<string, string>
  /** The `node` executable to run workers with. @default this process's own (`process.execPath`) */
  node?: string
}

/** How many lines of a worker's stderr are kept to explain its death. */
const STDERR_TAIL = 20

/** Worker processes on this machine. */
export class LocalTransport implements Transport {
  readonly host = 'local'
  readonly up = true
  /** How many worker processes this transport runs. */
  readonly workers: number
  private readonly nodeArgs: string[]
  private readonly node: string
  /** Kills workers still running when this process exits (a worker stuck in a loop would not notice its stdin closing). */
  private readonly onExit = () => {
    for (const child of this.children) child.kill('SIGKILL')
  }
  private readonly env: Record<string, string> | undefined
  private readonly children = new Set<ChildProcess>()

  constructor(options: LocalOptions = {}) {
    const n = options.workers ?? os.availableParallelism()
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`option workers must be an integer >= 1, got ${String(n)}`)
    this.workers = n
    this.nodeArgs = options.nodeArgs ?? []
    if (options.node !== undefined && (typeof options.node !== 'string' || options.node === '')) {
      throw new TypeError(`option node must be the path of a node executable, got ${JSON.stringify(options.node)}`)
    }
    this.node = options.node ?? process.execPath
    this.env = options.env
  }

  async connect(): Promise<number> {
    return this.workers
  }

  async open(index: number, events: TransportEvents): Promise<Channel> {
    const { file } = await workerBundle()
    const child = spawn(this.node, ['--enable-source-maps', ...this.nodeArgs, file], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: this.env ? { ...process.env, ...this.env } : process.env,
      windowsHide: true,
    })
    if (this.children.size === 0) process.on('exit', this.onExit)
    this.children.add(child)
    const where = `local/${index}`
    const tail: string[] = []
    child.stdout!.on('data', (chunk: Buffer) => events.data(chunk))
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (text: string) => {
      tail.push(...text.split('\n').filter(Boolean))
      if (tail.length > STDERR_TAIL) tail.splice(0, tail.length - STDERR_TAIL)
      events.stderr(text)
    })
    // EPIPE on a dead worker's stdin is reported by 'close' below, with more to say.
    child.stdin!.on('error', () => {})
    let spawnError: Error | undefined
    child.on('error', (err) => (spawnError = err))
    child.on('close', (code, signal) => {
      this.children.delete(child)
      if (this.children.size === 0) process.off('exit', this.onExit)
      const how = spawnError ? `could not start: ${spawnError.message}` : signal ? `was killed by ${signal}` : `exited with code ${code}`
      const last = tail.length ? `; its stderr ended with: ${tail.slice(-5).join(' | ')}` : ''
      events.close(new TransportError(`worker ${where} (pid ${child.pid ?? '?'}) ${how}${last}`, { cause: spawnError }))
    })
    child.stdin!.setDefaultEncoding?.('binary')
    return {
      write: (chunk) => void child.stdin!.write(chunk),
      writev: (chunks) => {
        child.stdin!.cork()
        for (const c of chunks) child.stdin!.write(c)
        child.stdin!.uncork()
      },
      end: () => child.stdin!.end(),
      destroy: () => child.kill('SIGKILL'),
      unref: () => {
        child.unref()
        for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?(): void } | null)?.unref?.()
      },
    }
  }

  async close(): Promise<void> {
    const waits = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve()
          const t = setTimeout(() => child.kill('SIGKILL'), 5000)
          child.once('close', () => {
            clearTimeout(t)
            resolve()
          })
        }),
    )
    await Promise.all(waits)
  }
}
