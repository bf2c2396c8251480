/**
 * Errors farpipe raises. Every one is a {@link FarpipeError} with a string
 * `code` (codes survive serialization and logs better than classes do) and,
 * where there is one, a real `cause`.
 *
 * @module
 */

/** The string codes of farpipe's errors, one per subclass. */
export type FarpipeErrorCode =
  | 'ERR_FARPIPE'
  | 'ERR_REMOTE'
  | 'ERR_TRANSPORT'
  | 'ERR_PROTOCOL'
  | 'ERR_SERIALIZE'
  | 'ERR_TIMEOUT'
  | 'ERR_CANCEL'
  | 'ERR_HOST_KEY'
  | 'ERR_MAP'

/** Options every farpipe error accepts. */
export interface FarpipeErrorOptions {
  /** The error that led to this one. */
  cause?: unknown
}

/** The base class of every error farpipe raises. */
export class FarpipeError extends Error {
  /**
   * The class's name, written out. Bundlers rename classes (esbuild names a
   * class that refers to itself `_FarpipeError`; a minifier names it `t`),
   * so `constructor.name` is not the name a message should show. Each
   * subclass sets its own.
   */
  static readonly className: string = 'FarpipeError'

  /** A stable string code, one per subclass (`ERR_REMOTE`, `ERR_TIMEOUT`, ...). */
  readonly code: FarpipeErrorCode = 'ERR_FARPIPE'

  constructor(message: string, options?: FarpipeErrorOptions) {
    super(message, options)
  }

  /** The class name (`RemoteError`, `TimeoutError`, ...), the same in a bundled or minified build. */
  override get name(): string {
    const ctor = this.constructor as typeof FarpipeError
    // A subclass of the user's own that does not set className is named as any class is.
    return Object.hasOwn(ctor, 'className') ? ctor.className : ctor.name
  }

  /**
   * Turns anything thrown into a FarpipeError: farpipe errors are returned
   * as they are, anything else becomes the `cause` of a new one.
   */
  static from(reason: unknown): FarpipeError {
    if (reason instanceof FarpipeError) return reason
    const message = reason instanceof Error ? reason.message : String(reason)
    return new FarpipeError(message, { cause: reason })
  }
}

/** Where a remote error happened, as much as the caller knows. */
export interface RemoteErrorOrigin {
  /** The name of the error the remote function threw: its class (`TypeError`, `MyError`, ...), or `typeof` what was thrown when it was not an Error (`string`). */
  errorName: string
  /** The stack trace as the remote printed it. */
  remoteStack: string
  /** How many items the call had yielded before it failed. */
  index: number
  /** The host the call ran on (`local` for the embedded pool). */
  host: string
  /** The index of the worker process on that host. */
  worker: number
  /**
   * Where `run()` was called, as stack lines (`    at …`): the local half of
   * the stack, so it shows which call in your code failed.
   */
  callSite?: string
}

/**
 * The remote function threw. `cause` is the remote error rebuilt on this
 * side (with its own `cause` chain); `errorName`, `remoteStack` and `index`
 * say what it was and how far the call had got. Its `stack` is where your
 * code called `run()`, then the remote stack.
 */
export class RemoteError extends FarpipeError implements RemoteErrorOrigin {
  static override readonly className: string = 'RemoteError'
  override readonly code = 'ERR_REMOTE'
  /** The name of the error the remote function threw (`TypeError`, `MyError`, ...). */
  readonly errorName: string
  /** The stack trace as the remote printed it. */
  readonly remoteStack: string
  /** How many items the call had yielded before it failed. */
  readonly index: number
  /** The host the call ran on (`local` for the embedded pool). */
  readonly host: string
  /** The index of the worker process on that host. */
  readonly worker: number

  constructor(message: string, origin: RemoteErrorOrigin, options?: FarpipeErrorOptions) {
    super(message, options)
    this.errorName = origin.errorName
    this.remoteStack = origin.remoteStack
    this.index = origin.index
    this.host = origin.host
    this.worker = origin.worker
    // The frames of this side are the library's own (a frame arrived); where run() was called says more.
    const local = origin.callSite ? `${this.name}: ${this.message}\n${origin.callSite}` : this.stack
    this.stack = origin.remoteStack ? `${local}\n    --- on ${origin.host}/${origin.worker} ---\n${origin.remoteStack}` : local
  }
}

/** What kind of transport failure: for programs (the message says it for people). */
export type TransportFailure = 'dns' | 'refused' | 'unreachable' | 'timeout' | 'auth' | 'node' | 'closed' | 'lost' | 'resume'

/** Options of a {@link TransportError}. */
export interface TransportErrorOptions extends FarpipeErrorOptions {
  /** The host it concerns, as the pool names it. */
  host?: string
  /** What kind of failure. */
  reason?: TransportFailure
}

/**
 * The connection to a worker failed: the process died, the channel closed,
 * the host went silent, or it could not be reached, logged into or prepared.
 */
export class TransportError extends FarpipeError {
  static override readonly className: string = 'TransportError'
  override readonly code = 'ERR_TRANSPORT'
  /** The host it concerns, when known. */
  readonly host: string | undefined
  /** What kind of failure, when known: `dns`, `refused`, `unreachable`, `timeout`, `auth`, `node` (missing or too old), `closed`, `lost`, `resume` (a dropped connection that could not be resumed within `resumeWindow`). */
  readonly reason: TransportFailure | undefined

  constructor(message: string, options?: TransportErrorOptions) {
    super(message, options)
    this.host = options?.host
    this.reason = options?.reason
  }
}

/** The two sides disagreed about the wire format (a bad frame, a frame too large, a truncated stream). */
export class ProtocolError extends FarpipeError {
  static override readonly className: string = 'ProtocolError'
  override readonly code = 'ERR_PROTOCOL'
}

/** A value could not be sent. The message names the path to it (`args[0].bad: function`). */
export class SerializeError extends FarpipeError {
  static override readonly className: string = 'SerializeError'
  override readonly code = 'ERR_SERIALIZE'
  /** The path to the value that could not be sent, e.g. `args[1].user.save`. */
  readonly path: string

  constructor(message: string, path: string, options?: FarpipeErrorOptions) {
    super(message, options)
    this.path = path
  }
}

/** A call ran longer than its `timeout`, or saw no item for `idleTimeout`. */
export class TimeoutError extends FarpipeError {
  static override readonly className: string = 'TimeoutError'
  override readonly code = 'ERR_TIMEOUT'
}

/** A call was cancelled (`cancel()`, `break` out of `for await`, or the pool closed). */
export class CancelError extends FarpipeError {
  static override readonly className: string = 'CancelError'
  override readonly code = 'ERR_CANCEL'
}

/** A host presented a key that is unknown or differs from the one in known_hosts. */
export class HostKeyError extends FarpipeError {
  static override readonly className: string = 'HostKeyError'
  override readonly code = 'ERR_HOST_KEY'
  /** The SHA256 fingerprint of the key the host presented, as OpenSSH prints it. */
  readonly fingerprint: string

  constructor(message: string, fingerprint: string, options?: FarpipeErrorOptions) {
    super(message, options)
    this.fingerprint = fingerprint
  }
}

/**
 * An item of `Pool.map` failed: its call's error is the `cause`, `index`
 * says which item of the source it was (from 0).
 */
export class MapError extends FarpipeError {
  static override readonly className: string = 'MapError'
  override readonly code = 'ERR_MAP'
  /** The item's position in the source, from 0. */
  readonly index: number
  /** How many times the item was run (2 when it was run again after its host was lost). */
  readonly attempts: number

  constructor(message: string, index: number, attempts: number, options?: FarpipeErrorOptions) {
    super(message, options)
    this.index = index
    this.attempts = attempts
  }
}

/**
 * Error classes that are rebuilt as themselves when they cross the wire. Any
 * other name arrives as a plain `Error` whose `name` says what it was: the
 * receiver never constructs a class just because the sender named it.
 */
export const wireErrorClasses: Readonly<Record<string, new (message: string) => Error>> = {
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
}

/** farpipe's own error classes that can cross the wire (a remote timeout, a remote serialize failure). */
export const wireFarpipeErrors = {
  FarpipeError,
  TransportError,
  ProtocolError,
  SerializeError,
  TimeoutError,
  CancelError,
} as const
