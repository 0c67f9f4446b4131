// The verification cache: recent outcomes per token skip the Fernet work and the database read, within bounds.
import { LRUCache } from 'lru-cache'
import type { RefusedToken, VerifiedKey } from './verify'

export interface CacheOptions {
  /** Most tokens kept. Default 10000. */
  max?: number
  /** Milliseconds an outcome is trusted without a fresh read; changes made elsewhere are seen within this bound even without notifications. Default 60000. */
  ttl?: number
}

/** What is cached for a token: the verified key, or the refusal the database's row decided (revoked, unknown, wrong secret, expired). */
export type CachedOutcome = VerifiedKey | RefusedToken

// Tokens refused on their seal alone are kept apart and few: a flood of forgeries churns this small set, never the keys in use.
const FORGED_MAX = 1000
// A token's last 43 characters hold most of its HMAC tag (32 bytes in base64url). Entries are found by them and then
// compared whole: a lookup hashes 43 characters instead of the whole token, a fresh string on every request.
const TAG_LENGTH = 43

interface Entry<T> {
  token: string
  outcome: T
}

export class VerificationCache {
  readonly #entries: LRUCache<string, Entry<CachedOutcome>>
  readonly #forged: LRUCache<string, Entry<RefusedToken>>

  constructor (options: CacheOptions = {}) {
    const ttl = options.ttl ?? 60_000
    this.#entries = new LRUCache({ max: options.max ?? 10_000, ttl, ttlAutopurge: false })
    this.#forged = new LRUCache({ max: Math.min(options.max ?? FORGED_MAX, FORGED_MAX), ttl, ttlAutopurge: false })
  }

  get (token: string): CachedOutcome | undefined {
    const tag = tagOf(token)
    return outcomeFor(this.#entries.get(tag), token) ?? outcomeFor(this.#forged.get(tag), token)
  }

  set (token: string, outcome: CachedOutcome): void {
    this.#entries.set(tagOf(token), { token, outcome })
  }

  /** Remembers a token that failed its Fernet seal or claims, which no database read can change. */
  setForged (token: string, refused: RefusedToken): void {
    this.#forged.set(tagOf(token), { token, outcome: refused })
  }

  /** Forgets every cached outcome of a key: after a revoke or roll, its next request is read afresh. */
  forgetKey (id: number): void {
    for (const [tag, entry] of this.#entries.entries()) {
      if (keyIdOf(entry.outcome) === id) this.#entries.delete(tag)
    }
  }

  clear (): void {
    this.#entries.clear()
    this.#forged.clear()
  }

  /** After the keyring changed: a token refused under the old one is judged again. */
  clearForged (): void {
    this.#forged.clear()
  }

  /** Tokens whose outcome came from the database. */
  get size (): number {
    return this.#entries.size
  }

  /** Forged or malformed tokens remembered, at most 1000 (or `max`, if smaller). */
  get forgedSize (): number {
    return this.#forged.size
  }
}

function tagOf (token: string): string {
  return token.length <= TAG_LENGTH ? token : token.slice(-TAG_LENGTH)
}

// Another token with the same tag is a miss: only the whole token decides.
function outcomeFor<T> (entry: Entry<T> | undefined, token: string): T | undefined {
  return entry !== undefined && entry.token === token ? entry.outcome : undefined
}

function keyIdOf (outcome: CachedOutcome): number | null {
  return 'refused' in outcome ? outcome.keyId : outcome.apiKey.id
}
