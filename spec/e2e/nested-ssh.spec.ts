// Streams nested in values over a real OpenSSH sshd on loopback.
import { suite } from 'uvu'
import { pool, type PoolOptions } from 'farpipe'
import { nestedSuites } from './nested.ts'
import { findSshd, startSshd } from './sshd.ts'

if (!findSshd()) {
  console.log('sshd not installed: skipping the SSH nested-stream specs')
  const s = suite('ssh: streams nested in values')
  s.skip('SSH specs (sshd not installed)', () => {})
  s.run()
} else {
  const sshd = await startSshd({ alias: 'farpipe-nested' })
  process.env.HOME = sshd.home
  delete process.env.SSH_AUTH_SOCK
  process.on('exit', () => void sshd.stop())
  nestedSuites({ name: 'ssh', open: (options: PoolOptions = {}) => pool({ hosts: [sshd.alias], ...options }) })
}
