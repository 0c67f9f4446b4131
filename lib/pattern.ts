// The shape of an API key, for secret scanners: the optional prefix, then a Fernet token.
function escape (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')
}

/**
 * A regular expression that finds this plugin's keys in text, e.g. for a secret scanner's custom pattern.
 * Fernet tokens start with `gAAAAA`: the version byte 0x80 and the high bytes of a timestamp.
 */
export function keyPattern (prefix = ''): RegExp {
  return new RegExp(`${escape(prefix)}gAAAAA[A-Za-z0-9_-]{95,}={0,2}`, 'g')
}
