/**
 * The hosts of a pool: what `pool({ hosts })` takes, turned into
 * transports. A bad destination is refused here, before anything connects.
 *
 * @module
 */
import type { PoolOptions } from './pool.ts'
import type { HostOptions } from './ssh/config.ts'
import type { Transport } from './transports/transport.ts'

/** Resolves the pool's hosts (SSH destinations, with ~/.ssh/config) into transports; a bad destination throws here. */
export async function hostTransports(hosts: (string | HostOptions)[], options: PoolOptions): Promise<Transport[]> {
  if (!Array.isArray(hosts)) throw new TypeError(`option hosts must be an array of destinations, got ${typeof hosts}`)
  // The SSH modules load only for pools that use SSH.
  const [{ resolveHost }, { SshTransport }] = await Promise.all([import('./ssh/config.ts'), import('./transports/ssh.ts')])
  const resolved = await Promise.all(
    hosts.map(async (h) => {
      const r = await resolveHost(h, { configFile: options.sshConfig })
      // Named as given (minus the scheme), so two ports of one address stay two hosts in messages and context().host.
      r.name = (typeof h === 'string' ? h : h.host).replace(/^ssh:\/\//i, '').replace(/\/$/, '')
      return r
    }),
  )
  const names = new Set<string>()
  for (const r of resolved) {
    if (names.has(r.name)) throw new TypeError(`host ${r.name} is given twice; give it once, with workers: n for more workers`)
    names.add(r.name)
  }
  return resolved.map((r) => new SshTransport(r, { workers: options.workers, nodeArgs: options.nodeArgs, cacheDir: options.cacheDir }))
}

