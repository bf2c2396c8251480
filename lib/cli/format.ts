/**
 * Items as lines: how an item is written to stdout (a JSON or devalue line,
 * or raw bytes) and a line of stdin read back, and what a line cannot carry.
 *
 * @module
 */
import * as devalue from 'devalue'
import type { Format, LineFormat } from './args.ts'

/** An item the chosen output cannot carry, or a line of stdin that does not parse: exit status 2. */
export class FormatError extends Error {
  override get name(): string {
    return 'FormatError'
  }
}

/** A property key as a path step: `.name`, or `["odd key"]`. */
const step = (key: string) => (/^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`)

/** What JSON would lose in `value`, as `path: type`, or undefined when JSON carries it whole. */
export function jsonTrouble(value: unknown, at: string, seen = new Set<object>()): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined
    case 'number':
      return Number.isFinite(value) ? undefined : `${at}: ${value}`
    case 'bigint':
      return `${at}: BigInt`
    case 'undefined':
      return `${at}: undefined`
    case 'function':
    case 'symbol':
      return `${at}: ${typeof value}`
  }
  if (value === null) return undefined
  const obj = value as object
  if (seen.has(obj)) return `${at}: a cycle`
  if (ArrayBuffer.isView(obj) || obj instanceof ArrayBuffer) return `${at}: ${obj.constructor.name} (bytes)`
  if (obj instanceof ReadableStream) return `${at}: a ReadableStream`
  if (obj instanceof Map || obj instanceof Set) return `${at}: ${obj.constructor.name}`
  seen.add(obj)
  try {
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        const t = jsonTrouble(obj[i], `${at}[${i}]`, seen)
        if (t) return t
      }
      return undefined
    }
    // Objects that say how to be JSON (Date) are taken at their word.
    if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') return undefined
    const proto = Object.getPrototypeOf(obj)
    if (proto !== Object.prototype && proto !== null) return `${at}: instance of ${obj.constructor?.name ?? 'a class'}`
    for (const [k, v] of Object.entries(obj)) {
      const t = jsonTrouble(v, `${at}${step(k)}`, seen)
      if (t) return t
    }
    return undefined
  } finally {
    seen.delete(obj)
  }
}

/**
 * Where a ReadableStream sits inside `value` (`item.body`, `item.parts[2]`),
 * or undefined when none does. Looked for in every format, before anything
 * else: no line can carry a stream, whatever else the item holds.
 */
export function streamPath(value: unknown, at: string, seen = new Set<object>()): string | undefined {
  if (value === null || typeof value !== 'object') return undefined
  if (value instanceof ReadableStream) return at
  if (seen.has(value) || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return undefined
  seen.add(value)
  let inner: [string, unknown][]
  if (Array.isArray(value)) inner = value.map((v, i) => [`${at}[${i}]`, v])
  else if (value instanceof Map) inner = [...value].map(([k, v]) => [`${at}.get(${typeof k === 'string' ? JSON.stringify(k) : String(k)})`, v])
  else if (value instanceof Set) inner = [...value].map((v) => [`${at} (a Set)`, v])
  else inner = Object.entries(value).map(([k, v]) => [`${at}${step(k)}`, v])
  for (const [where, v] of inner) {
    const found = streamPath(v, where, seen)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * One item as it goes to stdout: a line, or (with `--out bytes`) the bytes
 * themselves. `where` names it in messages: `item 3`, `the result`,
 * `chunk 0 of item 2 (a stream)`. An item that is a stream itself never
 * gets here: the command writes its chunks as items (see main.ts).
 */
export function encodeItem(value: unknown, where: string, format: Format): string | Uint8Array {
  const stream = streamPath(value, 'item')
  if (stream !== undefined) {
    throw new FormatError(
      `${where} holds a ReadableStream at ${stream}: the command writes a stream only when it is the item itself or what the function returns ` +
        '(its chunks then become the items); yield the stream itself or its chunks, or read such items from a script with the library (p.run())',
    )
  }
  if (format === 'bytes') {
    if (value instanceof Uint8Array) return value
    if (value instanceof ArrayBuffer) return new Uint8Array(value)
    throw new FormatError(`${where} is ${kindOf(value)}, not bytes: with --out bytes (or --bytes) the function must yield Uint8Array chunks (--out json writes JSON lines)`)
  }
  if (format === 'devalue') {
    try {
      return devalue.stringify(value) + '\n'
    } catch (err) {
      const at = (err as { path?: unknown }).path
      throw new FormatError(`${where} cannot be written as a devalue line${typeof at === 'string' && at !== '' ? ` (at item${at})` : ''}: ${(err as Error).message}`, { cause: err })
    }
  }
  const trouble = jsonTrouble(value, 'item')
  if (trouble) {
    // Only on this failing path: whether the other line format would do, so as not to send the user to it for nothing.
    let devalueCarries = true
    try {
      devalue.stringify(value)
    } catch {
      devalueCarries = false
    }
    const instead = devalueCarries ? 'use --out devalue (one devalue.stringify line per item) or, for bytes, --out bytes (raw chunks)' : 'no line format carries it (nor does --out devalue): yield plain data instead, e.g. its fields'
    throw new FormatError(`${where} cannot be written as a JSON line (${trouble}); ${instead}`)
  }
  return JSON.stringify(value) + '\n'
}

/** What a value is, for messages: users' classes by name, never one of the library's own. */
function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (typeof value !== 'object') return typeof value
  if (Array.isArray(value)) return 'an array'
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null ? 'an object' : `an instance of ${value.constructor?.name ?? 'a class'}`
}

/** Parses one line of stdin (numbered from 1, for messages). */
export function decodeLine(line: string, n: number, format: LineFormat): unknown {
  try {
    return format === 'devalue' ? devalue.parse(line) : JSON.parse(line)
  } catch (err) {
    throw new FormatError(`stdin line ${n} is not ${format === 'devalue' ? 'a devalue.stringify line' : 'JSON'}: ${(err as Error).message} (got ${JSON.stringify(line.slice(0, 80))})`)
  }
}
