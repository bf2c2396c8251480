// Running the `farpipe` command as a user runs it, for the CLI specs:
// `node dist/cli/main.js ...` from spec/fixtures (so the fixtures import
// `farpipe` from this package). Needs `npm run build` first.
import { spawn, type ChildProcess } from 'node:child_process'
import type { Socket } from 'node:net'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const bin = path.join(root, 'dist/cli/main.js')
export const fixtures = path.join(root, 'spec/fixtures')

/** How the command ended, and what it printed. */
export interface Done {
  code: number | null
  stdout: Buffer
  stderr: string
}

/** Spawns the command; `stdin` is a string or bytes (through a pipe), a file descriptor, a socket, or nothing (closed). */
export function start(args: string[], env: NodeJS.ProcessEnv, stdin?: string | Buffer | number | Socket): ChildProcess {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: fixtures,
    env: { ...process.env, ...env },
    stdio: [typeof stdin === 'number' || (typeof stdin === 'object' && !Buffer.isBuffer(stdin)) ? stdin : 'pipe', 'pipe', 'pipe'],
  })
  if (typeof stdin === 'string' || Buffer.isBuffer(stdin)) child.stdin!.end(stdin)
  else if (stdin === undefined) child.stdin!.end()
  return child
}

/** Collects the child's stdout and stderr until it has closed both. */
export function finish(child: ChildProcess): Promise<Done> {
  const out: Buffer[] = []
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => out.push(d))
  child.stderr?.on('data', (d: Buffer) => (stderr += d))
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr })))
}

/** Runs the command to its end. */
export const farpipe = (args: string[], env: NodeJS.ProcessEnv = {}, stdin?: string | Buffer | number) => finish(start(args, env, stdin))
/** The non-empty lines of an output. */
export const lines = (b: Buffer) => b.toString().split('\n').filter((l) => l !== '')
