// `fastify.apiKeys`: the key life cycle (create, list, revoke, roll, reissue), shown to its owner once and never stored.
import { createHash, randomBytes } from 'node:crypto'
import type { ApiKeyRecord, KeyPage, KeyStore, ListFilter, StoredKey } from './store'
import { toRecord } from './store'
import type { RotatingKeyring } from './rotation'
import type { Keyring } from './keyring'
import type { Verifier } from './verify'
import type { ActionContext, Audit } from './audit'
import type { KeyUsage } from './usage'
import { isValidIpRule } from './ip'
import { toMilliseconds, type Duration } from './duration'
import { InvalidInputError, RollRevokedKeyError, UnknownKeyError } from './errors'

export interface CreateKeyInput {
  /** A label for people. */
  name?: string
  /** Who the key belongs to: a user, service or tenant id. */
  entityId: string | number
  /** When the key stops working; defaults to now plus the `keyLifetime` option. */
  expiresAt?: Date | string | number
  /** Scopes the key grants; none means unrestricted, as in drf-simple-apikey. */
  scopes?: string[]
  /** Addresses or CIDR ranges the key may be used from; none means anywhere. */
  whitelistedIps?: string[]
  /** Addresses or CIDR ranges the key may never be used from. */
  blacklistedIps?: string[]
  /** Free JSON for the app, e.g. `{ rateLimit: { max: 100, timeWindow: '1 minute' } }`. */
  metadata?: Record<string, unknown>
}

export interface IssuedKey {
  /** The API key: shown to its owner now and never again. */
  key: string
  record: ApiKeyRecord
}

export interface RollOptions {
  /** How long the key's previous value keeps working: ms or a duration such as '7d'. Default 0: at once invalid. */
  gracePeriod?: Duration
}

export interface ApiKeysOptions {
  keyPrefix: string
  perKeySecret: boolean
  keyLifetime: number
}

export interface ApiKeysDeps {
  store: KeyStore
  keyring: RotatingKeyring
  verifier: Verifier
  audit: Audit
  /** Tells every instance that a key changed. */
  publishKeyChange: (id: number) => Promise<void>
  /** The usage written so far for a key, or null when there is no such key. */
  readUsage: (id: number) => Promise<KeyUsage | null>
  /** Writes this instance's counts now. */
  flushUsage: () => Promise<void>
}

const MAX_LIST_LIMIT = 1000

export class ApiKeys {
  readonly #options: ApiKeysOptions
  readonly #deps: ApiKeysDeps

  constructor (options: ApiKeysOptions, deps: ApiKeysDeps) {
    this.#options = options
    this.#deps = deps
  }

  async create (input: CreateKeyInput, context?: ActionContext): Promise<IssuedKey> {
    const row = validateCreateInput(input, this.#options.keyLifetime)
    const secret = this.#options.perKeySecret ? newSecret() : null
    // One keyring for the row's fingerprint and the token, though a rotation may start during the insert.
    const keyring = this.#deps.keyring.current
    const stored = await this.#deps.store.insert({
      ...row,
      hashedSecret: secret === null ? '' : hashSecret(secret),
      secretFingerprint: keyring.encryptingFingerprint
    })
    this.#deps.audit.record('key.created', context, { keyId: stored.id, details: { name: stored.name, entityId: stored.entityId, scopes: stored.scopes } })
    return { key: this.#issue(keyring, stored, secret), record: toRecord(stored) }
  }

  async get (id: number): Promise<ApiKeyRecord | null> {
    const stored = await this.#deps.store.find(checkId(id))
    return stored === null ? null : toRecord(stored)
  }

  async list (filter: ListFilter = {}): Promise<KeyPage> {
    if (filter.limit !== undefined && !(Number.isSafeInteger(filter.limit) && filter.limit >= 0 && filter.limit <= MAX_LIST_LIMIT)) {
      throw new InvalidInputError('limit', `a whole number from 0 to ${MAX_LIST_LIMIT}`)
    }
    if (filter.offset !== undefined && !(Number.isSafeInteger(filter.offset) && filter.offset >= 0)) {
      throw new InvalidInputError('offset', 'a whole number from 0')
    }
    return this.#deps.store.list({ ...filter, entityId: filter.entityId === undefined ? undefined : String(filter.entityId) })
  }

  /**
   * A key's request counts per route and method and its last use, as written so far: each instance writes its counts
   * every `usage.flushInterval`, and at once on `flushUsage()`.
   */
  async usage (id: number): Promise<KeyUsage> {
    const usage = await this.#deps.readUsage(checkId(id))
    if (usage === null) throw new UnknownKeyError(id)
    return usage
  }

  /** Writes this instance's usage counts now instead of at the next `usage.flushInterval`. */
  async flushUsage (): Promise<void> {
    await this.#deps.flushUsage()
  }

  /** Revokes one key; every instance refuses it from now on. */
  async revoke (id: number, context?: ActionContext): Promise<ApiKeyRecord> {
    const [revoked] = await this.revokeMany([checkId(id)], context)
    if (revoked === undefined) throw new UnknownKeyError(id)
    return (await this.get(id))!
  }

  /** Revokes many keys at once; resolves the ids that existed. */
  async revokeMany (ids: number[], context?: ActionContext): Promise<number[]> {
    if (!Array.isArray(ids) || ids.length === 0) throw new InvalidInputError('ids', 'a non-empty list of key ids')
    const revoked = await this.#deps.store.revoke(ids.map(checkId))
    for (const id of revoked) {
      this.#deps.verifier.invalidateKey(id)
      this.#deps.audit.record('key.revoked', context, { keyId: id })
    }
    await Promise.all(revoked.map(id => this.#deps.publishKeyChange(id)))
    return revoked
  }

  /** A new value for the key (new per-key secret); the previous one works until the grace period ends. */
  async roll (id: number, options: RollOptions = {}, context?: ActionContext): Promise<IssuedKey> {
    // The number, not the string a caller may pass: the cache and the other instances forget cached tokens by numeric id.
    const keyId = checkId(id)
    const grace = options.gracePeriod === undefined ? 0 : toMilliseconds(options.gracePeriod)
    if (grace === undefined) throw new InvalidInputError('gracePeriod', 'milliseconds or a duration such as \'7d\'')
    // A new value for a revoked key would be handed out and never work.
    const existing = await this.#deps.store.find(keyId)
    if (existing === null) throw new UnknownKeyError(keyId)
    if (existing.revoked) throw new RollRevokedKeyError(keyId)
    const secret = newSecret()
    const keyring = this.#deps.keyring.current
    const stored = await this.#deps.store.roll(keyId, hashSecret(secret), grace === 0 ? null : new Date(Date.now() + grace),
      keyring.encryptingFingerprint)
    if (stored === null) throw new UnknownKeyError(keyId)
    this.#deps.verifier.invalidateKey(keyId)
    await this.#deps.publishKeyChange(keyId)
    this.#deps.audit.record('key.rolled', context, { keyId, details: { gracePeriodMs: grace } })
    return { key: this.#issue(keyring, stored, secret), record: toRecord(stored) }
  }

  /** The same key under the encrypting secret: for clients to move off a secret that a rotation will retire. */
  async reissue (key: string, context?: ActionContext): Promise<IssuedKey> {
    const verifier = this.#deps.verifier
    const token = verifier.tokenOf(`${verifier.keyword} ${key}`)
    const verified = await verifier.resolve(token)
    verifier.checkExpiry(verified)
    const keyring = this.#deps.keyring.current
    const reissued = this.#options.keyPrefix + keyring.reencrypt(token)
    const id = verified.apiKey.id
    await this.#deps.store.setSecretFingerprint(id, keyring.encryptingFingerprint)
    this.#deps.audit.record('key.reissued', context ?? { actor: `api-key:${id}` }, { keyId: id })
    return { key: reissued, record: toRecord((await this.#deps.store.find(id))!) }
  }

  #issue (keyring: Keyring, stored: StoredKey, secret: string | null): string {
    const payload: Record<string, unknown> = { _pk: stored.id, _exp: stored.expiresAt.getTime() / 1000 }
    if (secret !== null) payload._secret = secret
    return this.#options.keyPrefix + keyring.encrypt(payload)
  }
}

export function hashSecret (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

function newSecret (): string {
  return randomBytes(32).toString('base64url')
}

function checkId (id: unknown): number {
  const value = typeof id === 'string' && /^\d+$/.test(id) ? Number(id) : id
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) throw new InvalidInputError('id', 'a positive whole number')
  return value
}

function validateCreateInput (input: CreateKeyInput, keyLifetime: number) {
  if (input === null || typeof input !== 'object') throw new InvalidInputError('key', 'an object with at least entityId')
  const { name = '', entityId, expiresAt, scopes = [], whitelistedIps = [], blacklistedIps = [], metadata = {} } = input
  if (typeof name !== 'string' || name.length > 255) throw new InvalidInputError('name', 'a string of at most 255 characters')
  if ((typeof entityId !== 'string' && typeof entityId !== 'number') || String(entityId) === '') {
    throw new InvalidInputError('entityId', 'a non-empty string or number')
  }
  const expiry = expiresAt === undefined ? new Date(Date.now() + keyLifetime) : new Date(expiresAt)
  if (Number.isNaN(expiry.getTime())) throw new InvalidInputError('expiresAt', 'a date')
  if (!Array.isArray(scopes) || !scopes.every(scope => typeof scope === 'string' && scope !== '')) {
    throw new InvalidInputError('scopes', 'a list of non-empty strings')
  }
  for (const [field, rules] of [['whitelistedIps', whitelistedIps], ['blacklistedIps', blacklistedIps]] as const) {
    if (!Array.isArray(rules) || !rules.every(isValidIpRule)) throw new InvalidInputError(field, 'a list of IP addresses or CIDR ranges')
  }
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) throw new InvalidInputError('metadata', 'a JSON object')
  return { name, entityId: String(entityId), expiresAt: expiry, scopes, whitelistedIps, blacklistedIps, metadata }
}
