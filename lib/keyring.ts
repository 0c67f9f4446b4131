// An ordered list of Fernet secrets: the first encrypts, every one decrypts (MultiFernet semantics).
import { createHash } from 'node:crypto'
import { decodeToken, importSecret, openDecoded, seal, type DecryptOptions, type FernetKey, type OpenedToken, type Secret } from './fernet'
import { InvalidOptionError, InvalidPayloadError, InvalidTokenError } from './errors'

export interface OpenedPayload {
  payload: Record<string, unknown>
  /** Fingerprint of the secret that opened the token. */
  fingerprint: string
  /** Unix seconds written into the token when it was made. */
  timestamp: number
}

interface Entry {
  key: FernetKey
  fingerprint: string
}

/** A short, non-secret id of a secret (hex of the first 8 bytes of its SHA-256), fit for logs and the database. */
export function fingerprint (secret: Secret): string {
  const key = importSecret(secret)
  return createHash('sha256').update(key.signingKey).update(key.encryptionKey).digest('hex').slice(0, 16)
}

export class Keyring {
  readonly #entries: Entry[]

  constructor (secrets: Secret[]) {
    if (!Array.isArray(secrets) || secrets.length === 0) {
      throw new InvalidOptionError('secrets', 'a Keyring needs at least one secret')
    }
    this.#entries = secrets.map((secret, index) => {
      const key = importSecret(secret, `secret #${index + 1}`)
      return { key, fingerprint: fingerprint(key) }
    })
  }

  /** Fingerprint of the secret that encrypts. */
  get encryptingFingerprint (): string {
    return this.#entries[0].fingerprint
  }

  /** Fingerprints of every secret that decrypts, the encrypting one first. */
  get fingerprints (): string[] {
    return this.#entries.map(entry => entry.fingerprint)
  }

  encrypt (payload: object, options: { now?: Date } = {}): string {
    const seconds = Math.floor((options.now ?? new Date()).getTime() / 1000)
    return seal(this.#entries[0].key, Buffer.from(JSON.stringify(payload)), seconds)
  }

  decrypt (token: string, options?: DecryptOptions): Record<string, unknown> {
    return this.open(token, options).payload
  }

  /** Decrypts a token and says which secret opened it. */
  open (token: string, options?: DecryptOptions): OpenedPayload {
    const opened = this.tryOpen(token, options)
    if (opened === null) throw new InvalidTokenError()
    return opened
  }

  /** Like open, but a token that no secret opens gives null instead of an exception. */
  tryOpen (token: string, options?: DecryptOptions): OpenedPayload | null {
    const found = this.#openRaw(token, options)
    if (found === null) return null
    return { payload: parseObject(found.opened.message), fingerprint: found.entry.fingerprint, timestamp: found.opened.timestamp }
  }

  /** Re-seals a token under the encrypting secret, keeping the time it was made. */
  reencrypt (token: string): string {
    const found = this.#openRaw(token)
    if (found === null) throw new InvalidTokenError()
    return seal(this.#entries[0].key, found.opened.message, found.opened.timestamp)
  }

  #openRaw (token: string, options?: DecryptOptions): { opened: OpenedToken, entry: Entry } | null {
    const data = decodeToken(token)
    if (data === null) return null
    for (const entry of this.#entries) {
      const opened = openDecoded(entry.key, data, options)
      if (opened !== null) return { opened, entry }
    }
    return null
  }

  fingerprint (secret: Secret): string {
    return fingerprint(secret)
  }
}

function parseObject (message: Buffer): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(message.toString('utf8'))
  } catch {
    throw new InvalidPayloadError()
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidPayloadError()
  return value as Record<string, unknown>
}
