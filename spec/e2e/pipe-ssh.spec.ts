// Pipelines of calls over a real OpenSSH sshd on loopback.
import '../helpers.ts'
import { suite } from 'uvu'
import { pool, type PoolOptions } from 'farpipe'
import { pipeSuites } from './pipe.ts'
import { findSshd, startSshd } from './sshd.ts'

if (!findSshd()) {
  console.log('sshd not installed: skipping the SSH pipeline specs')
  const s = suite('ssh: pipelines of calls')
  s.skip('SSH specs (sshd not installed)', () => {})
  s.run()
} else {
  const sshd = await startSshd({ alias: 'farpipe-pipe' })
  process.env.HOME = sshd.home
  delete process.env.SSH_AUTH_SOCK
  process.on('exit', () => void sshd.stop())
  pipeSuites({ name: 'ssh', open: (options: PoolOptions = {}) => pool({ hosts: [sshd.alias], ...options }) })
}
