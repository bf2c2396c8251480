import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { tempDir, thrown } from './helpers.ts'
import { FACTS_MARK, launchCommand, REMOTE_COMMAND, scriptLine, shq, workerCommand, type HostFacts } from '../lib/ssh/bootstrap.ts'
import { LaunchReport, LaunchWatch } from '../lib/ssh/launch.ts'

// The worker's command, run here as a host would run it: the login shell
// (`$SHELL -c`: sh, bash, dash, csh, tcsh or fish, those installed) runs
// REMOTE_COMMAND, whose sh reads the script from the first line of its
// stdin; a stand-in for node reports the words and the environment it was
// started with.

/** Strings a shell would do something with if they reached it unquoted. */
function hostile(marker: string): string[] {
  return [
    `'; touch ${marker} #`,
    `$(touch ${marker})`,
    `\`touch ${marker}\``,
    `x\ntouch ${marker}\n`,
    `"; touch ${marker}; echo "`,
    `two  spaces and a tab\there`,
    `\\'\\"$HOME*?[a]{b,c}~!`,
  ]
}

/** A fake node at `<dir>/<name>` that prints its arguments and $FARPIPE_V, NUL-separated, where a worker's frames go (descriptor 3). */
function fakeNode(dir: string, name = 'node'): string {
  mkdirSync(dir, { recursive: true })
  const file = path.join(dir, name)
  writeFileSync(file, `#!/bin/sh\nprintf '%s\\0' "$@" "$FARPIPE_V" >&3\n`)
  chmodSync(file, 0o755)
  return file
}

function facts(node: string, workerFile: string): HostFacts {
  return { node, version: 'v20.0.0', platform: 'linux', arch: 'x64', cores: 1, cacheDir: path.dirname(workerFile), workerFile }
}

const SHELLS = ['sh', 'bash', 'dash', 'csh', 'tcsh', 'fish']
const shells = SHELLS.filter((s) => spawnSync(s, ['-c', 'true'], { stdio: 'ignore' }).status === 0)
const absent = SHELLS.filter((s) => !shells.includes(s))
if (absent.length > 0) console.log(`not installed, skipped as login shells: ${absent.join(', ')}`)

/**
 * Runs a script as a host would, the login shell `shell` running
 * REMOTE_COMMAND (`shell -c`) with the script line and then `rest` on its
 * stdin, in an empty directory that must stay empty (a stray `touch` of a
 * relative path would land there); returns its stdout.
 */
function runScript(shell: string, script: string, rest = ''): string {
  return runScriptFully(shell, script, rest).stdout
}

/** runScript, giving its stderr too. */
function runScriptFully(shell: string, script: string, rest = ''): { stdout: string; stderr: string } {
  const cwd = tempDir()
  const r = spawnSync(shell, ['-c', REMOTE_COMMAND], { encoding: 'utf8', cwd, input: Buffer.concat([scriptLine(script), Buffer.from(rest)]) })
  assert.is(r.status, 0, `${shell} -c ${REMOTE_COMMAND} < ${script}: ${r.stderr}`)
  assert.equal(readdirSync(cwd), [], `${shell} ran ${script} and wrote into its working directory`)
  return { stdout: r.stdout, stderr: r.stderr }
}

/** Runs a script that starts a fake node (see runScript); returns the NUL-separated words it printed. */
function runAs(shell: string, script: string): string[] {
  return runScript(shell, script).split('\0').slice(0, -1)
}

const command = suite('workerCommand')

for (const shell of shells) {
  command(`keeps runs of spaces in the node path, the worker file and env values under ${shell} (regression: collapsed to one)`, () => {
    const node = fakeNode(path.join(tempDir(), 'a  b'))
    const workerFile = path.join(tempDir(), 'cache  dir', 'worker-x.mjs')
    const words = runAs(shell, workerCommand(facts(node, workerFile), { FARPIPE_V: 'two  spaces' }, ['--max-old-space-size=64']))
    assert.equal(words, ['--enable-source-maps', '--max-old-space-size=64', workerFile, 'two  spaces'])
  })

  command(`passes hostile strings through node path, worker file, env values and node arguments as data under ${shell}`, () => {
    const marker = path.join(tempDir(), 'pwned')
    for (const bad of hostile(marker)) {
      const dir = path.join(tempDir(), bad.replace(/\//g, '_'))
      const node = fakeNode(dir)
      const workerFile = path.join(dir, 'worker.mjs')
      const words = runAs(shell, workerCommand(facts(node, workerFile), { FARPIPE_V: bad }, [bad]))
      assert.equal(words, ['--enable-source-maps', bad, workerFile, bad], JSON.stringify(bad))
      assert.not.ok(existsSync(marker), `the shell ran something in ${JSON.stringify(bad)}`)
    }
  })
}

for (const shell of shells) {
  command(`a node path with = in it is run as node, with env set, under ${shell} (regression: env took it for an assignment)`, () => {
    const node = fakeNode(path.join(tempDir(), 'x=y'))
    const words = runAs(shell, workerCommand(facts(node, '/c/worker.mjs'), { FARPIPE_V: 'a=b', OTHER: '1' }, []))
    assert.equal(words, ['--enable-source-maps', '/c/worker.mjs', 'a=b'])
  })

  command(`the script line runs under ${shell} as the login shell, and what follows it on stdin is left for the command`, () => {
    const marker = path.join(tempDir(), 'pwned')
    for (const value of [...hostile(marker), 'two\nlines\n', '!!', "it's", '\\']) {
      assert.is(runScript(shell, `printf '%s|' ${shq(value)}; cat`, 'the rest\nof stdin'), `${value}|the rest\nof stdin`, JSON.stringify(value))
    }
    assert.not.ok(existsSync(marker), 'the shell ran something it was given as data')
  })
}

for (const shell of shells) {
  command(`the worker's frames go to the channel's stdout on descriptor 3, and its descriptor 1 to the channel's stderr, under ${shell}`, () => {
    const dir = tempDir()
    const node = path.join(dir, 'node')
    writeFileSync(node, `#!/bin/sh\nprintf frames >&3; printf one; printf two >&2\n`, { mode: 0o755 })
    const r = runScriptFully(shell, workerCommand(facts(node, '/c/w.mjs'), {}, []))
    assert.equal(r, { stdout: 'frames', stderr: 'onetwo' })
  })
}

command('the command line the login shell reads holds nothing csh, tcsh or fish read differently from sh', () => {
  const inside = /^exec sh -c '([^']*)'$/.exec(REMOTE_COMMAND)?.[1]
  assert.ok(inside, REMOTE_COMMAND)
  assert.not.match(inside, /[\\\n!']/)
})

command('a script line is one line, whatever line breaks its quoted words hold', () => {
  const line = scriptLine(`printf '%s' ${shq('a\nb\n')}`).toString()
  assert.is(line.indexOf('\n'), line.length - 1)
})

command('refuses an environment variable name that is not a shell name, naming it', () => {
  const f = facts('/usr/bin/node', '/tmp/worker.mjs')
  for (const name of ['A-B', '1A', 'A B', 'A=B', '$(x)', '-i', '']) {
    const err = thrown(() => workerCommand(f, { [name]: 'v' }, []))
    assert.instance(err, TypeError)
    assert.match(err.message, `environment variable name ${JSON.stringify(name)} is not a valid name`)
  }
})

command('starts node without env when there is no environment to set', () => {
  assert.is(workerCommand(facts('/opt/node  20/bin/node', '/c/w.mjs'), {}, []), `exec 3>&1 1>&2; exec '/opt/node  20/bin/node' --enable-source-maps '/c/w.mjs'`)
})

command.run()

const quote = suite('shq')

quote('quotes so that sh reads back exactly the string', () => {
  const marker = path.join(tempDir(), 'pwned')
  for (const s of [...hostile(marker), '', "'", "''", 'a\u00e9\u4e2d']) {
    const r = spawnSync('sh', ['-c', `printf '%s' ${shq(s)}`], { encoding: 'utf8' })
    assert.is(r.stdout, s)
  }
  assert.not.ok(existsSync(marker))
})

quote.run()

const launch = suite('the launcher (the probe and the first worker in one command)')

const factsLine = (facts: Record<string, unknown>) => `${FACTS_MARK}${JSON.stringify(facts)}\n`
const ready = { node: 'v20.20.0', platform: 'linux', arch: 'x64', cores: 4, cacheDir: '/home/u/.cache/farpipe', worker: true }
const readyFacts = ready

launch('reads the facts line however the stderr is cut, and keeps the text around it for the worker', () => {
  const text = 'motd: welcome\n' + factsLine(ready) + 'worker warning\n'
  for (let cut = 1; cut < text.length; cut += 7) {
    const r = new LaunchReport({ name: 'h' }, 'f'.repeat(64))
    const first = r.feed(text.slice(0, cut))
    const got = first ?? r.feed(text.slice(cut))
    assert.ok(got, `cut at ${cut}`)
    assert.ok(got.probe.ok && got.probe.worker)
    if (got.probe.ok) assert.is(got.probe.facts.workerFile, `/home/u/.cache/farpipe/worker-${'f'.repeat(64)}.mjs`)
    assert.match(got.rest, 'motd: welcome')
  }
})

launch('a host without the worker bundle, or with an old node, is reported as not ready', () => {
  const missing = new LaunchReport({ name: 'h' }, 'a'.repeat(64)).feed(factsLine({ ...ready, worker: false }))
  assert.ok(missing?.probe.ok && !missing.probe.worker)
  const old = new LaunchReport({ name: 'h' }, 'a'.repeat(64)).feed(factsLine({ ...ready, node: 'v16.20.0' }))
  assert.ok(old && !old.probe.ok)
  if (old && !old.probe.ok) assert.match(old.probe.error.message, 'node on h is v16.20.0, farpipe needs 20 or later')
})

launch('stderr noise without the facts line is not kept without bound', () => {
  const r = new LaunchReport({ name: 'h' }, 'a'.repeat(64))
  for (let i = 0; i < 200; i++) assert.is(r.feed('x'.repeat(1000)), undefined)
  assert.ok((r as unknown as { text: string }).text.length <= 66_000)
  assert.ok(r.feed(factsLine(ready))?.probe.ok)
})

launch('a facts line that never ends is refused once it passes its bound, and is not kept without bound (regression: grew forever)', () => {
  const r = new LaunchReport({ name: 'h' }, 'a'.repeat(64))
  let got = r.feed(`motd\n${FACTS_MARK}{"node":"v20.0.0","padding":"`)
  for (let i = 0; i < 200 && !got; i++) got = r.feed('x'.repeat(1000))
  assert.ok((r as unknown as { text: string }).text.length <= 70_000, 'kept at most the bound')
  assert.ok(got, 'refused')
  assert.ok(!got.probe.ok)
  if (!got.probe.ok) assert.match(got.probe.error.message, 'the launcher on h wrote a facts line of more than 65536 characters without its end')
  assert.is(got.rest, 'motd\n')
})

launch("the stderr of worker 0 kept until the pool opens it is bounded, and a launcher that is not worker 0 keeps none", () => {
  const hash = 'd'.repeat(64)
  const running = { stderr: [] as string[] }
  const w = new LaunchWatch({ name: 'h' }, hash, running, () => {})
  w.stderr(factsLine(readyFacts))
  for (let i = 0; i < 200; i++) w.stderr(`${i} `.padEnd(1000, 'x'))
  const kept = running.stderr.join('')
  assert.ok(kept.length <= 66_000, `kept ${kept.length} characters`)
  assert.ok(kept.endsWith(`199 `.padEnd(1000, 'x')), 'the newest text is kept')
  const notReady = { stderr: [] as string[] }
  const n = new LaunchWatch({ name: 'h' }, hash, notReady, () => {})
  n.stderr(factsLine({ ...readyFacts, worker: false }) + 'after\n')
  n.stderr('more\n')
  assert.equal(notReady.stderr, [])
})

launch('its command quotes every word, and ends with the script, the cache directory and the hash', () => {
  const cmd = launchCommand({ node: '/opt/my node/bin/node', cacheDir: "~/it's" }, 'b'.repeat(64), { A: 'x y' }, [])
  assert.ok(cmd.startsWith(`exec 3>&1 1>&2; export A='x y'; exec '/opt/my node/bin/node' --enable-source-maps -e '`), cmd.slice(0, 80))
  assert.ok(cmd.endsWith(` ${shq("~/it's")} ${shq('b'.repeat(64))}`))
})

launch('the watch settles once: worker 0 running (the transport\'s own record, with the facts), the report of a host not ready, or nothing when the launcher ends silent', async () => {
  const hash = 'c'.repeat(64)
  const early = () => ({ stderr: [] as string[], id: 1 })
  let stops = 0
  const record = early()
  const ready = new LaunchWatch({ name: 'h' }, hash, record, () => stops++)
  ready.stderr('login noise\n' + factsLine({ ...readyFacts }).slice(0, 10))
  ready.stderr(factsLine({ ...readyFacts }).slice(10) + 'node warning\n')
  ready.stderr('later stderr\n')
  ready.closed()
  const r = await ready.outcome
  assert.ok(r.running)
  // The record itself (regression: a copy, so an exit the transport wrote into it later was lost).
  assert.is(r.running, record)
  assert.equal(r.running.stderr, ['login noise\nnode warning\n', 'later stderr\n'])
  const notReady = await (() => {
    const w = new LaunchWatch({ name: 'h' }, hash, early(), () => stops++)
    w.stderr(factsLine({ ...readyFacts, worker: false }))
    return w.outcome
  })()
  assert.ok(!notReady.running && notReady.probe?.ok)
  const silent = new LaunchWatch({ name: 'h' }, hash, early(), () => stops++)
  silent.closed()
  assert.equal(await silent.outcome, {})
  assert.is(stops, 0, 'none was given up on by its timer')
})

launch.run()
