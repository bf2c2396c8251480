/**
 * The `farpipe` command's help texts: what `farpipe --help` and each
 * command's `--help` print, with the table of exit statuses (the statuses
 * themselves are in report.ts). Kept apart from the parser, which they
 * describe but do not drive.
 *
 * @module
 */

/** The exit statuses of `farpipe run` and `farpipe pipe` (`farpipe hosts` has its own, in {@link HOSTS_HELP}). */
export const EXIT_CODES = `Exit status:
  0    success, or stdout or stderr was closed by its reader (e.g. \`| head\`, \`2>&1 | head\`):
       the call is cancelled first
  1    the remote function threw (its message and remote stack go to stderr), the call timed out,
       or writing stdout failed otherwise than by its reader leaving (a full disk: the call is
       cancelled)
  2    usage error, bad module#export, a value the output format cannot carry, a line of stdin
       that does not parse or a stdin that cannot be read (the call is cancelled), or a
       host/transport error (unreachable host, unknown or changed host key, lost connection:
       the host is named)
  130  interrupted (Ctrl-C): the call is cancelled, its finally blocks run, then farpipe exits`

/** How to reach the hosts: shared by every command's help. */
const HOST_OPTIONS = `  -F, --ssh-config <file>  the SSH client config to read instead of ~/.ssh/config (as ssh -F);
                           -F /dev/null reads none
  --known-hosts <policy>   how host keys are checked (as ssh -o StrictHostKeyChecking=...):
                           strict: only keys already in known_hosts; accept-new: a host's first
                           key is accepted and recorded, a changed key is still refused; off: no
                           check. Default: StrictHostKeyChecking of the SSH config, else strict`

/** The options of `farpipe run` (`stdin` false) and `farpipe pipe`. */
function callOptions(stdin: boolean): string {
  return `Options:
  --host <dest>            run on this SSH destination (repeatable; user@host, ssh://host:port,
                           an alias of the SSH config). Default: local worker processes
${HOST_OPTIONS}
  --workers <n>            worker processes per host (default 1: the command makes one call)
  --timeout <ms>           fail the call after this many milliseconds
  --idle-timeout <ms>      fail the call when nothing moves for this many milliseconds
  --high-water-mark <n>    items each side queues at most (default 4096)
${
  stdin
    ? `  --in <format>            how stdin is read: json, a JSON value a line (default); devalue, a
                           devalue.stringify line (see --out); bytes, raw chunks, each a Uint8Array
`
    : ''
}  --out <format>           how items are written to stdout: json, a JSON line each (default);
                           devalue, a devalue.stringify line each (BigInt, Map, Set, Date,
                           undefined, typed arrays, cycles); bytes, the bytes of Uint8Array items
                           as they are
  --bytes                  ${stdin ? 'both sides raw bytes: --in bytes --out bytes' : 'the same as --out bytes'}
  --format json|devalue    ${stdin ? 'both sides that format: --in F --out F' : 'the same as --out json or --out devalue'}
  -h, --help               this help`
}

export const MAIN_HELP = `farpipe: a Unix pipe through a remote function.

Usage:
  farpipe run  <module#export> [args...] [options]      print what the function yields (or returns)
  farpipe pipe <module#export> [args...] - [options]    stream stdin into the '-' argument
  farpipe hosts <dest...> [options]                     check hosts: reachable, node, cores, cache

The module (TypeScript or JavaScript, relative to the working directory)
exports the function, made with remote(). Arguments that parse as JSON are
JSON (\`10\`, \`"10"\`, \`[1,2]\`), others are strings.

Examples:
  farpipe run tasks.ts#fibonacci 10
  printf '1\\n2\\n3\\n' | farpipe pipe tasks.ts#movingAverage - 3
  farpipe pipe tasks.ts#gzip - --bytes --host gpu-1 < big.tar > big.tar.gz
  farpipe pipe tasks.ts#countBytes - --in bytes --out json < big.tar
  farpipe run tasks.ts#endless | head -n 3
  farpipe hosts gpu-1 gpu-2

Options (-F and --known-hosts for every command, the others for run and pipe):
  --host <dest>            run on this SSH destination (repeatable); default: local workers
  -F, --ssh-config <file>  the SSH config to read instead of ~/.ssh/config
  --known-hosts <policy>   how host keys are checked: strict, accept-new or off
  --in <format>            how stdin is read (pipe): json (default), devalue or bytes
  --out <format>           how items are written to stdout: json (default), devalue or bytes
  --bytes, --format <f>    both sides at once: bytes, or json or devalue lines

Run \`farpipe <command> --help\` for all of a command's options.

${EXIT_CODES.replace('Exit status:', 'Exit status of run and pipe (farpipe hosts --help gives those of hosts):')}
`

export const RUN_HELP = `Usage: farpipe run <module#export> [args...] [options]

Calls the function once and writes each item it yields (or what it returns)
to stdout, one line per item. A function that returns a ReadableStream, or
yields one as an item, has that stream's chunks written as items (with
--out bytes, its bytes). Remote logs go to stderr as [host/worker] line.

${callOptions(false)}

${EXIT_CODES}
`

export const PIPE_HELP = `Usage: farpipe pipe <module#export> [args...] - [args...] [options]

Like run, with stdin streamed into the argument given as '-' (exactly once):
one item per line (JSON, or devalue with --in devalue; empty lines are
skipped), or raw chunks with --in bytes. Each side has its own format:
--in bytes --out json reads bytes and writes JSON lines. Stdin is read only
as fast as the remote function consumes it; stdout is written only as fast
as it is read.

${callOptions(true)}

${EXIT_CODES}
`

export const HOSTS_HELP = `Usage: farpipe hosts <dest...> [options]

Opens a pool on each host, all at once, and prints a line per host in the
order given: whether it is reachable (or why not), its node version,
platform/arch, worker count and cache dir. A destination is what --host of
farpipe run takes (user@host, ssh://host:port, an alias of the SSH config).

Options:
${HOST_OPTIONS}
  --workers <n>            worker processes to start on each host (default: one per core)
  -h, --help               this help

Exit status (the worst among the hosts):
  0    every host is reachable and answered the probe
  1    a host is reachable, but the probe failed there (it threw, timed out after
       30 s, or lost its connection): its line says why
  2    usage error, or a host is unreachable (no connection, login, host key or node
       there): its line says why
  130  interrupted (Ctrl-C)
`
