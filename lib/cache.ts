// The verification cache: recently verified keys skip the Fernet work and the database read, within bounds.
import { LRUCache } from 'lru-cache'
import type { VerifiedKey } from './verify'

export interface CacheOptions {
  /** Most keys kept. Default 10000. */
  max?: number
  /** Milliseconds a verified key is trusted without a fresh read; changes made elsewhere are seen within this bound even without notifications. Default 60000. */
  ttl?: number
}

export class VerificationCache {
  readonly #entries: LRUCache<string, VerifiedKey>

  constructor (options: CacheOptions = {}) {
    this.#entries = new LRUCache({ max: options.max ?? 10_000, ttl: options.ttl ?? 60_000, ttlAutopurge: false })
  }

  get (token: string): VerifiedKey | undefined {
    return this.#entries.get(token)
  }

  set (token: string, key: VerifiedKey): void {
    this.#entries.set(token, key)
  }

  /** Forgets every cached token of a key: after a revoke or roll, its next request is read afresh. */
  forgetKey (id: number): void {
    for (const [token, key] of this.#entries.entries()) {
      if (key.apiKey.id === id) this.#entries.delete(token)
    }
  }

  clear (): void {
    this.#entries.clear()
  }

  get size (): number {
    return this.#entries.size
  }
}
