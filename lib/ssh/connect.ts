/**
 * One SSH connection with ssh2: through any jump hosts, every hop's host key
 * verified against known_hosts (the user's files and the system-wide ones)
 * at the first key exchange and held to that key at every re-key,
 * authenticated with the agent and key files, kept alive by pings that
 * notice a silent peer, and every failure turned into an error that says
 * which host, which user, and what went wrong.
 *
 * @module
 */
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import type { Duplex } from 'node:stream'
import type { AnyAuthMethod, AuthenticationType, Client as ClientType, ConnectConfig, NextAuthHandler } from 'ssh2'
import { TransportError } from '../errors.ts'
import type { ResolvedHost } from './config.ts'
import { HostVerifier } from './host-verifier.ts'
import { knownKeyTypes, readKnownHosts } from './known-hosts.ts'

/** `user@hostname:port (name)`, how messages name a hop. */
export function hopLabel(h: ResolvedHost): string {
  const where = `${h.user}@${h.hostname}${h.port === 22 ? '' : `:${h.port}`}`
  return h.name === h.hostname ? where : `${where} (${h.name})`
}

/** A live connection: the target's client, the jump clients it rides on, and a way to end it all. */
export interface Connection {
  client: ClientType
  /** Resolves when the connection (or any hop under it) has closed, with why. */
  closed: Promise<Error>
  /** True from the moment the connection (or a hop under it) closed. */
  readonly dead: boolean
  /** Lets this process exit while the connection is idle. */
  unref(): void
  /** Ends the connection and every hop. */
  end(): void
}

let ssh2: typeof import('ssh2') | undefined
async function loadSsh2(): Promise<typeof import('ssh2')> {
  // ssh2 (and its native crypto addon) loads only when a pool actually uses SSH.
  return (ssh2 ??= (await import('ssh2')).default ?? (await import('ssh2')))
}

/** Connects to `target` through its jump hosts. */
export async function connect(target: ResolvedHost): Promise<Connection> {
  const { Client } = await loadSsh2()
  const hops = [...target.proxyJump, target]
  const clients: ClientType[] = []
  const verifiers: HostVerifier[] = []
  let sock: Duplex | undefined
  try {
    for (let i = 0; i < hops.length; i++) {
      const hop = hops[i]!
      const { client, verifier } = await connectHop(Client, hop, sock, i > 0 ? hops[i - 1]! : undefined)
      clients.push(client)
      verifiers.push(verifier)
      const next = hops[i + 1]
      if (next) sock = await forward(client, hop, next)
    }
  } catch (err) {
    for (const c of clients) c.end()
    throw err
  }
  const client = clients[clients.length - 1]!
  let closedResolve!: (e: Error) => void
  const closed = new Promise<Error>((r) => (closedResolve = r))
  let lastError: Error | undefined
  let dead = false
  for (const [i, c] of clients.entries()) {
    c.on('error', (err: Error) => (lastError ??= err))
    c.once('close', () => {
      dead = true
      const hop = hops[i]!
      // A host key refused at a re-key says more than ssh2's "Host denied".
      const cause = verifiers[i]!.error ?? lastError
      const why = cause ? `: ${cause.message}` : ''
      closedResolve(new TransportError(`connection to ${hopLabel(hop)} was lost${why}`, { host: target.name, reason: 'lost', cause }))
      for (const other of clients) other.end()
    })
  }
  const stopPing = keepalive(clients, hops, target)
  void closed.then(stopPing)
  return {
    client,
    closed,
    get dead() {
      return dead
    },
    unref: () => {
      // ssh2 has no unref; its TCP socket does. Idle pools must not hold the process.
      const s = (clients[0] as unknown as { _sock?: { unref?(): void } })._sock
      s?.unref?.()
    },
    end: () => {
      for (const c of [...clients].reverse()) c.end()
    },
  }
}

/** Opens a TCP stream from `via` to the next hop. */
function forward(via: ClientType, hop: ResolvedHost, next: ResolvedHost): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    via.forwardOut('127.0.0.1', 0, next.hostname, next.port, (err, stream) => {
      if (err) reject(new TransportError(`jump host ${hopLabel(hop)} could not reach ${next.hostname}:${next.port}: ${err.message}`, { host: next.name, reason: 'unreachable', cause: err }))
      else resolve(stream)
    })
  })
}

/**
 * Pings every hop while the connection lives (a global request any sshd
 * answers, even with a refusal). A hop that leaves `keepaliveCountMax`
 * pings in a row unanswered is dead: the connection is torn down, so every
 * call on it fails within interval × (count + 1) instead of hanging. A
 * count of 0 is taken as 1: compared before any ping was sent, it would cut
 * every connection at the first tick, however healthy. The timer is
 * unreferenced: pings never keep the process alive by themselves.
 */
function keepalive(clients: ClientType[], hops: ResolvedHost[], target: ResolvedHost): () => void {
  const interval = target.keepaliveInterval
  if (!(interval > 0)) return () => {}
  const limit = Math.max(1, target.keepaliveCountMax)
  const missed = clients.map(() => 0)
  const timer = setInterval(() => {
    clients.forEach((c, i) => {
      if (missed[i]! >= limit) {
        const err = new TransportError(`${hopLabel(hops[i]!)} did not answer ${missed[i]} keepalives ${interval} ms apart`, { host: target.name, reason: 'lost' })
        c.emit('error', err)
        c.destroy()
        return
      }
      missed[i]!++
      try {
        c.unforwardIn('farpipe-keepalive', 1, () => (missed[i] = 0))
      } catch {
        c.destroy()
      }
    })
  }, interval)
  timer.unref()
  return () => clearInterval(timer)
}

async function connectHop(
  Client: typeof import('ssh2').Client,
  hop: ResolvedHost,
  sock: Duplex | undefined,
  via: ResolvedHost | undefined,
): Promise<{ client: ClientType; verifier: HostVerifier }> {
  // The user's files first, then the system-wide ones, as OpenSSH reads them; only the user's are written to.
  const entries = hop.knownHosts === 'off' ? [] : await readKnownHosts([...hop.knownHostsFiles, ...hop.globalKnownHostsFiles])
  const lookupHost = hop.hostKeyAlias ?? hop.hostname
  const lookupPort = hop.hostKeyAlias ? 22 : hop.port
  const verifier = new HostVerifier({
    label: hopLabel(hop),
    policy: hop.knownHosts,
    entries,
    host: lookupHost,
    port: lookupPort,
    userFiles: hop.knownHostsFiles,
    globalFiles: hop.globalKnownHostsFiles,
    hash: hop.hashKnownHosts,
  })

  const auth = authPlan(hop)
  const tried: string[] = []
  const authHandler = (methodsLeft: AuthenticationType[] | null, _partial: boolean | null, next: NextAuthHandler): void => {
    for (;;) {
      const m = auth.shift()
      if (!m) return next(false as unknown as AnyAuthMethod)
      if (m.skip) {
        tried.push(m.label)
        continue
      }
      if (methodsLeft && !methodsLeft.includes('publickey')) {
        tried.push(`${m.label} (the server does not take public keys)`)
        continue
      }
      tried.push(m.label)
      return next(m.method!)
    }
  }

  // Prefer the key types known for this host, as OpenSSH does, so a known host is not refused for showing another key.
  const known = knownKeyTypes(entries, lookupHost, lookupPort).flatMap(algorithmsFor)
  const config: ConnectConfig = {
    host: hop.hostname,
    port: hop.port,
    username: hop.user,
    sock: sock as ConnectConfig['sock'],
    readyTimeout: hop.connectTimeout,
    keepaliveInterval: 0,
    // Synchronous on purpose: ssh2 asks again at every key re-exchange, and
    // an answer given later lets it send a packet in the middle of the
    // exchange that corrupts the stream (sshd: "Bad packet length"), which
    // with OpenSSH's default rekeying ended transfers after a few GiB.
    // The verifier also holds re-keys to the key accepted first.
    hostVerifier: (key: Buffer): boolean => verifier.verify(key),
    authHandler: authHandler as ConnectConfig['authHandler'],
    ...(known.length ? { algorithms: { serverHostKey: { prepend: known } as never } } : {}),
  }

  const client = new Client()
  return new Promise<{ client: ClientType; verifier: HostVerifier }>((resolve, reject) => {
    let settled = false
    const fail = (err: Error) => {
      if (settled) return
      settled = true
      client.end()
      reject(err)
    }
    client.once('ready', () => {
      if (settled) return
      // A new key accepted under accept-new is on file before the connection is used.
      verifier.recorded().then(
        () => {
          if (settled) return
          settled = true
          client.setNoDelay(true)
          coalesceWrites(client)
          resolve({ client, verifier })
        },
        (err: Error) => fail(err),
      )
    })
    client.on('error', (err: Error & { level?: string; code?: string }) => {
      if (verifier.error) return fail(verifier.error)
      fail(connectError(err, hop, tried, via))
    })
    client.once('close', () => fail(verifier.error ?? new TransportError(`${hopLabel(hop)} closed the connection before it was ready`, { host: hop.name, reason: 'closed' })))
    try {
      client.connect(config)
    } catch (err) {
      fail(connectError(err as Error, hop, tried, via))
    }
  })
}

/**
 * ssh2 writes every SSH packet (at most 32 KiB of channel data) to its socket
 * with a write of its own: a system call each. Corking the socket for the
 * rest of the current tick whenever a write arrives lets the packets made in
 * one tick (a batch of frames, or a window's worth released by a window
 * adjust) leave in one writev.
 */
function coalesceWrites(client: ClientType): void {
  const sock = (client as unknown as { _sock?: import('node:net').Socket })._sock
  if (!sock || typeof sock.cork !== 'function') return
  const write = sock.write.bind(sock) as (...args: unknown[]) => boolean
  let corked = false
  sock.write = ((...args: unknown[]) => {
    if (!corked) {
      corked = true
      sock.cork()
      process.nextTick(() => {
        corked = false
        sock.uncork()
      })
    }
    return write(...args)
  }) as typeof sock.write
}

/** ssh2 algorithm names for a key type found in known_hosts. */
function algorithmsFor(type: string): string[] {
  if (type === 'ssh-rsa') return ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']
  if (type === 'ssh-ed25519' || type.startsWith('ecdsa-sha2-')) return [type]
  return []
}

/** Turns ssh2's and the socket's errors into ones that say which host and what to do. */
function connectError(err: Error & { level?: string; code?: string }, hop: ResolvedHost, tried: string[], via: ResolvedHost | undefined): TransportError {
  const who = hopLabel(hop)
  const through = via ? ` through ${hopLabel(via)}` : ''
  switch (err.code) {
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return new TransportError(`cannot resolve the host name ${hop.hostname} of ${who}: ${err.code}`, { host: hop.name, reason: 'dns', cause: err })
    case 'ECONNREFUSED':
      return new TransportError(`${who} refused the connection${through}: nothing listens on port ${hop.port}`, { host: hop.name, reason: 'refused', cause: err })
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
      return new TransportError(`${who} is unreachable${through} (${err.code})`, { host: hop.name, reason: 'unreachable', cause: err })
  }
  if (err.level === 'client-authentication') {
    const methods = tried.length ? tried.join('; ') : 'none available'
    return new TransportError(`authentication failed for ${who}: tried ${methods}`, { host: hop.name, reason: 'auth', cause: err })
  }
  if (err.level === 'client-timeout' || /timed out/i.test(err.message)) {
    return new TransportError(`${who} did not complete the SSH handshake within ${hop.connectTimeout} ms${through}`, { host: hop.name, reason: 'timeout', cause: err })
  }
  return new TransportError(`cannot connect to ${who}${through}: ${err.message}`, { host: hop.name, reason: 'closed', cause: err })
}

interface AuthStep {
  label: string
  method?: AnyAuthMethod
  /** A step that cannot be tried (encrypted key without passphrase): only reported. */
  skip?: boolean
}

const DEFAULT_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa']

/** The authentication methods to try, in order: the agent, then each key file. */
function authPlan(hop: ResolvedHost): AuthStep[] {
  const steps: AuthStep[] = []
  const explicitKeys = hop.identityFiles.length > 0
  if (hop.agent && !(hop.identitiesOnly && explicitKeys)) {
    steps.push({ label: `ssh-agent at ${hop.agent}`, method: { type: 'agent', username: hop.user, agent: hop.agent } })
  }
  const home = os.homedir()
  const files = explicitKeys ? hop.identityFiles : DEFAULT_KEYS.map((k) => path.join(home, '.ssh', k))
  for (const file of files) {
    const shown = file.startsWith(home + path.sep) ? `~${file.slice(home.length)}` : file
    let data: Buffer
    try {
      data = fs.readFileSync(file)
    } catch {
      if (explicitKeys) steps.push({ label: `key ${shown} (cannot read it)`, skip: true })
      continue
    }
    const parsed = ssh2!.utils.parseKey(data, hop.passphrase)
    if (parsed instanceof Error) {
      const why = /encrypted|passphrase/i.test(parsed.message) && !hop.passphrase ? 'encrypted, and no passphrase was given' : parsed.message
      steps.push({ label: `key ${shown} (${why})`, skip: true })
      continue
    }
    steps.push({ label: `key ${shown}`, method: { type: 'publickey', username: hop.user, key: data, passphrase: hop.passphrase } })
  }
  if (steps.length === 0) steps.push({ label: `no agent and no key file (looked for ${DEFAULT_KEYS.map((k) => `~/.ssh/${k}`).join(', ')})`, skip: true })
  return steps
}
