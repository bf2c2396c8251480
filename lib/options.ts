/**
 * Options and limits: typed objects with documented defaults, validated
 * where they enter (a bad value is refused with what was expected and what
 * arrived).
 *
 * @module
 */

/** Options of one call, given by `remote(fn, options)` and `Pool.with(options)`. */
export interface CallOptions {
  /** Aborting this signal cancels the call; `result` rejects with the signal's reason. */
  signal?: AbortSignal
  /** Milliseconds for the whole call; then it is cancelled and fails with `TimeoutError`. @default undefined (none) */
  timeout?: number
  /** Milliseconds without an item in either direction; then it is cancelled and fails with `TimeoutError`. @default undefined (none) */
  idleTimeout?: number
  /**
   * Items queued at most by the receiving side of each stream of the call:
   * the output (here) and each streamed argument (on the worker). The
   * remote producer runs at most this far ahead of the consumer. Several
   * batches (of up to 1024 items) fit, so both sides work at once.
   * @default 4096
   */
  highWaterMark?: number
  /** Bytes queued at most by the receiving side of each stream (plus one item). @default 8388608 (8 MiB) */
  highWaterBytes?: number
  /**
   * Milliseconds a cancelled call (a `break`, `cancel()`, an abort or a
   * timeout) waits for the worker to confirm that the function stopped and
   * its `finally` blocks ran. A function stuck between yields cannot; after
   * this grace the call settles anyway and its worker is replaced.
   * @default 5000
   */
  cancelGrace?: number
}

/** Call options with every default filled in. */
export interface ResolvedCallOptions {
  signal: AbortSignal | undefined
  timeout: number | undefined
  idleTimeout: number | undefined
  highWaterMark: number
  highWaterBytes: number
  cancelGrace: number
}

/** The defaults of {@link CallOptions}. */
export const callDefaults = {
  highWaterMark: 4096,
  highWaterBytes: 8 * 1024 * 1024,
  cancelGrace: 5000,
} as const

/** The longest delay a timer takes (Node fires longer ones after 1 ms). */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Wire limits, the same for every call of a pool. */
export interface Limits {
  /** The largest frame either side accepts; a larger item fails with `SerializeError`. @default 67108864 (64 MiB) */
  maxFrameBytes: number
  /** A batch of items is cut into frames of about this size. @default 262144 (256 KiB), or a quarter of maxFrameBytes if that is less */
  softFrameBytes: number
}

/** The defaults of {@link Limits}. */
export const limitDefaults: Limits = {
  maxFrameBytes: 64 * 1024 * 1024,
  softFrameBytes: 256 * 1024,
}

/** Fills in and checks wire limits. */
export function resolveLimits(limits: Partial<Limits> = {}): Limits {
  const l = { ...limitDefaults, ...limits }
  // A smaller frame limit brings the batch size down with it, unless given.
  if (limits.softFrameBytes === undefined) l.softFrameBytes = Math.min(limitDefaults.softFrameBytes, Math.floor(l.maxFrameBytes / 4))
  checkOptional('limits.maxFrameBytes', l.maxFrameBytes, 64 * 1024)
  checkOptional('limits.softFrameBytes', l.softFrameBytes, 1024)
  if (l.maxFrameBytes > 0xffffffff) throw new RangeError(`option limits.maxFrameBytes must be at most ${0xffffffff}, got ${l.maxFrameBytes}`)
  if (l.softFrameBytes > l.maxFrameBytes) {
    throw new RangeError(`option limits.softFrameBytes (${l.softFrameBytes}) must not exceed limits.maxFrameBytes (${l.maxFrameBytes})`)
  }
  return l
}

/** Merges call options, later ones winning, and checks them. */
export function resolveCallOptions(...layers: (CallOptions | undefined)[]): ResolvedCallOptions {
  const o: CallOptions = {}
  for (const layer of layers) {
    if (!layer) continue
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) (o as Record<string, unknown>)[k] = v
  }
  checkOptional('timeout', o.timeout, 0, MAX_TIMER_MS)
  checkOptional('idleTimeout', o.idleTimeout, 0, MAX_TIMER_MS)
  checkOptional('cancelGrace', o.cancelGrace, 0, MAX_TIMER_MS)
  checkOptional('highWaterMark', o.highWaterMark, 1)
  checkOptional('highWaterBytes', o.highWaterBytes, 1)
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) {
    throw new TypeError(`option signal must be an AbortSignal, got ${describe(o.signal)}`)
  }
  return {
    signal: o.signal,
    timeout: o.timeout,
    idleTimeout: o.idleTimeout,
    highWaterMark: Math.floor(o.highWaterMark ?? callDefaults.highWaterMark),
    highWaterBytes: Math.floor(o.highWaterBytes ?? callDefaults.highWaterBytes),
    cancelGrace: o.cancelGrace ?? callDefaults.cancelGrace,
  }
}

/** Checks that an optional option is a finite number of at least `min` (and at most `max`, when given: a timer's limit, say). */
export function checkOptional(name: string, value: unknown, min: number, max = Infinity): void {
  if (value === undefined) return
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new RangeError(`option ${name} must be a finite number >= ${min}, got ${describe(value)}`)
  }
  if (value > max) {
    throw new RangeError(`option ${name} must be at most ${max}${max === MAX_TIMER_MS ? ' ms (about 24.8 days, the longest timer Node.js can set)' : ''}, got ${value}`)
  }
}

/** A short description of a value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? `an object (${Object.getPrototypeOf(value)?.constructor?.name ?? 'null prototype'})` : typeof value
}
