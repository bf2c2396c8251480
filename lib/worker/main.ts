/**
 * The worker process's entry point: frames on stdin and stdout, the runtime
 * in between. Bundled into one file (`dist/worker.mjs`) and started with
 * `node` on the host.
 *
 * stdout carries frames only. User code's `console.log`, `console.error`
 * and writes to `process.stdout`/`process.stderr` become log frames, which
 * the caller prints prefixed with where they ran; so nothing user code
 * prints can corrupt the frame channel. Node's own last words (a fatal
 * error) still reach the real stderr, which the caller also reads.
 *
 * @module
 */
import { Console } from 'node:console'
import * as fs from 'node:fs'
import * as net from 'node:net'
import { Readable, Writable } from 'node:stream'
import type { Channel } from '../link.ts'
import { WorkerRuntime } from './runtime.ts'

/** Opens fd 1 for our frames before anything else can write to it. */
function frameOutput(): NodeJS.WritableStream & { end(cb?: () => void): void } {
  try {
    return new net.Socket({ fd: 1, readable: false, writable: true })
  } catch {
    // Not a pipe or socket (a file, say): write to it as a file.
    return fs.createWriteStream('', { fd: 1 })
  }
}

function frameInput(): NodeJS.ReadableStream {
  try {
    return new net.Socket({ fd: 0, readable: true, writable: false })
  } catch {
    return fs.createReadStream('', { fd: 0 })
  }
}

const out = frameOutput()
const inp = frameInput()
let exiting = false

const channel: Channel = {
  write: (chunk) => void out.write(chunk),
  writev: (chunks) => {
    const o = out as NodeJS.WritableStream & { cork?(): void; uncork?(): void }
    o.cork?.()
    for (const c of chunks) out.write(c)
    o.uncork?.()
  },
  end: () => out.end(),
  destroy: () => process.exit(1),
}
const rt = new WorkerRuntime(channel)

/** A stream that turns writes into log frames on descriptor `fd`. */
function logStream(fd: number): Writable & { isTTY: false; fd: number } {
  const w = new Writable({
    decodeStrings: false,
    write(chunk: Buffer | string, _enc, cb) {
      rt.log(fd, typeof chunk === 'string' ? chunk : chunk.toString('utf8'))
      cb()
    },
  }) as Writable & { isTTY: false; fd: number }
  w.isTTY = false
  w.fd = fd
  return w
}

const fakeOut = logStream(1)
const fakeErr = logStream(2)
Object.defineProperty(process, 'stdout', { value: fakeOut, configurable: true, enumerable: false })
Object.defineProperty(process, 'stderr', { value: fakeErr, configurable: true, enumerable: false })
Object.defineProperty(process, 'stdin', { value: Readable.from([]), configurable: true, enumerable: false })
globalThis.console = new Console({ stdout: fakeOut, stderr: fakeErr })

process.on('unhandledRejection', (reason) => {
  // One call's forgotten promise must not take down every call on this worker.
  const text = reason instanceof Error ? reason.stack ?? String(reason) : String(reason)
  rt.log(2, `farpipe worker: unhandled rejection: ${text}\n`)
})
process.on('uncaughtException', (err) => {
  rt.log(2, `farpipe worker: uncaught exception, exiting: ${err?.stack ?? err}\n`)
  rt.flush()
  exit(1)
})

function exit(code: number): void {
  if (exiting) return
  exiting = true
  out.end(() => process.exit(code))
  setTimeout(() => process.exit(code), 1000).unref()
}

rt.onExit(() => {
  rt.flush()
  exit(0)
})
inp.on('data', (chunk: Buffer) => rt.data(chunk))
inp.on('end', () => {
  rt.close()
  // The caller is gone or closing: give running calls a moment to clean up, then go regardless.
  setTimeout(() => exit(0), 3000).unref()
})
inp.on('error', (err: Error) => rt.close(err))
out.on('error', () => exit(1))
