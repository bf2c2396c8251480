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
  if (obj instanceof ReadableStream) return `${at}: a ReadableStream (a stream nested in a value; read it from a script with p.run())`
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
      const t = jsonTrouble(v, /^[A-Za-z_$][\w$]*$/.test(k) ? `${at}.${k}` : `${at}[${JSON.stringify(k)}]`, seen)
      if (t) return t
    }
    return undefined
  } finally {
    seen.delete(obj)
  }
}

/**
 * One item as it goes to stdout: a line, or (with `--out bytes`) the bytes
 * themselves. `where` names it in messages (`item 3`).
 */
export function encodeItem(value: unknown, where: string, format: Format): string | Uint8Array {
  if (format === 'bytes') {
    if (value instanceof Uint8Array) return value
    if (value instanceof ArrayBuffer) return new Uint8Array(value)
    const type = value === null ? 'null' : typeof value === 'object' ? `instance of ${value.constructor?.name ?? 'Object'}` : typeof value
    throw new FormatError(`${where} is ${type}, not bytes: with --out bytes (or --bytes) the function must yield Uint8Array chunks (--out json writes JSON lines)`)
  }
  const trouble = jsonTrouble(value, 'item')
  if (format === 'devalue' && !trouble?.includes('ReadableStream')) return devalue.stringify(value) + '\n'
  if (trouble) {
    if (trouble.includes('ReadableStream')) throw new FormatError(`${where} cannot be written as a line: ${trouble}`)
    throw new FormatError(
      `${where} cannot be written as a JSON line (${trouble}); use --out devalue (one devalue.stringify line per item)` +
        ' or, for bytes, --out bytes (raw chunks)',
    )
  }
  return JSON.stringify(value) + '\n'
}

/** Parses one line of stdin (numbered from 1, for messages). */
export function decodeLine(line: string, n: number, format: LineFormat): unknown {
  try {
    return format === 'devalue' ? devalue.parse(line) : JSON.parse(line)
  } catch (err) {
    throw new FormatError(`stdin line ${n} is not ${format === 'devalue' ? 'a devalue.stringify line' : 'JSON'}: ${(err as Error).message} (got ${JSON.stringify(line.slice(0, 80))})`)
  }
}
