/**
 * The local transport: worker processes on this machine, started with this
 * process's own `node` (or the `node` option), speaking frames over their
 * stdin and a fourth stdio pipe, their descriptor 3 (see lib/worker/main.ts);
 * what they write to their stdout and stderr outside the frames is their
 * log. The embedded default of `pool()`.
 *
 * Workers always run on Node. A caller on Bun or Deno cannot start them with
 * its own executable (Bun would run the worker file as a script that exits at
 * once; Deno would run it on Deno), so there they run on the `node` found on
 * `PATH`, unless the `node` option names one.
 *
 * @module
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import type { Readable } from 'node:stream'
import { TransportError } from '../errors.ts'
import type { Channel } from '../link.ts'
import { workerBundle } from '../worker/locate.ts'
import { StderrLines, StderrTail, type Transport, type TransportEvents } from './transport.ts'

/** Options of the local transport. */
export interface LocalOptions {
  /** Worker processes to run. @default os.availableParallelism() */
  workers?: number
  /** Extra arguments for `node` (before the worker file), e.g. `['--max-old-space-size=4096']`. @default [] */
  nodeArgs?: string[]
  /** Extra environment variables for the workers (merged over this process's). */
  env?: Record<string, string>
  /**
   * The `node` executable to run workers with.
   * @default this process's own (`process.execPath`) under Node; the `node` found on `PATH` under Bun or Deno
   */
  node?: string
}

/** The oldest Node.js major version workers run on. */
const MIN_NODE_MAJOR = 20

/** The runtime this process runs on, when it is not Node (whose `process.execPath` cannot run a worker). */
function otherRuntime(): 'Bun' | 'Deno' | undefined {
  if (process.versions.bun) return 'Bun'
  if ((globalThis as { Deno?: unknown }).Deno !== undefined) return 'Deno'
  return undefined
}

/**
 * The first executable `node` on `PATH`, or undefined. A `node` that is this
 * process's own executable is skipped: Deno puts a `node` that runs Deno on
 * the `PATH` when there is no real one.
 */
function nodeOnPath(): string | undefined {
  const names = process.platform === 'win32' ? ['node.exe'] : ['node']
  const self = realpath(process.execPath)
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue
    for (const name of names) {
      const file = path.join(dir, name)
      try {
        if (!fs.statSync(file).isFile() || realpath(file) === self) continue
        fs.accessSync(file, fs.constants.X_OK)
        return file
      } catch {
        // not here; keep looking
      }
    }
  }
  return undefined
}

/** `file` with its symbolic links resolved, or as it is when it cannot be. */
function realpath(file: string): string {
  try {
    return fs.realpathSync(file)
  } catch {
    return file
  }
}

/**
 * Checks that the `node` found on `PATH` (for a caller on `runtime`) is recent
 * enough, so an old one fails `pool()` with what to do rather than a worker
 * dying on syntax it does not know.
 */
function checkNode(node: string, runtime: string): Promise<void> {
  const fix = `install Node.js >= ${MIN_NODE_MAJOR} on PATH, or pass pool({ node: '/path/to/node' })`
  return new Promise((resolve, reject) => {
    execFile(node, ['--version'], { timeout: 10_000, windowsHide: true }, (err, stdout) => {
      const version = String(stdout).trim().split('\n')[0] ?? ''
      const major = Number(/^v(\d+)\./.exec(version)?.[1])
      if (!err && major >= MIN_NODE_MAJOR) return resolve()
      const what = err ? `could not be run (${err.message})` : `is ${version || 'not Node.js'}`
      reject(
        new TransportError(`local workers run on Node.js >= ${MIN_NODE_MAJOR}, and ${node} (found on PATH, as this process runs on ${runtime}) ${what}: ${fix}`, {
          host: 'local',
          reason: 'node',
          cause: err ?? undefined,
        }),
      )
    })
  })
}

/** The `node` on `PATH`, for a caller that is not Node; fails `pool()` with what to do when there is none, or it is too old. */
async function findNode(runtime: string): Promise<string> {
  const node = nodeOnPath()
  if (!node) {
    throw new TransportError(
      `local workers run on Node.js, and this process runs on ${runtime}: no node was found on PATH. ` +
        `Install Node.js >= ${MIN_NODE_MAJOR}, or pass pool({ node: '/path/to/node' })`,
      { host: 'local', reason: 'node' },
    )
  }
  await checkNode(node, runtime)
  return node
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
  /** The `node` to run, once known: given, this process's own, or found on `PATH` by `connect()`. */
  private node: string | undefined
  /** The search for `node` on `PATH` (done once, by the first `connect()`). */
  private finding: Promise<string> | undefined
  /** The runtime this process runs on when it is not Node. */
  private readonly runtime: 'Bun' | 'Deno' | undefined
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
    this.runtime = otherRuntime()
    this.node = options.node ?? (this.runtime ? undefined : process.execPath)
    this.env = options.env
  }

  async connect(): Promise<number> {
    await this.nodePath()
    return this.workers
  }

  /** The `node` to run workers with; looked up on `PATH` once when the caller is not Node (a failed look-up is tried again by the next call). */
  private nodePath(): Promise<string> {
    if (this.node !== undefined) return Promise.resolve(this.node)
    return (this.finding ??= findNode(this.runtime ?? 'Node').then(
      (node) => (this.node = node),
      (err: unknown) => {
        this.finding = undefined
        throw err
      },
    ))
  }

  async open(index: number, events: TransportEvents): Promise<Channel> {
    const node = await this.nodePath()
    const { file } = await workerBundle()
    const child = spawn(node, ['--enable-source-maps', ...this.nodeArgs, file], {
      // stdin: frames in; stdout and stderr: what the worker prints outside the frames; descriptor 3: frames out.
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      env: this.env ? { ...process.env, ...this.env } : process.env,
      windowsHide: true,
      // A session of its own, out of the caller's process group: a terminal's Ctrl-C (SIGINT to the whole
      // foreground group) reaches the caller alone, which cancels its calls so that their finally blocks run.
      // The worker still goes with the caller: it exits when its stdin ends, and onExit kills it.
      detached: process.platform !== 'win32',
    })
    if (this.children.size === 0) process.on('exit', this.onExit)
    this.children.add(child)
    const where = `local/${index}`
    const tail = new StderrTail(STDERR_TAIL)
    const frames = child.stdio[3] as Readable
    frames.on('data', (chunk: Buffer) => events.data(chunk))
    // Closing the worker's descriptor 3 is its own doing; the close of the process says why.
    frames.on('error', () => {})
    // One line buffer each, so that a line on one is not cut by a line on the other.
    const outputs = [child.stdout!, child.stderr!].map((stream) => {
      const lines = new StderrLines((t) => events.stderr(t))
      stream.setEncoding('utf8')
      stream.on('data', (t: string) => {
        tail.push(t)
        lines.push(t)
      })
      return lines
    })
    // EPIPE on a dead worker's stdin is reported by 'close' below, with more to say.
    child.stdin!.on('error', () => {})
    let spawnError: Error | undefined
    child.on('error', (err) => (spawnError = err))
    child.on('close', (code, signal) => {
      for (const lines of outputs) lines.flush()
      this.children.delete(child)
      if (this.children.size === 0) process.off('exit', this.onExit)
      const how = spawnError ? `could not start: ${spawnError.message}` : signal ? `was killed by ${signal}` : `exited with code ${code}`
      const last = tail.describe()
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
        for (const s of child.stdio) (s as unknown as { unref?(): void } | null)?.unref?.()
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
