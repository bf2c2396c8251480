/**
 * The hosts of a pool: what `pool({ hosts })` takes, turned into
 * transports. SSH destinations become SSH transports; `{ name, command }`
 * objects become command transports. A bad destination or host object is
 * refused here, before anything connects.
 *
 * @module
 */
import type { PoolOptions } from './options.ts'
import type { HostOptions } from '../ssh/config.ts'
import type { CommandHost } from '../transports/command.ts'
import type { Transport } from '../transports/transport.ts'

/** A host object that names a command rather than an SSH destination. */
function isCommandHost(h: unknown): h is CommandHost {
  return typeof h === 'object' && h !== null && !Array.isArray(h) && 'command' in h
}

/**
 * Resolves the pool's hosts (SSH destinations, with ~/.ssh/config, and
 * command hosts) into transports, in the order given; a bad host throws
 * here. Names are unique across both kinds.
 */
export async function hostTransports(hosts: (string | HostOptions | CommandHost)[], options: PoolOptions): Promise<Transport[]> {
  if (!Array.isArray(hosts)) throw new TypeError(`option hosts must be an array of destinations, got ${typeof hosts}`)
  const ssh = hosts.filter((h): h is string | HostOptions => !isCommandHost(h))
  const commands = hosts.filter(isCommandHost)
  // The SSH modules load only for pools that use SSH, the command transport only for pools that use commands.
  const [sshModules, commandModule] = await Promise.all([
    ssh.length > 0 ? Promise.all([import('../ssh/config.ts'), import('../transports/ssh.ts')]) : undefined,
    commands.length > 0 ? import('../transports/command.ts') : undefined,
  ])
  const byHost = new Map<unknown, Transport>()
  for (const h of commands) {
    // The pool's defaults fill in what the host does not say; the host's own checks name it.
    const given = commandModule!.checkCommandHost(h)
    const merged: CommandHost = { ...given, workers: given.workers ?? options.workers, nodeArgs: given.nodeArgs ?? options.nodeArgs, cacheDir: given.cacheDir ?? options.cacheDir }
    byHost.set(h, new commandModule!.CommandTransport(merged))
  }
  if (sshModules) {
    const [{ resolveHost }, { SshTransport }] = sshModules
    const resolved = await Promise.all(
      ssh.map(async (h) => {
        const r = await resolveHost(h, { configFile: options.sshConfig })
        // Named as given (minus the scheme), so two ports of one address stay two hosts in messages and context().host.
        r.name = (typeof h === 'string' ? h : h.host).replace(/^ssh:\/\//i, '').replace(/\/$/, '')
        return [h, r] as const
      }),
    )
    for (const [h, r] of resolved) byHost.set(h, new SshTransport(r, { workers: options.workers, nodeArgs: options.nodeArgs, cacheDir: options.cacheDir }))
  }
  const transports = hosts.map((h) => byHost.get(h)!)
  const names = new Set<string>()
  for (const t of transports) {
    if (names.has(t.host)) throw new TypeError(`host ${t.host} is given twice; give it once, with workers: n for more workers`)
    names.add(t.host)
  }
  return transports
}
