/**
 * The host key decision for one SSH connection, at every key exchange.
 *
 * ssh2 asks its `hostVerifier` at the first key exchange and again at each
 * re-exchange (sshd re-keys after `RekeyLimit` bytes, OpenSSH's default
 * every few GiB). The answer must be given synchronously: ssh2 corrupts the
 * stream when it comes later at a re-key. So the decision is made here from
 * known_hosts entries read beforehand, and the one asynchronous part, adding
 * a new key to the user's file under `'accept-new'`, runs on the side and is
 * awaited by the connection before it is used.
 *
 * The key accepted at the first exchange is the connection's: a re-key must
 * present the same one. known_hosts is consulted (and written) only once, so
 * a transfer that re-keys a hundred times adds one line, not a hundred, and
 * a server whose key changes mid-connection is cut off rather than checked
 * against files that would let a second key through.
 *
 * @module
 */
import { HostKeyError } from '../errors.ts'
import type { KnownHostsPolicy } from './host-options.ts'
import { appendKnownHost, checkHostKey, fingerprint, keyTypeOf, knownHostsLine, lookupName, type KnownHostEntry } from './known-hosts.ts'

/** What a {@link HostVerifier} decides from. */
export interface HostVerifierOptions {
  /** How messages name the hop, e.g. `alice@web:2222 (web)`. */
  label: string
  /** How the key is checked. */
  policy: KnownHostsPolicy
  /**
   * The entries of the user's known_hosts files followed by the system-wide
   * ones. Both count alike: a key in either is known, `@revoked` in either
   * refuses, another key for the host in either means the key changed.
   */
  entries: KnownHostEntry[]
  /** The host name the key is looked up and recorded under (`HostKeyAlias` or the host name). */
  host: string
  /** The port it is looked up under (22 with a `HostKeyAlias`). */
  port: number
  /** The user's known_hosts files; under `'accept-new'` a new key is added to the first, and only there. */
  userFiles: string[]
  /** The system-wide known_hosts files, named in messages; never written. @default [] */
  globalFiles?: string[]
  /** Hash the host name of a recorded line (`HashKnownHosts yes`). @default false */
  hash?: boolean
  /** Appends a line to a known_hosts file. @default appendKnownHost */
  append?: (file: string, line: string) => Promise<void>
}

/**
 * Decides about the host keys one connection presents. Make one per
 * connection; pass {@link HostVerifier.verify} to ssh2 as `hostVerifier`,
 * and await {@link HostVerifier.recorded} before using the connection.
 */
export class HostVerifier {
  /** Why the last key was refused; undefined while none was. */
  error: HostKeyError | undefined
  readonly #o: HostVerifierOptions
  /** The key accepted at the first exchange: every re-key must present it again. */
  #accepted: Buffer | undefined
  /** Settles with undefined once a new key is on file (or when there was none to record), or with why it could not be written. Never rejects, so a failure is not an unhandled rejection while nobody awaits it. */
  #recording: Promise<Error | undefined> = Promise.resolve(undefined)
  #recordingFile = ''

  constructor(options: HostVerifierOptions) {
    this.#o = options
  }

  /**
   * Says, synchronously, whether `key` (the blob ssh2 hands over) is
   * trusted. On a refusal {@link error} says why. Never throws: a key that
   * cannot even be read is refused.
   */
  verify(key: Buffer): boolean {
    try {
      return this.#verify(key)
    } catch (err) {
      this.error = new HostKeyError(`cannot check the host key of ${this.#o.label}: ${(err as Error).message}`, safeFingerprint(key), { cause: err })
      return false
    }
  }

  /**
   * Resolves once a new key accepted under `'accept-new'` is written to the
   * user's known_hosts file (at once when there was nothing to write);
   * rejects with a HostKeyError naming the file when it could not be.
   */
  async recorded(): Promise<void> {
    const err = await this.#recording
    if (!err) return
    const fp = this.#accepted ? fingerprint(this.#accepted) : ''
    throw new HostKeyError(`accepted the new host key ${fp} of ${this.#o.label} but could not record it in ${this.#recordingFile}: ${err.message}`, fp, { cause: err })
  }

  #verify(key: Buffer): boolean {
    const o = this.#o
    const fp = fingerprint(key)
    const type = keyTypeOf(key)
    if (this.#accepted) {
      if (this.#accepted.equals(key)) return true
      this.error = new HostKeyError(
        `HOST KEY OF ${o.label} CHANGED DURING A KEY RE-EXCHANGE: the connection began with ${keyTypeOf(this.#accepted)} ${fingerprint(this.#accepted)} and the server now presents ${type} ${fp}. ` +
          'A server does not do that; this may be an attack, and the connection is cut.',
        fp,
      )
      return false
    }
    if (o.policy === 'off') return this.#accept(key)
    const name = lookupName(o.host, o.port)
    const check = checkHostKey(o.entries, o.host, o.port, key)
    switch (check.status) {
      case 'known':
        return this.#accept(key)
      case 'revoked':
        this.error = new HostKeyError(`host key ${type} ${fp} of ${o.label} is marked @revoked in ${check.entry.file}:${check.entry.line}`, fp)
        return false
      case 'changed': {
        // Any other key on record counts, whatever its type and whichever file holds it (as OpenSSH does): an impostor must not pass by showing a type not seen yet.
        const where = check.expected.map((e) => `${e.keyType} ${fingerprint(e.key)} at ${e.file}:${e.line}`).join(', ')
        this.error = new HostKeyError(
          `HOST KEY OF ${o.label} HAS CHANGED: it presented ${type} ${fp}, but known_hosts holds other keys for ${name} (${where}). ` +
            'This may be an attack, or the host was reinstalled; if you know why, remove the old entry (ssh-keygen -R) and connect again.',
          fp,
        )
        return false
      }
      case 'unknown': {
        if (o.policy === 'accept-new') return this.#record(key) && this.#accept(key)
        const files = [...o.userFiles, ...(o.globalFiles ?? [])]
        this.error = new HostKeyError(
          `host key of ${o.label} is not known: it presented ${type} ${fp}, and ${files.join(', ') || 'no known_hosts file'} has no ${type} key for ${name}. ` +
            "Check the fingerprint with the host's administrator, then add it (ssh-keyscan, or connect once with ssh), or pass knownHosts: 'accept-new'.",
          fp,
        )
        return false
      }
    }
  }

  #accept(key: Buffer): boolean {
    this.#accepted = Buffer.from(key)
    return true
  }

  /** Starts adding a new key to the user's first known_hosts file; false (with {@link error}) when no line can be made for it. */
  #record(key: Buffer): boolean {
    const o = this.#o
    const file = o.userFiles[0]
    // `UserKnownHostsFile none`: accepted for this connection only, as ssh does.
    if (!file) return true
    let line: string
    try {
      line = knownHostsLine(o.host, o.port, key, { hash: o.hash })
    } catch (err) {
      // A key that cannot be recorded would be "new" again at every connection: refuse it instead.
      this.error = new HostKeyError(`cannot accept the new host key of ${o.label}: ${(err as Error).message}`, fingerprint(key), { cause: err })
      return false
    }
    const append = o.append ?? appendKnownHost
    this.#recordingFile = file
    this.#recording = Promise.resolve()
      .then(() => append(file, line))
      .then(
        () => undefined,
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      )
    return true
  }
}

function safeFingerprint(key: Buffer): string {
  try {
    return fingerprint(key)
  } catch {
    return ''
  }
}
