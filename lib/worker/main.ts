/**
 * The worker process's entry point: frames in on descriptor 0 and out on
 * descriptor 3, the runtime in between. Bundled into one file
 * (`dist/worker.mjs`) and started with `node` on the host.
 *
 * Descriptor 3 carries frames only, and user code has no name for it: its
 * `console.log`, `console.error` and writes to `process.stdout` and
 * `process.stderr` become log frames, which the caller prints prefixed with
 * where they ran and tagged with their call. What bypasses those (a logger
 * writing with `fs.writeSync(1, …)`, a child process with inherited stdio)
 * lands on the real descriptors 1 and 2, which the transport reads apart
 * from the frames and passes on as the worker's stderr, as are Node's own
 * last words (a fatal error). Transports set descriptor 3 up: local workers
 * get a fourth stdio pipe; on SSH and command hosts the worker's script
 * does `exec 3>&1 1>&2`, so frames go to the channel's stdout and
 * descriptor 1 to its stderr. Node marks descriptor 3 close-on-exec at
 * startup, so the worker's child processes never hold it.
 *
 * @module
 */
import { Console } from 'node:console'
import * as fs from 'node:fs'
import * as net from 'node:net'
import { Readable, Writable } from 'node:stream'
import type { Channel } from '../link.ts'
import { WorkerRuntime } from './runtime.ts'
import { listenForResume } from './resume-socket.ts'

/** The descriptor frames go out on; see the module's comment. */
const FRAMES_OUT = 3

/** Opens descriptor 3 for our frames; without one (not started by a transport), says so and exits. */
function frameOutput(): NodeJS.WritableStream & { end(cb?: () => void): void } {
  try {
    fs.fstatSync(FRAMES_OUT)
  } catch {
    process.stderr.write(`farpipe worker: descriptor ${FRAMES_OUT}, where its frames go, is not open; a farpipe transport starts workers with it\n`)
    process.exit(2)
  }
  try {
    return new net.Socket({ fd: FRAMES_OUT, readable: false, writable: true })
  } catch {
    // Not a pipe or socket (a file, say): write to it as a file.
    return fs.createWriteStream('', { fd: FRAMES_OUT })
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
/** The frame channel failed: what is written to it goes nowhere. */
let outFailed = false

const channel: Channel = {
  write: (chunk) => {
    if (!outFailed) out.write(chunk)
  },
  writev: (chunks) => {
    if (outFailed) return
    const o = out as NodeJS.WritableStream & { cork?(): void; uncork?(): void }
    o.cork?.()
    for (const c of chunks) out.write(c)
    o.uncork?.()
  },
  end: () => out.end(),
  // A bad frame ends the worker; a resume that replaced this channel (a connection half dead) only closes it.
  destroy: () => {
    if (rt.current(channel)) process.exit(1)
    outFailed = true
    ;(inp as Readable).destroy()
    ;(out as Writable).destroy()
  },
}
const rt = new WorkerRuntime(channel)
/** How the channel the session runs on now is ended when the worker exits (stdio, or a resume socket). */
let endCurrent = (done: () => void) => (outFailed ? process.exit(1) : out.end(done))
rt.listen = (cacheDir) =>
  listenForResume(rt, cacheDir, (_channel, socket) => {
    endCurrent = (done) => socket.end(done)
  })

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
  endCurrent(() => process.exit(code))
  setTimeout(() => process.exit(code), 1000).unref()
}

rt.onExit(() => {
  rt.flush()
  exit(0)
})
inp.on('data', (chunk: Buffer) => {
  if (rt.current(channel)) rt.data(chunk)
})
inp.on('end', () => {
  if (!rt.current(channel)) return
  rt.close()
  // The caller is gone or closing: give running calls a moment to clean up, then go regardless
  // (unless the session waits for its caller to come back: it ends at its window).
  if (!rt.detached) setTimeout(() => exit(0), 3000).unref()
})
inp.on('error', (err: Error) => {
  if (rt.current(channel)) rt.close(err)
})
out.on('error', (err: Error) => {
  // The caller is gone (EPIPE): nothing more can reach it, but running calls
  // still stop and run their cleanup (a `finally`, a source's `cancel()`)
  // before the process goes, as when its input ends.
  if (outFailed) return
  outFailed = true
  if (!rt.current(channel)) return
  rt.close(err)
  if (!rt.detached) setTimeout(() => process.exit(1), 3000).unref()
})
