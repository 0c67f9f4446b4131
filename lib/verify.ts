// Verifies a request's API key: header, Fernet token, key row, then the request's IP, entity, scopes and protocol.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { BlockList } from 'node:net'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Keyring } from './keyring'
import type { ApiKey, StoredKey } from './store'
import type { CachedOutcome, VerificationCache } from './cache'
import { matches, toBlockList } from './ip'
import {
  EntityInactiveError, ExpiredKeyError, HttpsRequiredError, InsufficientScopeError, InvalidKeyError, IpDeniedError,
  IpNotAllowedError, KeyNotFoundError, MalformedKeyError, MissingKeyError, RevokedKeyError, UnavailableError
} from './errors'

/** Route option `config.apiKey`: `false` makes the route public. */
export interface RouteApiKeyConfig {
  /** Scopes the key must all have. A key with no scopes is unrestricted, as in drf-simple-apikey, unless `allowUnscoped` is false. */
  scopes?: string[]
  /** Whether a key with no scopes passes a scope check. Default true; the plugin's admin routes set false. */
  allowUnscoped?: boolean
}

export type IsEntityActive = (entityId: string, request: FastifyRequest) => boolean | Promise<boolean>

/** A key that passed the token and row checks; what the cache keeps. */
export interface VerifiedKey {
  apiKey: ApiKey
  /** Epoch ms: the earlier of the token's `_exp` and the row's `expiry_date`. */
  expiresAt: number
  /** Epoch ms after which the token's per-key secret stops working (a rolled key's grace period), else Infinity. */
  secretValidUntil: number
  allowed: BlockList | null
  denied: BlockList | null
  /** Fingerprint of the Fernet secret the token is under. */
  fingerprint: string
}

export interface VerifierOptions {
  keyword: string
  keyPrefix: string
  enforceHttps: boolean
  isEntityActive?: IsEntityActive
  /** Longest key accepted, so that megabyte headers cost nothing. */
  maxKeyLength: number
}

export interface VerifierDeps {
  keyring: { readonly current: Keyring }
  findKey: (id: number) => Promise<StoredKey | null>
  cache: VerificationCache | null
}

type ApiKeyError = Error & { apiKeyId?: number }
type Refusal = new () => ApiKeyError

/** A token refused for a reason that a repeat of the same token cannot change: the error to answer with, and the key it names. */
export interface RefusedToken {
  refused: Refusal
  keyId: number | null
}

export class Verifier {
  readonly #options: VerifierOptions
  readonly #deps: VerifierDeps
  readonly #inflight = new Map<string, Promise<VerifiedKey>>()
  // Bumped by every invalidation: a read that began before one must not fill the cache.
  #generation = 0
  // The keyring the cache's forged-token refusals were decided under.
  #forgedUnder: Keyring | null = null

  constructor (options: VerifierOptions, deps: VerifierDeps) {
    this.#options = options
    this.#deps = deps
  }

  get keyword (): string {
    return this.#options.keyword
  }

  /** Reads the key from the Authorization header: `<keyword> <key>`. */
  tokenOf (header: string | undefined): string {
    if (typeof header !== 'string') throw new MissingKeyError()
    // Any run of whitespace separates, as drf-simple-apikey's `split()` does.
    const parts = header.trim().split(/\s+/)
    if (parts[0] !== this.#options.keyword) throw new MissingKeyError()
    if (parts.length !== 2) throw new MalformedKeyError()
    const key = parts[1]
    return this.#options.keyPrefix !== '' && key.startsWith(this.#options.keyPrefix) ? key.slice(this.#options.keyPrefix.length) : key
  }

  // `<keyword> <key>`, the form every client sends, cut without the general parse. Trusted only when the cache knows the
  // key: only what tokenOf returned is ever cached, so a cached key has no whitespace, and tokenOf would return the same.
  #tokenAsSent (header: string | undefined): string | undefined {
    const keyword = this.#options.keyword
    if (typeof header !== 'string' || header.charCodeAt(keyword.length) !== SPACE || !header.startsWith(keyword)) return undefined
    const key = header.slice(keyword.length + 1)
    const prefix = this.#options.keyPrefix
    return prefix !== '' && key.startsWith(prefix) ? key.slice(prefix.length) : key
  }

  /** The verified key for a token, from the cache, a read already under way, or the database. */
  resolve (token: string): Promise<VerifiedKey> {
    try {
      return Promise.resolve(this.#lookup(token))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Reads of the database under way, one per token however many requests wait on it. */
  get pendingReads (): number {
    return this.#inflight.size
  }

  // Synchronous up to the database read: a cached key costs no promise, and a forged token is refused before it reaches the map.
  #lookup (token: string): VerifiedKey | Promise<VerifiedKey> {
    const cached = this.#cached(token)
    if (cached !== undefined) return fromCache(cached)
    const pending = this.#inflight.get(token)
    if (pending !== undefined) return pending
    const claims = this.#claimsOf(this.#deps.keyring.current, token)
    const loading = this.#load(token, claims).finally(() => {
      if (this.#inflight.get(token) === loading) this.#inflight.delete(token)
    })
    this.#inflight.set(token, loading)
    return loading
  }

  #cached (token: string): CachedOutcome | undefined {
    // Reading the keyring first lets a transition that just ended drop the cache before a cached key is served.
    const keyring = this.#deps.keyring.current
    const cache = this.#deps.cache
    if (cache === null) return undefined
    if (keyring !== this.#forgedUnder) {
      cache.clearForged()
      this.#forgedUnder = keyring
    }
    return cache.get(token)
  }

  /** After a revoke or roll: the key's next request is read afresh. */
  invalidateKey (id: number): void {
    this.#deps.cache?.forgetKey(id)
    this.#forgetPending()
  }

  /** After a rotation phase change: every key is read afresh under the new keyring. */
  invalidateAll (): void {
    this.#deps.cache?.clear()
    this.#forgetPending()
  }

  // A request that arrives after an invalidation returned must not share a read that began before it.
  #forgetPending (): void {
    this.#generation++
    this.#inflight.clear()
  }

  /** What the token says, once its Fernet seal is checked; everything that needs no database. */
  #claimsOf (keyring: Keyring, token: string): Claims {
    if (token.length > this.#options.maxKeyLength) throw refusal(InvalidKeyError)
    const opened = tryOpen(keyring, token)
    if (opened === null) throw this.#refuseForged(token, InvalidKeyError, null)
    const { payload, fingerprint } = opened
    const id = payload._pk
    const exp = payload._exp
    const secret = payload._secret
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0 || typeof exp !== 'number' || !Number.isFinite(exp) ||
      (secret !== undefined && typeof secret !== 'string')) {
      throw this.#refuseForged(token, InvalidKeyError, null)
    }
    if (exp * 1000 <= Date.now()) throw this.#refuseForged(token, ExpiredKeyError, id)
    return { id, exp, secret, fingerprint }
  }

  // The same forged or expired token sent again (a client retrying a bad key) is refused without another HMAC.
  #refuseForged (token: string, refused: Refusal, keyId: number | null): ApiKeyError {
    const outcome: RefusedToken = { refused, keyId }
    this.#deps.cache?.setForged(token, outcome)
    return refuse(outcome)
  }

  // A refusal the row decided is cached like an acceptance: same bounds, dropped by the same invalidations.
  #refuseByRow (token: string, generation: number, refused: Refusal, keyId: number): ApiKeyError {
    const outcome: RefusedToken = { refused, keyId }
    if (generation === this.#generation) this.#deps.cache?.set(token, outcome)
    return refuse(outcome)
  }

  async #load (token: string, { id, exp, secret, fingerprint }: Claims): Promise<VerifiedKey> {
    const generation = this.#generation
    let row: StoredKey | null
    try {
      row = await this.#deps.findKey(id)
    } catch (err) {
      throw withKeyId(Object.assign(new UnavailableError(), { cause: err }), id)
    }
    if (row === null) throw this.#refuseByRow(token, generation, KeyNotFoundError, id)
    const now = Date.now()
    const secretValidUntil = checkSecret(row, secret, now)
    if (secretValidUntil === null) throw this.#refuseByRow(token, generation, InvalidKeyError, id)
    const expiresAt = Math.min(exp * 1000, row.expiresAt.getTime())
    if (expiresAt <= now) throw this.#refuseByRow(token, generation, ExpiredKeyError, id)
    if (row.revoked) throw this.#refuseByRow(token, generation, RevokedKeyError, id)

    const verified: VerifiedKey = {
      // Frozen: the cache hands this same object to every request with the key, so a handler must not be able to change it for the next.
      apiKey: deepFreeze({ id: row.id, name: row.name, entityId: row.entityId, scopes: row.scopes, expiresAt: new Date(expiresAt), metadata: row.metadata }),
      expiresAt,
      secretValidUntil,
      allowed: toBlockList(row.whitelistedIps),
      denied: toBlockList(row.blacklistedIps),
      fingerprint
    }
    if (generation === this.#generation) this.#deps.cache?.set(token, verified)
    return verified
  }

  /** A cached key may have expired, or its rolled secret's grace period ended, since it was read. */
  checkExpiry (verified: VerifiedKey): void {
    const now = Date.now()
    if (verified.expiresAt <= now) throw withKeyId(refusal(ExpiredKeyError), verified.apiKey.id)
    if (verified.secretValidUntil <= now) throw withKeyId(refusal(InvalidKeyError), verified.apiKey.id)
  }

  /**
   * The checks that depend on the request and the route, run on every request, cached key or not.
   * Synchronous (throws) unless `isEntityActive` is set, whose answer may be a promise.
   */
  check (verified: VerifiedKey, request: FastifyRequest, config: RouteApiKeyConfig | undefined): void | Promise<void> {
    const id = verified.apiKey.id
    this.checkExpiry(verified)
    if (verified.denied !== null && matches(verified.denied, request.ip)) throw withKeyId(new IpDeniedError(), id)
    if (verified.allowed !== null && !matches(verified.allowed, request.ip)) throw withKeyId(new IpNotAllowedError(), id)
    const isEntityActive = this.#options.isEntityActive
    if (isEntityActive === undefined) return this.#checkRoute(verified, request, config)
    return (async () => {
      let active: boolean
      try {
        active = await isEntityActive(verified.apiKey.entityId, request)
      } catch (err) {
        throw withKeyId(Object.assign(new UnavailableError(), { cause: err }), id)
      }
      if (active !== true) throw withKeyId(new EntityInactiveError(), id)
      this.#checkRoute(verified, request, config)
    })()
  }

  #checkRoute (verified: VerifiedKey, request: FastifyRequest, config: RouteApiKeyConfig | undefined): void {
    if (config?.scopes !== undefined && config.scopes.length > 0 && !hasScopes(verified.apiKey.scopes, config)) {
      throw withKeyId(new InsufficientScopeError(), verified.apiKey.id)
    }
    if (this.#options.enforceHttps && request.protocol !== 'https') throw withKeyId(new HttpsRequiredError(), verified.apiKey.id)
  }

  /**
   * The whole verification as a Fastify hook: sets `request.apiKey`, or fails the request with the error.
   * Called with `done` (as an `onRequest` hook or by `@fastify/auth`) a cached key is verified without a promise;
   * called without, it returns one.
   */
  createHook (onVerified?: OnVerified): VerifyHook {
    const keyword = this.#options.keyword
    const fail = (reply: FastifyReply, err: unknown, done: Done): void => {
      if ((err as { statusCode?: number }).statusCode === 401) reply.header('www-authenticate', keyword)
      done(err as Error)
    }
    const accept = (request: FastifyRequest, reply: FastifyReply, token: string, verified: VerifiedKey, route: RouteConfig, done: Done): void => {
      request.apiKey = verified.apiKey
      try {
        onVerified?.(request, reply, token, verified, route)
      } catch (err) {
        fail(reply, err, done)
        return
      }
      done()
    }
    const finish = (request: FastifyRequest, reply: FastifyReply, token: string, verified: VerifiedKey, route: RouteConfig, done: Done): void => {
      let checked: void | Promise<void>
      try {
        checked = this.check(verified, request, route.apiKey || undefined)
      } catch (err) {
        fail(reply, err, done)
        return
      }
      if (checked === undefined) accept(request, reply, token, verified, route, done)
      else checked.then(() => accept(request, reply, token, verified, route, done), err => fail(reply, err, done))
    }
    const run = (request: FastifyRequest, reply: FastifyReply, done: Done): void => {
      // Read once: Fastify builds a new routeOptions object on every read.
      const route = request.routeOptions.config
      if (route.apiKey === false) {
        done()
        return
      }
      let token: string
      let found: VerifiedKey | Promise<VerifiedKey>
      try {
        const header = request.headers.authorization
        const sent = this.#deps.cache === null ? undefined : this.#tokenAsSent(header)
        const cached = sent === undefined ? undefined : this.#cached(sent)
        if (cached === undefined) {
          token = this.tokenOf(header)
          found = this.#lookup(token)
        } else {
          token = sent!
          found = fromCache(cached)
        }
      } catch (err) {
        fail(reply, err, done)
        return
      }
      if (found instanceof Promise) found.then(verified => finish(request, reply, token, verified, route, done), err => fail(reply, err, done))
      else finish(request, reply, token, found, route, done)
    }
    function verifyApiKey (request: FastifyRequest, reply: FastifyReply, done?: Done): Promise<void> | undefined {
      if (done !== undefined) {
        run(request, reply, done)
        return undefined
      }
      return new Promise<void>((resolve, reject) => run(request, reply, err => err === undefined ? resolve() : reject(err)))
    }
    return verifyApiKey as VerifyHook
  }
}

type Done = (err?: Error) => void

/** A route's config as Fastify keeps it: the app's `config` plus the route's `url` pattern and `method` (no `url` when no route matched). */
type RouteConfig = FastifyRequest['routeOptions']['config']

/** Runs for each accepted request, before `done`; `route` is the route's config, whose `url` is its pattern. A throw fails the request. */
type OnVerified = (request: FastifyRequest, reply: FastifyReply, token: string, verified: VerifiedKey, route: RouteConfig) => void

const SPACE = 0x20

/** `fastify.verifyApiKey`: a callback hook with `done`, a promise without. */
export interface VerifyHook {
  (request: FastifyRequest, reply: FastifyReply): Promise<void>
  (request: FastifyRequest, reply: FastifyReply, done: Done): void
}

interface Claims {
  id: number
  exp: number
  secret: string | undefined
  fingerprint: string
}

function fromCache (cached: CachedOutcome): VerifiedKey {
  if ('refused' in cached) throw refuse(cached)
  return cached
}

function refuse ({ refused, keyId }: RefusedToken): ApiKeyError {
  const err = refusal(refused)
  return keyId === null ? err : withKeyId(err, keyId)
}

// A refused key is an expected answer, not a bug to trace: its error skips the stack capture, which would cost more than the refusal.
function refusal<T extends Error> (ErrorClass: new () => T): T {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return new ErrorClass()
  } finally {
    Error.stackTraceLimit = limit
  }
}

function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const inner of Object.values(value)) deepFreeze(inner)
  }
  return value
}

function tryOpen (keyring: Keyring, token: string) {
  try {
    return keyring.tryOpen(token)
  } catch {
    return null
  }
}

/** Epoch ms until which the token's per-key secret is good, or null when it is missing or wrong. */
function checkSecret (row: StoredKey, secret: string | undefined, now: number): number | null {
  if (row.hashedSecret === '') return Infinity
  if (secret === undefined) return null
  const hashed = createHash('sha256').update(secret).digest('hex')
  if (sameHash(hashed, row.hashedSecret)) return Infinity
  if (row.previousHashedSecret !== null && row.previousSecretExpires !== null && sameHash(hashed, row.previousHashedSecret)) {
    const until = row.previousSecretExpires.getTime()
    return until > now ? until : null
  }
  return null
}

function sameHash (a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b))
}

function hasScopes (keyScopes: string[], config: RouteApiKeyConfig): boolean {
  if (keyScopes.length === 0) return config.allowUnscoped !== false
  return config.scopes!.every(scope => keyScopes.includes(scope))
}

function withKeyId (err: ApiKeyError, id: number): ApiKeyError {
  // Fastify logs the error it replies with; the key id lets operators trace it, the key itself never appears.
  err.apiKeyId = id
  return err
}
