import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { StderrLines, StderrTail } from '../lib/transports/transport.ts'

const lines = suite('StderrLines')

lines('passes on whole lines however the text is cut, holding the rest until its newline', () => {
  const text = 'one\ntwo two\n\nthree\nfour'
  for (let cut = 1; cut < text.length; cut++) {
    const out: string[] = []
    const l = new StderrLines((t) => void out.push(t))
    l.push(text.slice(0, cut))
    l.push(text.slice(cut))
    assert.ok(out.every((t) => t.endsWith('\n')), `cut at ${cut}: ${JSON.stringify(out)}`)
    assert.is(out.join(''), 'one\ntwo two\n\nthree\n')
    l.flush()
    assert.is(out.join(''), text, 'flush() passes on the line without its newline')
  }
})

lines('passes on a line longer than its bound in pieces, so nothing is held without bound', () => {
  const out: string[] = []
  const l = new StderrLines((t) => void out.push(t), 100)
  for (let i = 0; i < 50; i++) l.push('x'.repeat(10))
  assert.is(out.join('').length, 500)
  assert.ok(out.every((t) => t.length <= 110))
  l.push('y'.repeat(150) + '\n' + 'z'.repeat(120))
  assert.is(out.join(''), 'x'.repeat(500) + 'y'.repeat(150) + '\n' + 'z'.repeat(120))
})

lines('flush() with nothing held passes on nothing', () => {
  const out: string[] = []
  const l = new StderrLines((t) => void out.push(t))
  l.push('a\n')
  l.flush()
  assert.equal(out, ['a\n'])
})

lines.run()

const tail = suite('StderrTail')

tail('keeps the last lines and describes the last five', () => {
  const t = new StderrTail(3)
  t.push('a\nb\n')
  t.push('c\nd\n')
  assert.is(t.text, 'b\nc\nd')
  assert.is(t.describe(), '; its stderr ended with: b | c | d')
  assert.is(new StderrTail().describe(), '')
})

tail.run()
