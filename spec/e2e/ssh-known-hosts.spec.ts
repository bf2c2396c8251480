// Host keys over a real sshd: the system-wide known_hosts files (given with
// the globalKnownHostsFile option, so nothing here reads the machine's
// /etc/ssh), and what 'accept-new' records when the connection re-keys.
import { readFileSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { suite } from 'uvu'
import * as assert from 'uvu/assert'
import { HostKeyError, pool } from 'farpipe'
import * as t from '../fixtures/tasks.ts'
import { rejection, tempDir } from '../helpers.ts'
import { noSshd, useClientHome, startSshd, type Sshd } from './sshd.ts'

if (!noSshd('ssh: known hosts')) {
  const sshd = await startSshd({ alias: 'farpipe-kh' })
  useClientHome(sshd.home)
  globalSuite(sshd)
  rekeySuite(sshd)
}

/** A file holding `lines`, in a fresh temp dir. */
function fileWith(lines: string[], name = 'ssh_known_hosts'): string {
  const file = path.join(tempDir(), name)
  writeFileSync(file, lines.map((l) => `${l}\n`).join(''))
  return file
}

const lineCount = (file: string) => readFileSync(file, 'utf8').split('\n').filter(Boolean).length

function globalSuite(sshd: Sshd): void {
  const g = suite('ssh: system-wide known_hosts')
  const userFile = path.join(sshd.home, '.ssh', 'known_hosts')

  g("a host trusted only in the system-wide file connects under 'strict' (regression: the file was never read)", async () => {
    const other = await startSshd({ alias: 'farpipe-kh-global', home: sshd.home, trustHostKey: false })
    try {
      const global = fileWith([`[127.0.0.1]:${other.port} ${other.hostKeyPublic}`])
      const unknown = await rejection(pool({ hosts: [other.alias], workers: 1, cacheDir: tempDir() }))
      assert.instance(unknown, HostKeyError, 'not in the user file: refused without the global one')
      const p = await pool({ hosts: [{ host: other.alias, globalKnownHostsFile: global }], workers: 1, cacheDir: tempDir() })
      try {
        assert.is(await p.run(t.add, 1, 2), 3)
      } finally {
        await p.close()
      }
    } finally {
      await other.stop()
    }
  })

  g('@revoked in the system-wide file refuses a key the user file trusts (regression: ignored)', async () => {
    const global = fileWith(['# revoked for everyone', `@revoked * ${sshd.hostKeyPublic}`])
    const err = await rejection(pool({ hosts: [{ host: sshd.alias, globalKnownHostsFile: global }], workers: 1, cacheDir: tempDir() }))
    assert.instance(err, HostKeyError)
    assert.is(err.fingerprint, sshd.hostKeyFingerprint)
    assert.match(err.message, `is marked @revoked in ${global}:2`)
  })

  g("under 'accept-new', a key that differs from the system-wide entry is refused as changed and not recorded (regression: accepted as new)", async () => {
    const other = await startSshd({ alias: 'farpipe-kh-changed', home: sshd.home, trustHostKey: false })
    try {
      // The system-wide file claims another key (the first sshd's) for this host and port.
      const global = fileWith([`[127.0.0.1]:${other.port} ${sshd.hostKeyPublic}`])
      const before = readFileSync(userFile, 'utf8')
      const err = await rejection(pool({ hosts: [{ host: other.alias, knownHosts: 'accept-new', globalKnownHostsFile: global }], workers: 1, cacheDir: tempDir() }))
      assert.instance(err, HostKeyError)
      assert.is(err.fingerprint, other.hostKeyFingerprint)
      assert.match(err.message, 'HAS CHANGED')
      assert.match(err.message, `${sshd.hostKeyFingerprint} at ${global}:1`)
      assert.is(readFileSync(userFile, 'utf8'), before, 'the user file is unchanged')
    } finally {
      await other.stop()
    }
  })

  g("'accept-new' records a new key in the user file only, never in the system-wide one", async () => {
    const other = await startSshd({ alias: 'farpipe-kh-new', home: sshd.home, trustHostKey: false })
    try {
      const global = fileWith([`unrelated.example ${sshd.hostKeyPublic}`])
      const globalBefore = readFileSync(global, 'utf8')
      const userBefore = lineCount(userFile)
      const p = await pool({ hosts: [{ host: other.alias, knownHosts: 'accept-new', globalKnownHostsFile: global }], workers: 1, cacheDir: tempDir() })
      try {
        assert.is(await p.run(t.add, 2, 2), 4)
      } finally {
        await p.close()
      }
      assert.is(lineCount(userFile), userBefore + 1)
      assert.match(readFileSync(userFile, 'utf8'), `[127.0.0.1]:${other.port} ${other.hostKeyPublic}`)
      assert.is(readFileSync(global, 'utf8'), globalBefore)
    } finally {
      await other.stop()
    }
  })

  g.run()
}

function rekeySuite(sshd: Sshd): void {
  const r = suite('ssh: host keys at re-key')

  r("'accept-new' records a new key once, however many re-keys a transfer makes (regression: a line at every re-key)", async () => {
    const rekeying = await startSshd({ alias: 'farpipe-kh-rekey', home: sshd.home, trustHostKey: false, extraConfig: 'RekeyLimit 256K' })
    try {
      const file = fileWith([], 'known_hosts')
      const p = await pool({ hosts: [{ host: rekeying.alias, knownHosts: 'accept-new', knownHostsFile: file }], workers: 1, cacheDir: tempDir() })
      try {
        // 4 MiB each way: a dozen or more re-keys at 256 KiB.
        const chunk = new Uint8Array(64 * 1024).fill(7)
        const total = 4 * 1024 * 1024
        let back = 0
        for await (const c of p.run(t.echoBytes, (function* () { for (let n = 0; n < total; n += chunk.byteLength) yield chunk })())) back += c.byteLength
        assert.is(back, total)
      } finally {
        await p.close()
      }
      assert.equal(readFileSync(file, 'utf8').split('\n').filter(Boolean), [`[127.0.0.1]:${rekeying.port} ${rekeying.hostKeyPublic}`])
      assert.not.match(rekeying.log(), 'Bad packet length')
      // The recorded line is what a strict connection then needs.
      const q = await pool({ hosts: [{ host: rekeying.alias, knownHostsFile: file }], workers: 1, cacheDir: tempDir() })
      try {
        assert.is(await q.run(t.add, 1, 1), 2)
      } finally {
        await q.close()
      }
    } finally {
      await rekeying.stop()
    }
  })

  r.run()
}
