/**
 * SSH destinations: how `user@host:port`, `ssh://…` and bracketed IPv6
 * addresses split into user, host and port, as OpenSSH reads them. What
 * ssh would take for an option, and whitespace or control characters, are
 * refused.
 *
 * @module
 */
import { describe } from '../options.ts'

/**
 * Splits a destination into user, host and port, as OpenSSH reads
 * `ssh DEST` and `ProxyJump` entries: `host`, `user@host`, `host:port`,
 * `ssh://[user@]host[:port][/]`, IPv6 in brackets (`[::1]:2222`,
 * `user@[::1]`) or bare when there is no port (`::1`). The user is what
 * comes before the last `@`. Throws a TypeError naming the input and what
 * is wrong with it.
 */
export function parseDestination(dest: string): { user?: string; host: string; port?: number } {
  if (typeof dest !== 'string') throw new TypeError(`expected an SSH destination string, got ${describe(dest)}`)
  const bad = (what: string) => new TypeError(`invalid SSH destination ${JSON.stringify(dest)}: ${what}`)
  if (dest === '') throw bad('it is empty')
  const control = /[\s\p{Cc}]/u.exec(dest)
  if (control) throw bad(`it contains whitespace or a control character at index ${control.index}`)
  if (dest.startsWith('-')) throw bad('it starts with "-", which ssh would take as an option')

  let rest = dest
  const uri = /^ssh:\/\//i.test(dest)
  if (uri) {
    rest = dest.slice('ssh://'.length)
    const query = rest.search(/[?#]/)
    if (query >= 0) throw bad(`an ssh:// URI may not have a query or fragment (${JSON.stringify(rest.slice(query))})`)
    const slash = rest.indexOf('/')
    if (slash >= 0) {
      // OpenSSH allows a lone trailing slash and nothing more.
      if (rest.slice(slash) !== '/') throw bad(`an ssh:// URI may not have a path (${JSON.stringify(rest.slice(slash))})`)
      rest = rest.slice(0, slash)
    }
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(dest)) {
    throw bad('only ssh:// URIs are destinations')
  }

  const result: { user?: string; host: string; port?: number } = { host: '' }
  const at = rest.lastIndexOf('@')
  if (at >= 0) {
    let user = rest.slice(0, at)
    rest = rest.slice(at + 1)
    if (user === '') throw bad('the user before "@" is empty')
    if (uri) {
      // ssh://user;fingerprint=...@host: OpenSSH ignores the parameters; refusing them is safer than ignoring a fingerprint.
      if (user.includes(';')) throw bad('ssh:// connection parameters (";...") are not supported')
      try {
        user = decodeURIComponent(user)
      } catch {
        throw bad(`the user ${JSON.stringify(user)} has a bad %-escape`)
      }
    }
    if (user.startsWith('-')) throw bad('the user starts with "-", which ssh would take as an option')
    result.user = user
  }

  let portText: string | undefined
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']')
    if (close < 0) throw bad('"[" has no matching "]"')
    result.host = rest.slice(1, close)
    const after = rest.slice(close + 1)
    if (result.host.includes('[') || after.includes('[') || after.includes(']')) throw bad('its brackets are unbalanced or nested')
    if (result.host === '') throw bad('the brackets hold no address')
    if (after !== '') {
      if (!after.startsWith(':')) throw bad(`expected ":port" after "]", got ${JSON.stringify(after)}`)
      portText = after.slice(1)
    }
  } else if (rest.includes('[') || rest.includes(']')) {
    throw bad(rest.includes('[') ? 'brackets must enclose the whole address: [address] or [address]:port' : '"]" has no matching "["')
  } else if (rest.split(':').length === 2) {
    ;[result.host, portText] = rest.split(':') as [string, string]
  } else {
    // No colon, or an IPv6 address without brackets (which cannot carry a port).
    result.host = rest
  }
  if (result.host === '') throw bad('the host is empty')
  if (result.host.startsWith('-')) throw bad('the host starts with "-", which ssh would take as an option')
  if (portText !== undefined) {
    const port = /^\d+$/.test(portText) ? Number(portText) : NaN
    if (!(port >= 1 && port <= 65535)) throw bad(`the port must be an integer from 1 to 65535, got ${JSON.stringify(portText)}`)
    result.port = port
  }
  return result
}
