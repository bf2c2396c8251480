/**
 * The payload of an error frame the worker sends, for a whole call or for
 * one of the streams it sends: the error, how many items went before it,
 * and whether farpipe itself failed. An error must always get through: one
 * that cannot be sent, or is too large for a frame, goes as its name and
 * the start of its message.
 *
 * @module
 */
import { valueBytes } from '../codec/values.ts'
import { ProtocolError } from '../errors.ts'
import type { ErrorPayload } from '../wire/payloads.ts'

/**
 * The payload of an error frame: the error, the items sent before it, and
 * whether farpipe itself failed. One larger than `maxPayload` (the largest
 * payload a frame may carry) falls back to the error's name and message.
 */
export function errorPayload(error: unknown, index: number, runtime: boolean, maxPayload: number): Buffer {
  const body: ErrorPayload = { error, index, runtime: runtime || error instanceof ProtocolError }
  let payload: Buffer | undefined
  try {
    payload = valueBytes(body, 'error')
  } catch {
    payload = undefined
  }
  if (!payload || payload.byteLength > maxPayload) {
    // An error must always get through: fall back to its name and the start of its message.
    const e = error instanceof Error ? error : undefined
    const plain = new Error(`${e ? e.name : typeof error}: ${String(e ? e.message : error).slice(0, 4096)}`)
    payload = valueBytes({ error: plain, index, runtime }, 'error')
  }
  return payload
}
