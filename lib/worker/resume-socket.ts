/**
 * Where a caller reaches a worker again after its connection dropped: a
 * unix socket on the worker's host, in the 0700 bundle cache (mode 0600),
 * one per worker process. A connection to it must begin with a `resume`
 * frame carrying the session's token (lib/replay.ts); anything else, or a
 * wrong token, is refused and the session's caller is told in a log line.
 * The SSH transport reaches the socket with a stream-local forward; a
 * command host through a relay its command runs.
 *
 * @module
 */
import { randomBytes } from 'node:crypto'
import * as fs from 'node:fs'
import * as net from 'node:net'
import * as os from 'node:os'
import * as path from 'node:path'
import type { Channel } from '../link.ts'
import { FrameDecoder, Kind } from '../wire/frame.ts'
import { payloads, type ResumeRequest } from '../wire/payloads.ts'
import type { WorkerRuntime } from './runtime.ts'

/** A unix socket path longer than this does not fit (`sun_path` is 108 bytes on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = 100
/** A connection has this long to present its `resume` frame. */
const FIRST_FRAME_MS = 10_000

/** A private directory for the socket when the cache directory's path is too long for one: `$TMPDIR/farpipe-<uid>`, 0700, ours. */
function shortDir(): string {
  const dir = path.join(os.tmpdir(), `farpipe-${process.getuid?.() ?? 'user'}`)
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const st = fs.lstatSync(dir)
  if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o077) !== 0) {
    throw new Error(`${dir} is not a private directory of this user`)
  }
  return dir
}

/**
 * Listens on a new socket in `cacheDir` (or a short private directory) and
 * hands each connection that presents the session's token to `rt`.
 * `switched` is told the channel the session runs on from then on. Returns
 * the socket's path, or undefined (with the reason on stderr) when it cannot
 * listen: the session is then not resumable.
 */
export function listenForResume(rt: WorkerRuntime, cacheDir: string, switched: (channel: Channel, socket: net.Socket) => void): string | undefined {
  let file: string
  try {
    const name = `r-${process.pid}-${randomBytes(4).toString('hex')}.sock`
    file = path.join(cacheDir, name)
    if (file.length > MAX_SOCKET_PATH) file = path.join(shortDir(), name)
  } catch (err) {
    fs.writeSync(2, `farpipe worker: no socket to resume on: ${(err as Error).message}\n`)
    return undefined
  }
  const server = net.createServer((socket) => accept(rt, socket, switched))
  server.on('error', (err) => rt.log(2, `farpipe worker: the socket to resume on failed: ${err.message}\n`))
  // Created with mode 0600: no other user may even connect.
  const mask = process.umask(0o177)
  try {
    server.listen(file)
  } finally {
    process.umask(mask)
  }
  server.unref()
  process.on('exit', () => fs.rmSync(file, { force: true }))
  return file
}

/** One connection to the socket: its first frame must be `resume` with the session's token. */
function accept(rt: WorkerRuntime, socket: net.Socket, switched: (channel: Channel, socket: net.Socket) => void): void {
  socket.setNoDelay(true)
  const channel: Channel = {
    write: (chunk) => void socket.write(chunk),
    writev: (chunks) => {
      socket.cork()
      for (const c of chunks) socket.write(c)
      socket.uncork()
    },
    end: () => socket.end(),
    destroy: () => socket.destroy(),
  }
  const decoder = new FrameDecoder(64 * 1024)
  let state: 'first' | 'resumed' | 'refused' = 'first'
  const refuse = (why: string) => {
    state = 'refused'
    rt.log(2, `farpipe worker: refused a connection to its resume socket: ${why}\n`)
    socket.destroy()
  }
  const timer = setTimeout(() => refuse(`it sent no resume frame within ${FIRST_FRAME_MS} ms`), FIRST_FRAME_MS)
  timer.unref()
  socket.on('data', (chunk: Buffer) => {
    if (state === 'resumed') {
      if (rt.current(channel)) rt.data(chunk)
      return
    }
    if (state !== 'first') return
    let frames
    try {
      frames = decoder.decode(chunk)
    } catch (err) {
      return refuse((err as Error).message)
    }
    if (frames.length === 0) return
    clearTimeout(timer)
    const first = frames[0]!
    if (first.kind !== Kind.resume || frames.length > 1 || decoder.buffered > 0) return refuse('it did not begin with a resume frame alone')
    try {
      rt.resumeFrom(channel, payloads.readJson<ResumeRequest>(first.payload))
    } catch (err) {
      return refuse((err as Error).message)
    }
    state = 'resumed'
    switched(channel, socket)
  })
  const closed = (err?: Error) => {
    clearTimeout(timer)
    if (state === 'resumed' && rt.current(channel)) rt.close(err)
  }
  socket.on('error', (err) => closed(err))
  socket.on('close', () => closed())
}
