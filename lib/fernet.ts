// Fernet tokens (spec version 0x80) on node:crypto alone: AES-128-CBC, HMAC-SHA256, base64url.
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { InvalidSecretError, InvalidTokenError } from './errors'

const VERSION = 0x80
const MAX_CLOCK_SKEW_SECONDS = 60
const HEADER_BYTES = 1 + 8 + 16
const HMAC_BYTES = 32
const BLOCK_BYTES = 16
const MIN_TOKEN_BYTES = HEADER_BYTES + BLOCK_BYTES + HMAC_BYTES
// A 32-byte secret is 43 base64url characters; the last one carries 2 padding bits that must be zero.
const SECRET_PATTERN = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]=?$/

export const SECRET_PATTERN_SOURCE = SECRET_PATTERN.source

/** A secret split into its signing and encryption halves, so that hot paths decode it once. */
export interface FernetKey {
  readonly signingKey: Buffer
  readonly encryptionKey: Buffer
}

export type Secret = string | Buffer | FernetKey

export interface EncryptOptions {
  /** Time written into the token; defaults to now. */
  now?: Date
  /** 16-byte initialisation vector; defaults to random bytes. Only tests should set it. */
  iv?: Buffer
}

export interface DecryptOptions {
  /** Maximum age of the token in seconds; no limit when absent. */
  ttl?: number
  /** The time to check against; defaults to now. */
  now?: Date
}

export interface OpenedToken {
  message: Buffer
  /** Unix seconds written into the token when it was made. */
  timestamp: number
}

export function isValidSecret (secret: string): boolean {
  return SECRET_PATTERN.test(secret)
}

export function importSecret (secret: Secret, name = 'Fernet secret'): FernetKey {
  if (typeof secret === 'object' && !Buffer.isBuffer(secret)) return secret
  let raw: Buffer
  if (Buffer.isBuffer(secret)) {
    raw = secret
  } else if (typeof secret === 'string' && SECRET_PATTERN.test(secret)) {
    raw = Buffer.from(secret, 'base64url')
  } else {
    throw new InvalidSecretError(name)
  }
  if (raw.length !== 32) throw new InvalidSecretError(name)
  return { signingKey: raw.subarray(0, 16), encryptionKey: raw.subarray(16, 32) }
}

export function generateSecret (): string {
  return randomBytes(32).toString('base64url') + '='
}

export function encrypt (secret: Secret, message: string | Buffer, options: EncryptOptions = {}): string {
  const key = importSecret(secret)
  const iv = options.iv ?? randomBytes(16)
  if (iv.length !== 16) throw new TypeError('iv must be 16 bytes')
  const seconds = Math.floor((options.now ?? new Date()).getTime() / 1000)
  return seal(key, typeof message === 'string' ? Buffer.from(message) : message, seconds, iv)
}

export function decrypt (secret: Secret, token: string, options: DecryptOptions = {}): Buffer {
  return open(importSecret(secret), token, options).message
}

/** Verifies and decrypts a token, also returning the time it was made. */
export function open (key: FernetKey, token: string, options: DecryptOptions = {}): OpenedToken {
  const data = decodeToken(token)
  const opened = data === null ? null : openDecoded(key, data, options)
  if (opened === null) throw new InvalidTokenError()
  return opened
}

/**
 * Opens a token already decoded by decodeToken, or returns null. Hot paths try several keys on one
 * decoded token, and a rejected token costs no exception.
 */
export function openDecoded (key: FernetKey, data: Buffer, options: DecryptOptions = {}): OpenedToken | null {
  if (data[0] !== VERSION) return null
  const timestamp = data.readUInt32BE(1) * 0x100000000 + data.readUInt32BE(5)
  const now = Math.floor((options.now === undefined ? Date.now() : options.now.getTime()) / 1000)
  if (timestamp > now + MAX_CLOCK_SKEW_SECONDS) return null
  if (options.ttl !== undefined && timestamp + options.ttl < now) return null

  const signed = data.subarray(0, data.length - HMAC_BYTES)
  const expected = createHmac('sha256', key.signingKey).update(signed).digest()
  if (!timingSafeEqual(expected, data.subarray(data.length - HMAC_BYTES))) return null

  const decipher = createDecipheriv('aes-128-cbc', key.encryptionKey, data.subarray(9, HEADER_BYTES))
  try {
    return { message: Buffer.concat([decipher.update(signed.subarray(HEADER_BYTES)), decipher.final()]), timestamp }
  } catch {
    return null
  }
}

/** Encrypts under a key with an explicit timestamp, as re-sealing during rotation needs. */
export function seal (key: FernetKey, message: Buffer, timestamp: number, iv: Buffer = randomBytes(16)): string {
  const cipher = createCipheriv('aes-128-cbc', key.encryptionKey, iv)
  const ciphertext = Buffer.concat([cipher.update(message), cipher.final()])
  const header = Buffer.allocUnsafe(HEADER_BYTES)
  header[0] = VERSION
  header.writeUInt32BE(Math.floor(timestamp / 0x100000000), 1)
  header.writeUInt32BE(timestamp % 0x100000000, 5)
  iv.copy(header, 9)
  const hmac = createHmac('sha256', key.signingKey).update(header).update(ciphertext).digest()
  return Buffer.concat([header, ciphertext, hmac]).toString('base64url') + padding(HEADER_BYTES + ciphertext.length + HMAC_BYTES)
}

function padding (bytes: number): string {
  const rest = bytes % 3
  return rest === 0 ? '' : rest === 1 ? '==' : '='
}

/** The token's bytes when it is well-formed base64url of a plausible length, else null. */
export function decodeToken (token: string): Buffer | null {
  if (typeof token !== 'string') return null
  // Up to two '=' of padding; a third is then checked, and refused, as a base64url character.
  let end = token.length
  if (end > 0 && token.charCodeAt(end - 1) === EQUALS) end--
  if (end > 0 && token.charCodeAt(end - 1) === EQUALS) end--
  // A base64 string of length 4n+1 cannot come from whole bytes; padding, when present, must be exact.
  if (end % 4 === 1) return null
  if (end !== token.length && token.length % 4 !== 0) return null
  // Sizes first, so that a token of the wrong length costs no scan and no allocation.
  const bytes = Math.floor(end * 3 / 4)
  if (bytes < MIN_TOKEN_BYTES || (bytes - HEADER_BYTES - HMAC_BYTES) % BLOCK_BYTES !== 0) return null
  for (let i = 0; i < end; i++) {
    const code = token.charCodeAt(i)
    if (code > 127 || BASE64URL[code] === 0) return null
  }
  return Buffer.from(token, 'base64url')
}

const EQUALS = 0x3d
// 1 for each character of the base64url alphabet; Buffer.from would also take '+' and '/' and skip others.
const BASE64URL = new Uint8Array(128)
for (const char of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_') BASE64URL[char.charCodeAt(0)] = 1
