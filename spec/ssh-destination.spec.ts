import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { thrown } from './helpers.ts'
import { parseDestination } from '../lib/ssh/destination.ts'

/** Destinations OpenSSH (or its ProxyJump) accepts, and how they split. */
const good: [string, ReturnType<typeof parseDestination>][] = [
  ['web', { host: 'web' }],
  ['web.example.com', { host: 'web.example.com' }],
  ['alice@web', { user: 'alice', host: 'web' }],
  ['alice@web:2222', { user: 'alice', host: 'web', port: 2222 }],
  ['10.0.0.1:22', { host: '10.0.0.1', port: 22 }],
  ['a@b@web', { user: 'a@b', host: 'web' }],
  ['ssh://web', { host: 'web' }],
  ['ssh://web/', { host: 'web' }],
  ['SSH://web', { host: 'web' }],
  ['ssh://alice@web:2222', { user: 'alice', host: 'web', port: 2222 }],
  ['ssh://al%40ice@web', { user: 'al@ice', host: 'web' }],
  ['ssh://[::1]:2222', { host: '::1', port: 2222 }],
  ['ssh://[::1]', { host: '::1' }],
  ['user@[::1]', { user: 'user', host: '::1' }],
  ['[fe80::1%eth0]:22', { host: 'fe80::1%eth0', port: 22 }],
  ['::1', { host: '::1' }],
  ['alice@2001:db8::7', { user: 'alice', host: '2001:db8::7' }],
  ['web:065535', { host: 'web', port: 65535 }],
]

/** Destinations refused, with the whole message. */
const bad: [string, string][] = [
  ['', 'invalid SSH destination "": it is empty'],
  ['ssh://web/home/alice', 'invalid SSH destination "ssh://web/home/alice": an ssh:// URI may not have a path ("/home/alice")'],
  ['ssh://web?x=1', 'invalid SSH destination "ssh://web?x=1": an ssh:// URI may not have a query or fragment ("?x=1")'],
  ['ssh://web#frag', 'invalid SSH destination "ssh://web#frag": an ssh:// URI may not have a query or fragment ("#frag")'],
  ['web:0', 'invalid SSH destination "web:0": the port must be an integer from 1 to 65535, got "0"'],
  ['web:65536', 'invalid SSH destination "web:65536": the port must be an integer from 1 to 65535, got "65536"'],
  ['web:22.5', 'invalid SSH destination "web:22.5": the port must be an integer from 1 to 65535, got "22.5"'],
  ['web:ssh', 'invalid SSH destination "web:ssh": the port must be an integer from 1 to 65535, got "ssh"'],
  ['ssh://web:', 'invalid SSH destination "ssh://web:": the port must be an integer from 1 to 65535, got ""'],
  ['ssh://[::1]:-1', 'invalid SSH destination "ssh://[::1]:-1": the port must be an integer from 1 to 65535, got "-1"'],
  ['@web', 'invalid SSH destination "@web": the user before "@" is empty'],
  ['ssh://@web', 'invalid SSH destination "ssh://@web": the user before "@" is empty'],
  ['alice@', 'invalid SSH destination "alice@": the host is empty'],
  ['ssh://', 'invalid SSH destination "ssh://": the host is empty'],
  ['we b', 'invalid SSH destination "we b": it contains whitespace or a control character at index 2'],
  ['web\n', 'invalid SSH destination "web\\n": it contains whitespace or a control character at index 3'],
  ['\tweb', 'invalid SSH destination "\\tweb": it contains whitespace or a control character at index 0'],
  ['web\u0000x', 'invalid SSH destination "web\\u0000x": it contains whitespace or a control character at index 3'],
  ['-oProxyCommand=touch', 'invalid SSH destination "-oProxyCommand=touch": it starts with "-", which ssh would take as an option'],
  ['alice@-oProxyCommand=x', 'invalid SSH destination "alice@-oProxyCommand=x": the host starts with "-", which ssh would take as an option'],
  ['-alice@web', 'invalid SSH destination "-alice@web": it starts with "-", which ssh would take as an option'],
  ['ssh://-alice@web', 'invalid SSH destination "ssh://-alice@web": the user starts with "-", which ssh would take as an option'],
  ['[::1', 'invalid SSH destination "[::1": "[" has no matching "]"'],
  ['::1]', 'invalid SSH destination "::1]": "]" has no matching "["'],
  ['alice@fe80[::1]', 'invalid SSH destination "alice@fe80[::1]": brackets must enclose the whole address: [address] or [address]:port'],
  ['[[::1]]', 'invalid SSH destination "[[::1]]": its brackets are unbalanced or nested'],
  ['[::1]2222', 'invalid SSH destination "[::1]2222": expected ":port" after "]", got "2222"'],
  ['[]:22', 'invalid SSH destination "[]:22": the brackets hold no address'],
  ['http://web', 'invalid SSH destination "http://web": only ssh:// URIs are destinations'],
  ['ssh://alice;fingerprint=SHA256-abc@web', 'invalid SSH destination "ssh://alice;fingerprint=SHA256-abc@web": ssh:// connection parameters (";...") are not supported'],
  ['ssh://al%zzice@web', 'invalid SSH destination "ssh://al%zzice@web": the user "al%zzice" has a bad %-escape'],
]

const parse = suite('parseDestination')

for (const [input, want] of good) {
  parse(`splits ${JSON.stringify(input)}`, () => {
    assert.equal(parseDestination(input), want)
  })
}

for (const [input, message] of bad) {
  parse(`refuses ${JSON.stringify(input)} saying what is wrong`, () => {
    const err = thrown(() => parseDestination(input))
    assert.instance(err, TypeError)
    assert.match(err.message, message)
    assert.is(err.message, message)
  })
}

parse('refuses a non-string saying what arrived', () => {
  const err = thrown(() => parseDestination(42 as unknown as string))
  assert.instance(err, TypeError)
  assert.match(err.message, 'expected an SSH destination string, got 42')
})

parse.run()
