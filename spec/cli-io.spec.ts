// The command's printing (lib/cli/io.ts, lib/cli/report.ts), on a fake
// terminal: what reaches stderr, in which order, around the progress line.
import { Writable } from 'node:stream'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import './helpers.ts'
import { UsageError } from '../lib/cli/args.ts'
import { Stderr, type Counts } from '../lib/cli/io.ts'
import { EXIT, report } from '../lib/cli/report.ts'
import { RemoteError, TransportError } from '../lib/errors.ts'

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
