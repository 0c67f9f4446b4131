// IP rules of a key: addresses and CIDR ranges, IPv4 and IPv6, matched with node:net BlockList.
import { BlockList, isIP } from 'node:net'

const MAPPED_IPV4 = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i

interface ParsedRule {
  address: string
  prefix: number | null
  type: 'ipv4' | 'ipv6'
}

function parseRule (rule: unknown): ParsedRule | null {
  if (typeof rule !== 'string') return null
  const [address, prefix, extra] = rule.trim().split('/')
  if (extra !== undefined) return null
  const family = isIP(address)
  if (family === 0) return null
  if (prefix === undefined) return { address, prefix: null, type: family === 6 ? 'ipv6' : 'ipv4' }
  const bits = /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN
  if (!(bits >= 0 && bits <= (family === 6 ? 128 : 32))) return null
  return { address, prefix: bits, type: family === 6 ? 'ipv6' : 'ipv4' }
}

export function isValidIpRule (rule: unknown): boolean {
  return parseRule(rule) !== null
}

/**
 * A BlockList of the rules, or null when there are none. Rules that do not parse are left out, so a
 * whitelist of only bad rules matches nothing: it fails closed.
 */
export function toBlockList (rules: string[]): BlockList | null {
  if (rules.length === 0) return null
  const list = new BlockList()
  for (const rule of rules) {
    const parsed = parseRule(rule)
    if (parsed === null) continue
    if (parsed.prefix === null) list.addAddress(parsed.address, parsed.type)
    else list.addSubnet(parsed.address, parsed.prefix, parsed.type)
  }
  return list
}

/** Whether a request address is in the list; IPv4-mapped IPv6 addresses count as their IPv4 address. */
export function matches (list: BlockList, ip: string): boolean {
  const mapped = MAPPED_IPV4.exec(ip)
  if (mapped !== null) return list.check(mapped[1], 'ipv4')
  const family = isIP(ip)
  if (family === 0) return false
  return list.check(ip, family === 6 ? 'ipv6' : 'ipv4')
}
