// Pipelines of calls over a real OpenSSH sshd on loopback.
import '../helpers.ts'
import { pool, type PoolOptions } from 'farpipe'
import { pipeSuites } from './pipe.ts'
import { noSshd, useClientHome, startSshd } from './sshd.ts'

if (!noSshd('ssh: pipelines of calls')) {
  const sshd = await startSshd({ alias: 'farpipe-pipe' })
  useClientHome(sshd.home)
  pipeSuites({ name: 'ssh', open: (options: PoolOptions = {}) => pool({ hosts: [sshd.alias], ...options }) })
}
