// The command's ends of the pipe (lib/cli/io.ts) and its messages
// (lib/cli/report.ts), without a process: what reaches a fake terminal's
// stderr around the progress line, a stderr that is gone, and stdin as lines.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import * as path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { rejection, tempDir } from './helpers.ts'
import { UsageError } from '../lib/cli/args.ts'
import { encodeItem, FormatError } from '../lib/cli/format.ts'
import { feed, Stderr, StdinError, type Counts } from '../lib/cli/io.ts'
import { EXIT, messageOf, report } from '../lib/cli/report.ts'
import { HostKeyError, RemoteError, TransportError } from '../lib/errors.ts'
import { HostVerifier } from '../lib/ssh/host-verifier.ts'

const CLEAR = '\r\x1b[K'

/** A terminal (or, with `isTTY` false, a pipe) that keeps what is written to it. */
class FakeTerminal extends Writable {
  text = ''

  constructor(readonly isTTY = true) {
    super()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString()
    done()
  }
}

const counts = (): Counts => ({ itemsIn: 0, bytesIn: 0, itemsOut: 3, bytesOut: 6 })
const remoteError = () =>
  new RemoteError('boom', { errorName: 'RangeError', remoteStack: 'RangeError: boom\n    at f (tasks.ts:3:9)', index: 3, host: 'local', worker: 0 })

/** The text of `out` just before `what`, which must be there. */
function before(out: string, what: string, length: number): string {
  const at = out.indexOf(what)
  assert.ok(at >= 0, `${JSON.stringify(what)} was printed`)
  return out.slice(Math.max(0, at - length), at)
}

const p = suite('cli printing on a terminal')

p('an error is printed on a line of its own: the progress line is cleared first', () => {
  for (const err of [remoteError(), new UsageError('bad option'), new TransportError('host gpu-1: connection refused'), new Error('odd')]) {
    const term = new FakeTerminal()
    const stderr = new Stderr(term)
    stderr.showProgress(counts()).draw()
    const status = report(err, stderr)
    stderr.hideProgress()
    assert.ok(status === EXIT.failed || status === EXIT.usage)
    assert.match(term.text, 'out 3 items')
    assert.is(before(term.text, 'farpipe: ', CLEAR.length), CLEAR, `${err.name}: ${JSON.stringify(term.text)}`)
  }
})

p('a remote stack and a remote log line start on a line of their own too', () => {
  const term = new FakeTerminal()
  const stderr = new Stderr(term)
  const progress = stderr.showProgress(counts())
  progress.draw()
  stderr.print('[local/0] hello\n')
  progress.draw()
  report(remoteError(), stderr)
  stderr.hideProgress()
  assert.is(before(term.text, '[local/0] hello', CLEAR.length), CLEAR, JSON.stringify(term.text))
  assert.is(before(term.text, 'RangeError: boom', 1), '\n', JSON.stringify(term.text))
})

p('the progress line is drawn only on a terminal', () => {
  const pipe = new FakeTerminal(false)
  const stderr = new Stderr(pipe)
  stderr.showProgress(counts())
  report(remoteError(), stderr)
  stderr.hideProgress()
  assert.ok(pipe.text.startsWith('farpipe: the remote function threw: boom\n'), JSON.stringify(pipe.text))
})

p.run()

/** A stream whose writes fail with `code`, as a pipe does once its reader has gone (EPIPE). */
class Broken extends Writable {
  constructor(readonly code: string) {
    super()
  }
  override _write(_chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    done(Object.assign(new Error(`write ${this.code}`), { code: this.code }))
  }
}

const g = suite('cli stderr that is gone')

g('a reader that went away (EPIPE) is noted, not thrown: later writes are dropped', async () => {
  const stream = new Broken('EPIPE')
  const stderr = new Stderr(stream)
  stderr.complain('first')
  await stderr.closed
  assert.ok(stderr.gone)
  assert.is(stderr.failure, undefined)
  stderr.complain('second')
  report(remoteError(), stderr)
  stderr.showProgress(counts()).draw()
  stderr.hideProgress()
})

g('another failure (EIO) is kept as the failure', async () => {
  const stderr = new Stderr(new Broken('EIO'))
  stderr.print('x\n')
  await stderr.closed
  assert.is((stderr.failure as NodeJS.ErrnoException | undefined)?.code, 'EIO')
})

g.run()

/** Feeds `chunks` (as stdin) into a writable that keeps what it is given. */
async function fed(chunks: Iterable<Buffer> | Readable, options?: { maxLine?: number }): Promise<unknown[]> {
  const got: unknown[] = []
  const stdin = chunks instanceof Readable ? chunks : Readable.from(chunks)
  await feed(stdin, new WritableStream({ write: (v) => void got.push(v) }), 'json', counts(), options)
  return got
}

const f = suite('cli stdin')

f('a character split across chunks arrives whole', async () => {
  const line = Buffer.from(`${JSON.stringify('é€😀'.repeat(4))}\n`)
  // Cut at every byte: each multi-byte character is split somewhere.
  const got = await fed([...line].map((b) => Buffer.from([b])))
  assert.equal(got, ['é€😀'.repeat(4)])
})

f('lines split across chunks, and chunks holding several lines, give one item a line', async () => {
  const got = await fed([Buffer.from('1\n[2,'), Buffer.from('3]'), Buffer.from('\n\n4\n"fi'), Buffer.from('ve"')])
  assert.equal(got, [1, [2, 3], 4, 'five'])
})

f('a line longer than an item can be is refused with its number, before it is all held', async () => {
  const chunk = Buffer.alloc(1024, 0x31) // '1' × 1024, no newline
  let pulled = 0
  // A megabyte in one line; it reads ahead at most a chunk or so.
  const long = new Readable({
    highWaterMark: 1024,
    read() {
      this.push(++pulled > 1024 ? null : chunk)
    },
  })
  const err = await rejection(fed(long, { maxLine: 10_000 }))
  assert.instance(err, FormatError)
  assert.match(err.message, 'stdin line 1 is longer than 10000 characters')
  assert.ok(pulled < 16, `read ${pulled} KiB of a line over its limit of 10000 characters`)
})

f('a stdin that fails rejects with a StdinError naming the cause', async () => {
  const broken = new Readable({
    read() {
      this.destroy(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))
    },
  })
  const err = await rejection(fed(broken))
  assert.instance(err, StdinError)
  assert.is(err.message, 'reading stdin failed: read ECONNRESET')
})

f('a writable that fails (the call ended) is not taken for a failure of stdin', async () => {
  const stdin = Readable.from([Buffer.from('1\n2\n')])
  const writable = new WritableStream({ write: () => Promise.reject(new Error('the call failed')) })
  const err = await rejection(feed(stdin, writable, 'json', counts()))
  assert.not.instance(err, StdinError)
  assert.not.instance(err, FormatError)
})

f.run()

const k = suite('cli host key messages')

/** The HostKeyError the library makes for a key no known_hosts file holds (a real key, from ssh-keygen). */
function unknownKeyError(): HostKeyError {
  const file = path.join(tempDir('farpipe-cli-key-'), 'host')
  execFileSync('ssh-keygen', ['-q', '-N', '', '-t', 'ed25519', '-f', file])
  const blob = Buffer.from(readFileSync(`${file}.pub`, 'utf8').split(' ')[1]!, 'base64')
  const v = new HostVerifier({ label: 'alice@web:22', policy: 'strict', entries: [], host: 'web', port: 22, userFiles: ['/home/alice/.ssh/known_hosts'] })
  assert.not.ok(v.verify(blob))
  return v.error!
}

k("an unknown key's advice names --known-hosts accept-new for the command; the error keeps the library's for its users", () => {
  const err = unknownKeyError()
  assert.match(err.message, "pass knownHosts: 'accept-new'")
  const told = messageOf(err)
  assert.match(told, 'run again with --known-hosts accept-new')
  assert.not.match(told, 'knownHosts:')
  assert.match(told, err.fingerprint)
  // Also where another error quotes it: a pool whose hosts are all down lists why for each, with the errors as its cause.
  const list = `web: ${err.message}; db: ${err.message}`
  const down = messageOf(new TransportError(`no host of the pool is up (${list})`, { cause: new AggregateError([new TransportError('lost'), err], list) }))
  assert.is(down.split('run again with --known-hosts accept-new').length, 3, down)
  assert.not.match(down, 'knownHosts:')
  const term = new FakeTerminal(false)
  assert.is(report(err, new Stderr(term)), EXIT.usage)
  assert.match(term.text, /^farpipe: host key of alice@web:22 is not known: .*--known-hosts accept-new/)
})

k('other errors keep their messages', () => {
  assert.is(messageOf(new TransportError("host web: connection refused; pass knownHosts: 'accept-new'")), "host web: connection refused; pass knownHosts: 'accept-new'")
  assert.is(messageOf('plain'), 'plain')
})

k.run()

const e = suite('cli item encoding')

/** The FormatError message `encodeItem` throws for `value`. */
function refusal(value: unknown, format: 'json' | 'devalue' | 'bytes'): string {
  try {
    encodeItem(value, 'item 4', format)
  } catch (err) {
    assert.instance(err, FormatError)
    return (err as Error).message
  }
  throw new Error(`${format} took ${String(value)}`)
}

e('a stream nested anywhere in an item is refused in every format with its path, never an internal class name', () => {
  const body = new ReadableStream()
  for (const [value, path] of [
    [{ name: 'a', body }, 'item.body'],
    [[1, { parts: [body] }], 'item[1].parts[0]'],
    [new Map([['k', body]]), 'item.get("k")'],
    [{ 'odd key': body }, 'item["odd key"]'],
  ] as const) {
    for (const format of ['json', 'devalue', 'bytes'] as const) {
      const message = refusal(value, format)
      assert.match(message, `item 4 holds a ReadableStream at ${path}:`, format)
      assert.match(message, 'yield the stream itself or its chunks', format)
    }
  }
})

e('a value no line carries (an Error) is a FormatError in devalue too (regression: a crash with exit 1), and JSON does not send the user to devalue for it', () => {
  assert.match(refusal(new RangeError('x'), 'devalue'), 'item 4 cannot be written as a devalue line')
  const json = refusal(new RangeError('x'), 'json')
  assert.match(json, 'instance of RangeError')
  assert.not.match(json, '--out devalue (one')
  assert.match(refusal({ n: 1n }, 'json'), 'use --out devalue')
  assert.match(refusal(7, 'bytes'), 'item 4 is number, not bytes')
  assert.match(refusal(new Date(0), 'bytes'), 'item 4 is an instance of Date, not bytes')
})

e.run()
