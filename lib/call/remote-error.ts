/**
 * How a remote failure reaches the caller: the error frame's report,
 * checked, and the `RemoteError` it becomes, whose stack starts where
 * `run()` was called (captured with every call, formatted only when shown).
 *
 * @module
 */
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { readValue } from '../codec/values.ts'
import { FarpipeError, ProtocolError, RemoteError } from '../errors.ts'
import { describe } from '../options.ts'
import type { Frame } from '../wire/frame.ts'
import type { ErrorPayload } from '../wire/payloads.ts'

/** The library's own directories (built, and its sources, which source maps point to): their frames are left out of call sites. */
const LIB_DIRS = ((root) => [path.join(root, 'dist') + path.sep, path.join(root, 'lib') + path.sep])(
  // This file is lib/call/site.ts, built as dist/call/site.js: the package's root is three levels up.
  path.dirname(path.dirname(path.dirname(fileURLToPath(import.meta.url)))),
)

/**
 * Where `run()` was called: a stack captured now, formatted only if an error
 * needs it (V8 formats `stack` on first access, so a call that succeeds pays
 * for the capture alone).
 */
export function captureCallSite(below: Function): { stack?: string } {
  const holder: { stack?: string } = {}
  Error.captureStackTrace(holder, below)
  return holder
}

/** The stack lines of a call site outside the library, or undefined. */
function callSiteLines(site: { stack?: string } | undefined): string | undefined {
  const lines = site?.stack?.split('\n').slice(1).filter((l) => !LIB_DIRS.some((d) => l.includes(d)))
  return lines && lines.length > 0 ? lines.join('\n') : undefined
}

/** The payload of an error frame of call `callId` from worker `where`, checked: anything but an error report is a protocol error. */
export function errorReport(f: Frame, where: string, callId: number): ErrorPayload {
  const body = readValue(f.payload) as ErrorPayload
  if (typeof body !== 'object' || body === null || !('error' in body) || typeof body.index !== 'number') {
    throw new ProtocolError(`worker ${where} sent an error frame for stream ${f.stream} of call ${callId} whose payload is not an error report (${describe(body)})`)
  }
  return body
}

/** Where a call ran and was made, for the error a remote failure gives. */
export interface FailedCall {
  /** The function's name. */
  label: string
  host: string
  worker: number
  /** `host/worker`, or undefined when the session is gone. */
  where: string | undefined
  /** Where `run()` was called (see {@link captureCallSite}). */
  callSite: { stack?: string } | undefined
}

/**
 * The error a remote failure gives: of the call, or (`where`: 'a stream
 * sent by') of one of its nested streams. farpipe's own errors raised on the
 * worker (a value that could not be sent) arrive as themselves.
 */
export function remoteError(body: ErrorPayload, call: FailedCall, where = 'in'): Error {
  const e = body.error
  if (body.runtime && e instanceof FarpipeError) return e
  const isError = e instanceof Error
  const remoteName = isError ? e.name : typeof e
  const message = isError ? e.message : String(e)
  return new RemoteError(
    `${remoteName}: ${message} (${where} ${call.label} on ${call.where ?? 'its worker'}, after ${body.index} item${body.index === 1 ? '' : 's'})`,
    {
      errorName: remoteName,
      remoteStack: isError ? String(e.stack ?? '') : '',
      index: body.index,
      host: call.host,
      worker: call.worker,
      callSite: callSiteLines(call.callSite),
    },
    { cause: e },
  )
}
