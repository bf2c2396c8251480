/**
 * known_hosts: reading OpenSSH's files, checking a presented host key
 * against them, and writing new lines.
 *
 * ssh2 has no known_hosts support: it hands farpipe the server's key blob in
 * its `hostVerifier(key)` callback and leaves the decision to us. The blob is
 * the same bytes as the base64 field of a known_hosts line, so checking a key
 * is a comparison of bytes once the lines for the host are found. The file
 * format and the matching rules are OpenSSH's (sshd(8), "SSH_KNOWN_HOSTS FILE
 * FORMAT"; ssh-keygen(1) `-H`):
 *
 * ```
 * [@revoked|@cert-authority] patterns keytype base64-key [comment]
 * ```
 *
 * Everything here is pure except {@link readKnownHosts} and
 * {@link appendKnownHost}, so the matching can be tested line by line
 * against what `ssh-keygen -F` says.
 *
 * @module
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { mkdir, open, readFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import * as path from 'node:path'
import { FarpipeError, ProtocolError } from '../errors.ts'

/** One usable line of a known_hosts file. Comments, blank and malformed lines have none. */
export interface KnownHostEntry {
  /** The file the line came from (after `~` expansion), for messages. */
  file: string
  /** The 1-based line number in that file. */
  line: number
  /** The line's marker. `@cert-authority` lines are kept but never match: farpipe does not do certificates. */
  marker?: '@revoked' | '@cert-authority'
  /** The raw host field: comma-separated patterns, or one hashed `|1|salt|hash` name. */
  patterns: string
  /** The key type, e.g. `ssh-ed25519`; always the same as the type inside {@link key}. */
  keyType: string
  /** The decoded key blob, comparable byte for byte with what ssh2's `hostVerifier` receives. */
  key: Buffer
}

/** What known_hosts says about the key a host presented. */
export type HostKeyCheck =
  /** A line for this host holds exactly this key. */
  | { status: 'known'; entry: KnownHostEntry }
  /** No line names this host. */
  | { status: 'unknown' }
  /**
   * Lines name this host but none holds this key. `expected` lists them all,
   * of any key type: like OpenSSH, a host known by an RSA key that now shows
   * an Ed25519 key has changed, not become new (otherwise an impostor would
   * only have to offer a key type the user has not seen yet).
   */
  | { status: 'changed'; expected: KnownHostEntry[] }
  /** The key is on an `@revoked` line, whatever that line's host patterns. */
  | { status: 'revoked'; entry: KnownHostEntry }

/**
 * The files OpenSSH reads when none are configured: `UserKnownHostsFile`,
 * then `GlobalKnownHostsFile` (ssh_config(5) defaults).
 */
export const defaultKnownHostsFiles: readonly string[] = [
  '~/.ssh/known_hosts',
  '~/.ssh/known_hosts2',
  '/etc/ssh/ssh_known_hosts',
  '/etc/ssh/ssh_known_hosts2',
]

/**
 * Parses the text of a known_hosts file. Blank lines, comments and lines
 * OpenSSH could not use either (a missing field, bad base64, a key type that
 * disagrees with the blob, an unknown marker, a broken hashed name) are
 * skipped: one bad line must not make the whole file unusable, and a skipped
 * line can only make a host look unknown, never trusted.
 */
export function parseKnownHosts(text: string, file = '<known_hosts>'): KnownHostEntry[] {
  const entries: KnownHostEntry[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const entry = parseLine(lines[i]!.replace(/\r$/, ''), file, i + 1)
    if (entry) entries.push(entry)
  }
  return entries
}

function parseLine(text: string, file: string, line: number): KnownHostEntry | undefined {
  const fields = text.trim().split(/[ \t]+/)
  const first = fields[0] ?? ''
  if (first === '' || first.startsWith('#')) return undefined
  let marker: KnownHostEntry['marker']
  if (first.startsWith('@')) {
    if (first !== '@revoked' && first !== '@cert-authority') return undefined
    marker = first
    fields.shift()
  }
  const [patterns, keyType, base64] = fields
  if (!patterns || !keyType || !base64) return undefined
  // OpenSSH allows one marker per line; a second one makes the line invalid.
  if (patterns.startsWith('@')) return undefined
  if (patterns.startsWith('|') && !parseHashedName(patterns)) return undefined
  if (!isBase64(base64)) return undefined
  const key = Buffer.from(base64, 'base64')
  const type = readKeyType(key)
  if (!('type' in type) || type.type !== keyType) return undefined
  return { file, line, ...(marker ? { marker } : {}), patterns, keyType, key }
}

/**
 * Reads and parses known_hosts files, in the order given. Missing files are
 * skipped (most users have no `known_hosts2`); a leading `~` means the home
 * directory. Any other read error rejects, naming the file, because a
 * known_hosts file that exists but cannot be read should not silently make
 * every host unknown.
 */
export async function readKnownHosts(files: string[]): Promise<KnownHostEntry[]> {
  const parsed = await Promise.all(
    files.map(async (file) => {
      const full = expandHome(file)
      try {
        return parseKnownHosts(await readFile(full, 'utf8'), full)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT' || code === 'ENOTDIR') return []
        throw new FarpipeError(`cannot read known_hosts file ${full}: ${(err as Error).message}`, { cause: err })
      }
    }),
  )
  return parsed.flat()
}

/**
 * Says whether `key`, presented by `host` on `port`, is known, changed,
 * revoked or unknown. Revocation is checked first and for every `@revoked`
 * line whatever its host patterns (stricter than OpenSSH, which only heeds
 * `@revoked` lines whose patterns match the host): a revoked key is not
 * trusted anywhere.
 */
export function checkHostKey(entries: KnownHostEntry[], host: string, port: number, key: Buffer): HostKeyCheck {
  const revoked = entries.find((e) => e.marker === '@revoked' && e.key.equals(key))
  if (revoked) return { status: 'revoked', entry: revoked }
  const expected = hostEntries(entries, host, port)
  const known = expected.find((e) => e.key.equals(key))
  if (known) return { status: 'known', entry: known }
  return expected.length > 0 ? { status: 'changed', expected } : { status: 'unknown' }
}

/**
 * The key types known for a host, in file order and without repeats, so the
 * transport can offer them first in host key negotiation, as OpenSSH does:
 * a server with several host keys then shows the one the user already has.
 */
export function knownKeyTypes(entries: KnownHostEntry[], host: string, port: number): string[] {
  return [...new Set(hostEntries(entries, host, port).map((e) => e.keyType))]
}

/** The entries without a marker whose patterns match `host` on `port`, in file order. */
export function hostEntries(entries: KnownHostEntry[], host: string, port: number): KnownHostEntry[] {
  const name = lookupName(host, port)
  return entries.filter((e) => e.marker === undefined && hostMatches(e.patterns, name))
}

/**
 * The name known_hosts knows a host by: the host itself on port 22 (or 0,
 * meaning the default), `[host]:port` on any other. Lowercased, as OpenSSH
 * lowercases host names before looking them up, hashing or writing them.
 */
export function lookupName(host: string, port: number): string {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FarpipeError(`port ${port} for host ${host} is not an integer from 0 to 65535`)
  }
  const name = host.toLowerCase()
  return port === 22 || port === 0 ? name : `[${name}]:${port}`
}

/**
 * The fingerprint of a key blob as `ssh-keygen -lf` and ssh's prompts print
 * it: `SHA256:` and the unpadded base64 of the blob's SHA-256 digest.
 */
export function fingerprint(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`
}

/**
 * The key type a blob starts with (a uint32 length, then that many ASCII
 * bytes), e.g. `ssh-ed25519`. Throws a ProtocolError if the blob cannot hold
 * one, since ssh2 only hands over blobs the server sent.
 */
export function keyTypeOf(key: Buffer): string {
  const type = readKeyType(key)
  if ('type' in type) return type.type
  throw new ProtocolError(`host key blob of ${key.byteLength} bytes ${type.problem}`)
}

function readKeyType(blob: Buffer): { type: string } | { problem: string } {
  if (blob.byteLength < 5) return { problem: 'is too short for a key type (at least 5 bytes)' }
  const length = blob.readUInt32BE(0)
  if (length === 0 || 4 + length > blob.byteLength) {
    return { problem: `declares a key type of ${length} bytes, which does not fit` }
  }
  const type = blob.toString('latin1', 4, 4 + length)
  if (!/^[\x21-\x7e]+$/.test(type)) return { problem: 'starts with a key type that is not printable ASCII' }
  return { type }
}

/**
 * A known_hosts line for a host's key: `host keytype base64`, with
 * `[host]:port` when the port is not 22. With `hash`, the name is hashed as
 * `ssh-keygen -H` and `HashKnownHosts yes` do (`|1|salt|HMAC-SHA1(salt,
 * name)`, a fresh 20-byte salt each time), so the file does not list the
 * hosts the user connects to.
 */
export function knownHostsLine(host: string, port: number, key: Buffer, options?: { hash?: boolean }): string {
  // These characters would turn the name into a wildcard, a negation, a
  // second pattern, a comment, a marker or a hashed name.
  if (!/^[^\s,*?!#@|]+$/.test(host)) {
    throw new FarpipeError(
      `cannot write a known_hosts line for host ${JSON.stringify(host)}: a host name must be non-empty, without whitespace or any of , * ? ! # @ |`,
    )
  }
  const name = lookupName(host, port)
  const field = options?.hash ? hashName(name, randomBytes(SHA1_BYTES)) : name
  return `${field} ${keyTypeOf(key)} ${key.toString('base64')}`
}

/**
 * Appends a line to a known_hosts file. Missing directories are created with
 * mode 0700 and a missing file with mode 0600, as ssh does for `~/.ssh`;
 * existing modes are left alone. A file whose last line lacks its newline
 * gets one first, so the new line is not glued onto it.
 */
export async function appendKnownHost(file: string, line: string): Promise<void> {
  const full = expandHome(file)
  const at = line.search(/[\r\n]/)
  if (at !== -1) {
    throw new FarpipeError(`refusing to append to ${full}: the line has a line break at index ${at} of ${line.length}`)
  }
  await mkdir(path.dirname(full), { recursive: true, mode: 0o700 })
  const handle = await open(full, 'a+', 0o600)
  try {
    const { size } = await handle.stat()
    let prefix = ''
    if (size > 0) {
      const last = Buffer.alloc(1)
      await handle.read(last, 0, 1, size - 1)
      if (last[0] !== 0x0a) prefix = '\n'
    }
    // One write in append mode: concurrent appenders do not interleave inside a line.
    await handle.write(`${prefix}${line}\n`)
  } finally {
    await handle.close()
  }
}

/** `~` and `~/...` mean the home directory, as in ssh_config; `~user` is not supported. */
function expandHome(file: string): string {
  if (file === '~') return homedir()
  if (file.startsWith('~/')) return path.join(homedir(), file.slice(2))
  return file
}

const SHA1_BYTES = 20
const HASH_MAGIC = '|1|'

/** Whether a host field matches a lookup name (already lowercased by {@link lookupName}). */
function hostMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith('|')) {
    const hashed = parseHashedName(patterns)
    if (!hashed) return false
    const mac = createHmac('sha1', hashed.salt).update(name).digest()
    return timingSafeEqual(mac, hashed.mac)
  }
  // As OpenSSH's match_hostname(): a matching negated pattern rules the line
  // out whatever else matches; otherwise one matching pattern is enough.
  let matched = false
  for (const pattern of patterns.toLowerCase().split(',')) {
    if (pattern.startsWith('!')) {
      if (wildcardMatch(pattern.slice(1), name)) return false
    } else if (wildcardMatch(pattern, name)) {
      matched = true
    }
  }
  return matched
}

/**
 * Glob matching with `*` (any run, dots and brackets included) and `?` (one
 * character); everything else is literal. Iterative, backtracking only to the
 * last `*`, so a hostile pattern costs at most length × length steps.
 */
function wildcardMatch(pattern: string, text: string): boolean {
  let p = 0
  let t = 0
  let star = -1
  let resume = 0
  while (t < text.length) {
    const c = pattern[p]
    if (c === '*') {
      star = p++
      resume = t
    } else if (c !== undefined && (c === '?' || c === text[t])) {
      p++
      t++
    } else if (star !== -1) {
      p = star + 1
      t = ++resume
    } else {
      return false
    }
  }
  while (pattern[p] === '*') p++
  return p === pattern.length
}

/** The salt and MAC of a `|1|salt|mac` name, or undefined unless both are base64 of 20 bytes (as OpenSSH requires). */
function parseHashedName(field: string): { salt: Buffer; mac: Buffer } | undefined {
  if (!field.startsWith(HASH_MAGIC)) return undefined
  const parts = field.slice(HASH_MAGIC.length).split('|')
  if (parts.length !== 2) return undefined
  const [salt, mac] = parts as [string, string]
  if (!isBase64(salt) || !isBase64(mac)) return undefined
  const decoded = { salt: Buffer.from(salt, 'base64'), mac: Buffer.from(mac, 'base64') }
  return decoded.salt.byteLength === SHA1_BYTES && decoded.mac.byteLength === SHA1_BYTES ? decoded : undefined
}

function hashName(name: string, salt: Buffer): string {
  const mac = createHmac('sha1', salt).update(name).digest()
  return `${HASH_MAGIC}${salt.toString('base64')}|${mac.toString('base64')}`
}

/** Padded base64 only: Node's decoder skips stray characters, OpenSSH's refuses them. */
function isBase64(text: string): boolean {
  return text.length > 0 && /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)
}
