/**
 * Preparing a host: find its `node` (or ship ours), create the bundle cache
 * (`~/.cache/farpipe`, mode 0700), and upload the worker bundle unless it is
 * already there with the right hash. Every command is built from constant
 * scripts and single-quoted arguments: nothing the user gave reaches a
 * remote shell unquoted.
 *
 * Commands run through an {@link Exec}: an ssh2 exec channel for SSH hosts,
 * a spawned command (`kubectl exec -i pod --`, `ssh host`) for command hosts.
 * Each exec costs the login shell's startup (~0.1 s, or a whole new
 * connection for a command host), so the probe does all its checks in one
 * exec and uploads happen only when something is missing.
 *
 * The login shell is whatever the remote user has: sh or bash, but also
 * csh, tcsh or fish, which read quotes, backslashes, `!`, line breaks and
 * redirections in their own ways. So the command line it is given is always
 * the same {@link REMOTE_COMMAND}, which every one of them reads alike: it
 * starts `sh`, which reads its script from the first line of its stdin (see
 * {@link scriptLine}). Everything that varies (paths, values, the scripts
 * for node) travels there, where only sh reads it, before whatever the
 * command reads from its stdin next (frames, or a file to upload).
 *
 * @module
 */
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import type { WorkerBundle } from '../worker/locate.ts'
import { TransportError } from '../errors.ts'
import { ENV_NAME } from './host-options.ts'

/** The oldest Node a worker runs on. */
export const MIN_NODE_MAJOR = 20

/** Quotes one argument for a POSIX shell: `'…'`, with each `'` written as `'\''`. */
export function shq(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`
}

/**
 * What `sh -c` runs for every remote command: it reads one line from its
 * stdin and runs it. POSIX has `read` take no byte past the line's end, so
 * what follows on stdin is left for the command the script starts.
 */
export const SCRIPT_READER = 'IFS= read -r script && eval "$script"'

/**
 * The command line of every remote command, for the remote user's login
 * shell (sshd runs it as `$SHELL -c <this>`; `ssh host <this>` alike): sh,
 * with {@link SCRIPT_READER}. It holds no newline, no backslash, no `!` and
 * no quote inside its single quotes, so sh, bash, dash, csh, tcsh and fish
 * all pass the same words to sh; `exec` leaves no login shell behind.
 */
export const REMOTE_COMMAND = `exec sh -c '${SCRIPT_READER}'`

/**
 * The first line of a remote command's stdin: `script` (a sh script built
 * from constant parts without line breaks and {@link shq}-quoted words) on
 * one line. A line break inside a quoted word becomes `'"$1"'`, `$1` being
 * set to a line break first, so values with line breaks arrive whole.
 */
export function scriptLine(script: string): Buffer {
  const line = script.includes('\n') ? `set -- "$(printf '\\n.')"; set -- "\${1%.}"; ${script.replace(/\n/g, `'"$1"'`)}` : script
  return Buffer.from(`${line}\n`, 'utf8')
}

/** What the probe found on the host. */
export interface HostFacts {
  /** The node command that runs workers (`node`, an absolute path, or the uploaded binary). */
  node: string
  version: string
  platform: string
  arch: string
  cores: number
  /** The bundle cache, absolute. */
  cacheDir: string
  /** Absolute path of the worker bundle in the cache. */
  workerFile: string
}

/** The result of running one command. */
export interface ExecResult {
  code: number | null
  stdout: Buffer
  stderr: string
}

/**
 * Runs one sh script on the host (no pty) as {@link REMOTE_COMMAND} with
 * {@link scriptLine}, feeding `input` (a buffer, or a file to stream) to its
 * stdin after that line, and resolves with its exit code and output once it
 * ends. Rejects only when the command could not be run at all (the channel
 * would not open); a command that fails resolves with its code.
 */
export type Exec = (script: string, input?: Buffer | { file: string }) => Promise<ExecResult>

/**
 * Runs on the host with its own node (CommonJS, old-Node-safe syntax so it
 * can report an old version instead of failing to parse): creates the cache
 * directory 0700 (tightening it if needed, refusing one owned by someone
 * else), checks the worker bundle's hash, and prints the facts as JSON.
 */
const PROBE_CORE = `
var os = require('os'), fs = require('fs'), path = require('path'), crypto = require('crypto');
var dir = process.argv[1], hash = process.argv[2], file;
if (!dir) dir = path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'farpipe');
else if (dir === '~' || dir.indexOf('~/') === 0) dir = path.join(os.homedir(), dir.slice(1));
var out = { node: process.version, platform: process.platform, arch: process.arch,
  cores: os.availableParallelism ? os.availableParallelism() : os.cpus().length, cacheDir: path.resolve(dir), worker: false };
try {
  fs.mkdirSync(out.cacheDir, { recursive: true, mode: 448 });
  var st = fs.statSync(out.cacheDir);
  if (process.getuid && st.uid !== process.getuid()) out.error = 'cache directory ' + out.cacheDir + ' belongs to uid ' + st.uid;
  else if (st.mode & 63) fs.chmodSync(out.cacheDir, 448);
  file = path.join(out.cacheDir, 'worker-' + hash + '.mjs');
  try { out.worker = crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex') === hash } catch (e) {}
} catch (e) { out.error = String(e && e.message || e) }
`
const PROBE_JS = PROBE_CORE + 'process.stdout.write(JSON.stringify(out));'

/** What precedes the facts the launcher writes to stderr (a line of its own). */
export const FACTS_MARK = '\u0000farpipe-facts '

/**
 * The probe and the first worker in one exec (each exec costs the login
 * shell's startup and a node start): the launcher makes the probe's checks,
 * writes the facts to stderr after {@link FACTS_MARK}, and when the worker
 * bundle is in place and node is new enough, imports it: this process
 * becomes the worker. Otherwise it exits, and the host is prepared the long
 * way. The import is built at run time so an old node can still parse this
 * and report its version.
 */
const LAUNCH_JS =
  PROBE_CORE +
  // Written with fs.writeSync, not process.stderr: that would make the stderr pipe non-blocking for good, and
  // with it the worker's descriptor 1 (the same pipe), where user code's fs.writeSync(1, …) would then fail with EAGAIN.
  `fs.writeSync(2, ${JSON.stringify(FACTS_MARK)} + JSON.stringify(out) + '\\n');
if (out.worker && !out.error && Number((/^v(\\d+)/.exec(process.version) || [])[1]) >= ${MIN_NODE_MAJOR}) new Function('u', 'return import(u)')(require('url').pathToFileURL(file).href);
`

/** Writes stdin to a file in the cache if its sha256 matches, atomically (temp file + rename), mode 0600. */
const UPLOAD_JS = `
var fs = require('fs'), crypto = require('crypto');
var file = process.argv[1], hash = process.argv[2], mode = parseInt(process.argv[3], 8), chunks = [];
process.stdin.on('data', function (c) { chunks.push(c) });
process.stdin.on('end', function () {
  var data = Buffer.concat(chunks);
  var got = crypto.createHash('sha256').update(data).digest('hex');
  if (got !== hash) { process.stderr.write('hash mismatch: got ' + got); process.exit(2) }
  var tmp = file + '.' + process.pid + '.tmp';
  fs.writeFileSync(tmp, data, { mode: mode });
  fs.renameSync(tmp, file);
  process.stdout.write('ok');
});
`

/**
 * Refuses a cache directory no worker could use, before connecting: node
 * cannot load an ES module from a path with a backslash in it (its file URL
 * would hold an encoded one, ERR_INVALID_MODULE_SPECIFIER), and no path can
 * hold a NUL.
 */
export function checkCacheDir(dir: string | undefined, host: string): void {
  if (dir === undefined) return
  const bad = dir.includes('\0') ? 'a NUL character' : dir.includes('\\') ? 'a backslash, and node cannot load ES modules from such a path' : undefined
  if (bad) throw new TypeError(`host ${JSON.stringify(host)}: cacheDir ${JSON.stringify(dir)} contains ${bad}`)
}

/** Finds node on the host (or ships ours), prepares the cache, uploads the worker bundle if missing. */
export async function bootstrap(
  exec: Exec,
  host: { name: string; node?: string; cacheDir?: string },
  worker: WorkerBundle,
  /** What the launcher's own probe found, when it reported (then the probe is not run again). */
  known?: Probe,
): Promise<HostFacts> {
  const wanted = wantedNode(host.node)
  let facts = known ?? (await probe(exec, host, wanted, worker.hash))
  if (!facts.ok && host.node === 'upload') facts = await probe(exec, host, await uploadNode(exec, host), worker.hash)
  if (!facts.ok) throw facts.error
  const f = facts.facts
  if (!facts.worker) {
    const r = await exec(`${shq(f.node)} -e ${shq(UPLOAD_JS)} ${shq(f.workerFile)} ${shq(worker.hash)} 600`, Buffer.from(worker.code))
    if (r.code !== 0 || r.stdout.toString() !== 'ok') {
      throw new TransportError(`uploading the worker to ${f.workerFile} on ${host.name} failed: ${r.stderr.trim() || `exit ${r.code}`}`, { host: host.name, reason: 'node' })
    }
  }
  return f
}

/** What a probe found: the facts and whether the worker bundle is in place, or why the host cannot run workers. */
export type Probe = { ok: true; facts: HostFacts; worker: boolean } | { ok: false; error: TransportError }

async function probe(exec: Exec, host: { name: string; cacheDir?: string }, node: string, hash: string): Promise<Probe> {
  return readProbe(await exec(`${shq(node)} -e ${shq(PROBE_JS)} ${shq(host.cacheDir ?? '')} ${shq(hash)}`), host, node, hash)
}

/** The node a host's workers run with before anything was uploaded: the one given, or `node` on the login PATH. */
export function wantedNode(node: string | undefined): string {
  return node && node !== 'upload' ? node : 'node'
}

/**
 * The script that starts the first worker of a host not yet prepared (see
 * {@link LAUNCH_JS}): on its stderr the facts, then, if the host is ready,
 * the worker on the channel's stdin and stdout. Quoted word by word, as
 * {@link workerCommand}.
 */
export function launchCommand(host: { node?: string; cacheDir?: string }, hash: string, env: Record<string, string> | undefined, nodeArgs: string[]): string {
  return nodeScript(env, [shq(wantedNode(host.node)), '--enable-source-maps', ...nodeArgs.map(shq), '-e', shq(LAUNCH_JS), shq(host.cacheDir ?? ''), shq(hash)])
}

/**
 * Reads what the launcher wrote before it became the worker, or exited: the
 * facts line on its stderr (`stdout` here), or, without one, its exit code
 * and stderr (node missing, or too old to run it).
 */
export function readProbe(r: ExecResult, host: { name: string }, node: string, hash: string): Probe {
  const hint = "install Node >= 20 there, give its path with { node: '/path/to/node' }, or pass { node: 'upload' } to ship this machine's node"
  if (r.code === 127 || /not found|No such file/i.test(r.stderr) && r.stdout.byteLength === 0) {
    return { ok: false, error: new TransportError(`node was not found on ${host.name} (looked for ${node} on the login PATH): ${hint}`, { host: host.name, reason: 'node' }) }
  }
  let parsed: { node: string; platform: string; arch: string; cores: number; cacheDir: string; worker: boolean; error?: string }
  try {
    parsed = JSON.parse(r.stdout.toString('utf8'))
  } catch {
    const said = (r.stderr || r.stdout.toString('utf8')).trim().slice(0, 500)
    return { ok: false, error: new TransportError(`${node} on ${host.name} could not run the probe (exit ${r.code}): ${said}; ${hint}`, { host: host.name, reason: 'node' }) }
  }
  const major = Number(/^v(\d+)/.exec(parsed.node)?.[1] ?? 0)
  if (major < MIN_NODE_MAJOR) {
    return { ok: false, error: new TransportError(`node on ${host.name} is ${parsed.node}, farpipe needs ${MIN_NODE_MAJOR} or later: ${hint}`, { host: host.name, reason: 'node' }) }
  }
  if (parsed.error) return { ok: false, error: new TransportError(`cannot prepare the cache on ${host.name}: ${parsed.error}`, { host: host.name, reason: 'node' }) }
  const facts: HostFacts = {
    node,
    version: parsed.node,
    platform: parsed.platform,
    arch: parsed.arch,
    cores: parsed.cores,
    cacheDir: parsed.cacheDir,
    workerFile: `${parsed.cacheDir}/worker-${hash}.mjs`,
  }
  return { ok: true, facts, worker: parsed.worker }
}

let ownNode: Promise<{ hash: string }> | undefined
/** The SHA-256 of this process's node binary (read once). */
function ownNodeHash(): Promise<{ hash: string }> {
  return (ownNode ??= new Promise((resolve, reject) => {
    const h = createHash('sha256')
    fs.createReadStream(process.execPath)
      .on('data', (c) => h.update(c))
      .on('end', () => resolve({ hash: h.digest('hex') }))
      .on('error', reject)
  }))
}

const UNAME: Record<string, string> = { Linux: 'linux', Darwin: 'darwin', FreeBSD: 'freebsd' }
const MACHINE: Record<string, string> = { x86_64: 'x64', amd64: 'x64', aarch64: 'arm64', arm64: 'arm64' }

/**
 * The shell commands that print the SHA-256 of a file (`"$f"`) as the first
 * 64 characters of their output, tried in turn: GNU and busybox coreutils,
 * then the BSD/macOS and OpenSSL spellings. Their stderr is dropped, so a
 * missing one just yields nothing.
 */
const SHA256_SHELL = '{ sha256sum "$f" || shasum -a 256 "$f" || openssl dgst -sha256 -r "$f"; } 2>/dev/null'

/**
 * Ships this process's node binary to the host's cache (once: it is named by
 * its hash and kept) when the host's OS and CPU match ours. Returns its path.
 *
 * A copy already there is used only if its SHA-256 is ours, computed on the
 * host by a tool that is not the copy itself: a binary that was swapped or
 * damaged in place (even one of the right size) must not get to run, not
 * even to say its own hash. When the host has no SHA-256 tool, the copy
 * cannot be checked and is uploaded again.
 */
async function uploadNode(exec: Exec, host: { name: string; cacheDir?: string }): Promise<string> {
  const { hash } = await ownNodeHash()
  const dirExpr = cacheDirShell(host.cacheDir)
  const name = `node-${process.version}-${hash.slice(0, 16)}`
  // One exec: what the machine is, the hash of our node if it is already there, and where the cache is.
  // The directory comes last and unterminated, so a name with a line break in it is read whole.
  const look = await exec(
    `umask 077; d=${dirExpr}; mkdir -p "$d" && chmod 700 "$d" && f="$d"/${shq(name)} && ` +
      `printf '%s\\n%s\\n%s' "$(uname -sm)" "$(if [ -f "$f" ]; then ${SHA256_SHELL}; fi)" "$d"`,
  )
  const out = look.stdout.toString('utf8')
  const [uname = '', sum = ''] = out.split('\n', 2)
  const dir = out.split('\n').slice(2).join('\n')
  if (look.code !== 0 || !dir) throw new TransportError(`cannot prepare the cache on ${host.name}: ${look.stderr.trim() || `exit ${look.code}`}`, { host: host.name, reason: 'node' })
  const [sys, machine] = uname.trim().split(/\s+/)
  const platform = UNAME[sys ?? ''] ?? sys
  const arch = MACHINE[machine ?? ''] ?? machine
  if (platform !== process.platform || arch !== process.arch) {
    throw new TransportError(`cannot upload node to ${host.name}: it is ${uname.trim()}, this machine is ${process.platform} ${process.arch}; install Node >= ${MIN_NODE_MAJOR} there`, { host: host.name, reason: 'node' })
  }
  const target = `${dir}/${name}`
  if (sum.slice(0, 64) !== hash) {
    // Streamed, not buffered: the binary is large. Written under a temp name, then moved into place (over a bad copy, if any).
    const r = await exec(`umask 077; cat > ${shq(target)}.tmp && chmod 700 ${shq(target)}.tmp && mv -f ${shq(target)}.tmp ${shq(target)} && echo ok`, { file: process.execPath })
    if (r.stdout.toString().trim() !== 'ok') throw new TransportError(`uploading node to ${target} on ${host.name} failed: ${r.stderr.trim() || `exit ${r.code}`}`, { host: host.name, reason: 'node' })
    // Just written by us through the authenticated channel: it may check its own bytes.
    const check = await exec(`${shq(target)} -e ${shq("process.stdout.write(require('crypto').createHash('sha256').update(require('fs').readFileSync(process.execPath)).digest('hex'))")}`)
    if (check.stdout.toString() !== hash) throw new TransportError(`the node uploaded to ${target} on ${host.name} does not match its hash`, { host: host.name, reason: 'node' })
  }
  return target
}

/** A shell expression for the cache directory: the given one (quoted; `~/` kept as $HOME), or the default. */
function cacheDirShell(dir: string | undefined): string {
  if (!dir) return `"\${XDG_CACHE_HOME:-$HOME/.cache}/farpipe"`
  if (dir === '~') return '"$HOME"'
  if (dir.startsWith('~/')) return `"$HOME"/${shq(dir.slice(2))}`
  return shq(dir)
}

/**
 * The script that starts one worker: exec'd, so the shell leaves and
 * signals reach node. Every word is built apart and quoted whole, so spaces,
 * quotes and line breaks inside a path or a value reach node unchanged, and
 * nothing in them is run by the remote shell. Throws a TypeError for an
 * environment variable name that is not `[A-Za-z_][A-Za-z0-9_]*`.
 */
export function workerCommand(facts: HostFacts, env: Record<string, string> | undefined, nodeArgs: string[]): string {
  return nodeScript(env, [shq(facts.node), '--enable-source-maps', ...nodeArgs.map(shq), shq(facts.workerFile)])
}

/** The exit code of a relay (see {@link relayCommand}) that found no worker, or whose worker closed the socket. */
export const RELAY_WORKER_GONE = 86

/**
 * A relay to a worker's resume socket (lib/worker/resume-socket.ts): node
 * joins the channel's stdin and stdout to the socket, for a new channel to
 * a worker whose connection dropped, where the transport cannot reach the
 * socket itself (a command host; an sshd that refuses stream-local
 * forwarding).
 *
 * It exits with {@link RELAY_WORKER_GONE} when the worker is gone (no
 * socket, the worker's pid, which the socket's name holds, not running, a
 * socket nobody listens on) and when the worker closes the socket: so the
 * caller tells a worker that ended from a connection that dropped again
 * (ssh exits 255 then) by the exit code alone, node on the host or not.
 */
export function relayCommand(facts: Pick<HostFacts, 'node'>, socket: string): string {
  const relay = `const s=require('net').connect(process.argv[1]);s.setNoDelay(true);process.stdin.pipe(s);s.pipe(process.stdout);s.on('error',e=>{process.stderr.write('farpipe relay: '+e.message+'\\n');process.exit(${RELAY_WORKER_GONE})});s.on('close',()=>process.exit(${RELAY_WORKER_GONE}))`
  const pid = /(?:^|\/)r-(\d+)-[0-9a-f]+\.sock$/.exec(socket)?.[1]
  const alive = `[ -S ${shq(socket)} ]${pid ? ` && kill -0 ${pid} 2>/dev/null` : ''}`
  const gone = `{ printf '%s\\n' ${shq(`farpipe relay: no worker listens at ${socket}`)} >&2; exit ${RELAY_WORKER_GONE}; }`
  return `${alive} || ${gone}; ${['exec', shq(facts.node), '-e', shq(relay), shq(socket)].join(' ')}`
}

/**
 * Moves the channel's stdout to descriptor 3 for the worker's frames, and
 * points descriptor 1 at the channel's stderr: what user code writes there
 * becomes the worker's log, not a frame (see lib/worker/main.ts).
 */
const FRAMES_TO_FD3 = 'exec 3>&1 1>&2;'

/**
 * `exec` of node's quoted words, with the frames on descriptor 3, after an
 * `export` of the environment when there is one. The variables are shell
 * assignments, not `env` words: `env` takes every word with an `=` for an
 * assignment, a node path such as `/opt/x=y/bin/node` included, and one
 * `export` expands all its values before it sets any.
 */
function nodeScript(env: Record<string, string> | undefined, node: string[]): string {
  const vars = Object.entries(env ?? {}).map(([k, v]) => {
    if (!ENV_NAME.test(k)) throw new TypeError(`environment variable name ${JSON.stringify(k)} is not a valid name (letters, digits and _, not starting with a digit)`)
    return `${k}=${shq(v)}`
  })
  return [FRAMES_TO_FD3, ...(vars.length > 0 ? [`export ${vars.join(' ')};`] : []), 'exec', ...node].join(' ')
}
