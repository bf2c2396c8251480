// What the session specs share: a session whose worker said hello, with no
// worker behind it, to feed frames to by hand.
import type { LogEntry } from 'farpipe'
import { Session } from '../lib/session.ts'
import { encodeFrame, Kind, PROTOCOL_VERSION } from '../lib/wire/frame.ts'
import { payloads } from '../lib/wire/payloads.ts'

/** A session whose worker said hello, over a channel that keeps nothing; its log entries, and its death. */
export function helloSession() {
  const entries: LogEntry[] = []
  const session = new Session({ host: 'h', worker: 0, workers: 1, onLog: (e) => void entries.push(e) })
  let died: Error | undefined
  session.onDeath = (e) => (died = e)
  session.start({ write: () => {}, end: () => {}, destroy: () => {} })
  session.data(encodeFrame(Kind.hello, 0, 0, payloads.json({ v: PROTOCOL_VERSION, node: 'v20', pid: 1, platform: 'linux', arch: 'x64', cacheDir: '/x' })))
  const call = { frame: () => {}, lost: () => {} }
  return { session, entries, call, died: () => died }
}
