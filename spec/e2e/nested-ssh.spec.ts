// Streams nested in values over a real OpenSSH sshd on loopback.
import { pool, type PoolOptions } from 'farpipe'
import { nestedSuites } from './nested.ts'
import { noSshd, useClientHome, startSshd } from './sshd.ts'

if (!noSshd('ssh: streams nested in values')) {
  const sshd = await startSshd({ alias: 'farpipe-nested' })
  useClientHome(sshd.home)
  nestedSuites({ name: 'ssh', open: (options: PoolOptions = {}) => pool({ hosts: [sshd.alias], ...options }) })
}
