// Wires the plugin: secrets, database, keyring and rotation, verification hook, cross-instance sync, routes.
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply } from 'fastify'
import type { Knex } from 'knex'
import * as fernet from './lib/fernet'
import { Keyring, fingerprint } from './lib/keyring'
import { envSchema, loadSecrets, type SecretOptions } from './lib/env'
import { openDatabase, type DatabaseOptions } from './lib/database'
import {
  MigrationSource, migrationSource, migrationsTableName,
  migrate, migrationConfig, rollbackAdoption, defaultTables, type Tables,
  type MigrateOptions as MigrateOptionsShape
} from './lib/migrations'
import { drfTables, adoptDrfMigrationsTableName } from './lib/adopt'
import { KeyStore, type ApiKey as ApiKeyShape, type ApiKeyRecord as ApiKeyRecordShape, type KeyPage as KeyPageShape, type ListFilter as ListFilterShape } from './lib/store'
import { VerificationCache, type CacheOptions as CacheOptionsShape } from './lib/cache'
import { Verifier, type IsEntityActive as IsEntityActiveFunction, type RouteApiKeyConfig as RouteApiKeyConfigShape } from './lib/verify'
import { RotatingKeyring, type RotationStatus as RotationStatusShape, type RotationPhase as RotationPhaseName } from './lib/rotation'
import { ApiKeys, type CreateKeyInput as CreateKeyInputShape, type IssuedKey as IssuedKeyShape, type RollOptions as RollOptionsShape } from './lib/keys'
import { Audit, type AuditEvent as AuditEventShape, type OnAuditEvent as OnAuditEventFunction, type ActionContext as ActionContextShape } from './lib/audit'
import { Sync } from './lib/sync'
import { registerRoutes, type RoutesOptions as RoutesOptionsShape } from './lib/routes'
import { adminPage } from './lib/admin'
import { UsageCounter, readUsage, UNMATCHED_ROUTE, type UsageOptions as UsageOptionsShape, type KeyUsage as KeyUsageShape, type RouteUsage as RouteUsageShape } from './lib/usage'
import { rateLimitByKey, type RateLimitByKeyOptions as RateLimitByKeyOptionsShape, type RateLimitByKeyConfig as RateLimitByKeyConfigShape, type KeyRateLimit as KeyRateLimitShape } from './lib/ratelimit'
import { durationOption, type Duration as DurationValue } from './lib/duration'
import { keyPattern } from './lib/pattern'
import { InvalidOptionError, NotAdoptedError, NotMigratedError } from './lib/errors'
import * as errors from './lib/errors'

const DEFAULT_KEYWORD = 'Api-Key'
const MAX_KEY_LENGTH = 2048

async function fastifySimpleApiKey (fastify: FastifyInstance, options: fastifySimpleApiKey.SimpleApiKeyOptions): Promise<void> {
  const settings = readOptions(options)
  const secrets = loadSecrets(options)
  const database = openDatabase(options, fastify.log)
  const { knex } = database
  const tables: Tables = { ...defaultTables, ...options.tables }

  const closers: Array<() => Promise<void> | void> = []
  fastify.addHook('onClose', async () => {
    for (const close of closers.reverse()) await close()
  })
  if (database.owned) closers.push(() => knex.destroy())

  if (options.migrate ?? database.embedded) await migrate(knex, tables)

  const audit = new Audit(fastify.log, options.onAuditEvent)
  const store = new KeyStore(knex, tables, { preparedReads: !database.embedded })
  const cache = options.cache === false ? null : new VerificationCache(options.cache)
  let verifier: Verifier | null = null
  let keyring: RotatingKeyring | null = null
  const sync = new Sync({
    knex,
    shared: !database.embedded,
    connectionConfig: database.connectionConfig,
    table: tables.keys,
    interval: settings.syncInterval,
    log: fastify.log,
    onMessage (message) {
      if (message.kind === 'key') verifier?.invalidateKey(message.id)
      if (message.kind === 'resync') verifier?.invalidateAll()
      if (message.kind === 'rotation' || message.kind === 'resync') {
        keyring?.refresh().catch(err => fastify.log.error({ err }, 'fastify-simple-apikey: could not re-read the rotation state'))
      }
    }
  })
  keyring = new RotatingKeyring({
    secrets,
    knex,
    tables,
    rotationPeriod: settings.rotationPeriod,
    log: fastify.log,
    audit,
    onChange: () => verifier?.invalidateAll(),
    publish: () => sync.publish({ kind: 'rotation' })
  })
  closers.push(() => keyring!.close())
  await startOrExplain(() => store.checkColumns(), tables.keys)
  await startOrExplain(() => keyring!.refresh(), tables.rotations)
  closers.push(() => sync.close())
  await sync.start()

  // Pushed after the database's closer, so it runs before it: the last counts are written while the database is open.
  const usage = settings.usageFlushInterval === null ? null : new UsageCounter({ knex, tables, log: fastify.log }, settings.usageFlushInterval)
  if (usage !== null) closers.push(() => usage.close())

  verifier = new Verifier({
    keyword: settings.keyword,
    keyPrefix: settings.keyPrefix,
    enforceHttps: options.enforceHttps === true,
    isEntityActive: options.isEntityActive,
    maxKeyLength: MAX_KEY_LENGTH
  }, { keyring, findKey: id => store.find(id), cache })

  const apiKeys = new ApiKeys({ keyPrefix: settings.keyPrefix, perKeySecret: options.perKeySecret !== false, keyLifetime: settings.keyLifetime }, {
    store,
    keyring,
    verifier,
    audit,
    publishKeyChange: id => sync.publish({ kind: 'key', id }),
    readUsage: id => readUsage(knex, tables, id),
    flushUsage: () => usage === null ? Promise.resolve() : usage.flush()
  })

  const liveKeyring = keyring
  const verifyApiKey = verifier.createHook((request, reply, token, verified, route) => {
    usage?.record(verified.apiKey.id, request.method, route.url)
    if (settings.renewal && liveKeyring.phase === 'transition' && verified.fingerprint !== liveKeyring.current.encryptingFingerprint) {
      reply.header('api-key-renewal', settings.keyPrefix + liveKeyring.reencrypt(token))
    }
  })

  fastify.decorate('keyring', keyring)
  fastify.decorate('apiKeys', apiKeys)
  fastify.decorate('verifyApiKey', verifyApiKey)
  fastify.decorateRequest('apiKey', null)
  if (options.hook !== false) fastify.addHook('onRequest', verifyApiKey)
  if (options.routes !== false) {
    const routes = options.routes ?? {}
    registerRoutes(fastify, routes, {
      verifyApiKey,
      globalHook: options.hook !== false,
      adminPage: adminPage({ keyword: settings.keyword, appGuard: routes.preHandler !== undefined })
    })
  }
}

interface Settings {
  keyword: string
  keyPrefix: string
  keyLifetime: number
  rotationPeriod: number
  syncInterval: number
  renewal: boolean
  /** ms between usage writes, or null when usage is not counted. */
  usageFlushInterval: number | null
}

function readOptions (options: fastifySimpleApiKey.SimpleApiKeyOptions): Settings {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'expected an object')
  const keyword = options.keyword ?? DEFAULT_KEYWORD
  if (typeof keyword !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(keyword)) {
    throw new InvalidOptionError('keyword', 'expected an HTTP auth scheme token such as \'Api-Key\'')
  }
  const keyPrefix = options.keyPrefix ?? ''
  if (typeof keyPrefix !== 'string' || !/^[A-Za-z0-9_.-]{0,32}$/.test(keyPrefix)) {
    throw new InvalidOptionError('keyPrefix', 'expected up to 32 letters, digits, \'_\', \'-\' or \'.\'')
  }
  if (options.isEntityActive !== undefined && typeof options.isEntityActive !== 'function') {
    throw new InvalidOptionError('isEntityActive', 'expected a function (entityId, request) => boolean | Promise<boolean>')
  }
  if (options.onAuditEvent !== undefined && typeof options.onAuditEvent !== 'function') {
    throw new InvalidOptionError('onAuditEvent', 'expected a function (event) => void')
  }
  if (options.renewal !== undefined && options.renewal !== false && options.renewal !== 'header') {
    throw new InvalidOptionError('renewal', 'expected \'header\' or false')
  }
  if (options.routes !== undefined && options.routes !== false) {
    const { prefix, preHandler, admin } = options.routes
    if (prefix !== undefined && (typeof prefix !== 'string' || !prefix.startsWith('/'))) throw new InvalidOptionError('routes.prefix', 'expected a path starting with \'/\'')
    if (preHandler !== undefined && typeof preHandler !== 'function') throw new InvalidOptionError('routes.preHandler', 'expected a preHandler hook function')
    if (admin !== undefined && typeof admin !== 'boolean') throw new InvalidOptionError('routes.admin', 'expected true or false')
  }
  if (options.cache !== undefined && options.cache !== false) {
    const { max, ttl } = options.cache
    if (max !== undefined && !(Number.isSafeInteger(max) && max > 0)) throw new InvalidOptionError('cache.max', 'expected a positive whole number')
    if (ttl !== undefined && !(Number.isSafeInteger(ttl) && ttl > 0)) throw new InvalidOptionError('cache.ttl', 'expected milliseconds, above 0')
  }
  for (const [name, value] of Object.entries(options.tables ?? {})) {
    if (typeof value !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(value)) throw new InvalidOptionError(`tables.${name}`, 'expected a table name')
  }
  if (options.usage !== undefined && options.usage !== false && (options.usage === null || typeof options.usage !== 'object')) {
    throw new InvalidOptionError('usage', 'expected { flushInterval } or false')
  }
  const usageFlushInterval = options.usage === false ? null : durationOption('usage.flushInterval', options.usage?.flushInterval, 5_000)
  if (usageFlushInterval !== null && usageFlushInterval < 10) throw new InvalidOptionError('usage.flushInterval', 'expected at least 10 ms')
  const syncInterval = durationOption('syncInterval', options.syncInterval, 5_000)
  if (syncInterval < 100) throw new InvalidOptionError('syncInterval', 'expected at least 100 ms')
  // A rotation with no transition would cut off every client of the outgoing secret at once.
  const rotationPeriod = durationOption('rotationPeriod', options.rotationPeriod, 7 * 24 * 3600 * 1000)
  if (rotationPeriod < 1000) throw new InvalidOptionError('rotationPeriod', 'expected at least 1 second')
  return {
    keyword,
    keyPrefix,
    keyLifetime: durationOption('keyLifetime', options.keyLifetime, 365 * 24 * 3600 * 1000),
    rotationPeriod,
    syncInterval,
    renewal: options.renewal === 'header',
    usageFlushInterval
  }
}

async function startOrExplain (start: () => Promise<void>, table: string): Promise<void> {
  try {
    await start()
  } catch (err) {
    if ((err as { code?: string }).code === '42P01') throw new NotMigratedError(table)
    // A missing column: drf-simple-apikey's table, not adopted yet.
    if ((err as { code?: string }).code === '42703') throw new NotAdoptedError(table)
    throw err
  }
}

fp(fastifySimpleApiKey, { fastify: '5.x', name: 'fastify-simple-apikey' })

declare module 'fastify' {
  interface FastifyInstance {
    /** The live keyring: encrypt, decrypt, rotate, stopRotation, status. */
    keyring: RotatingKeyring
    /** The key life cycle: create, get, list, revoke, roll, reissue. */
    apiKeys: ApiKeys
    /** The verification hook as a function, for `@fastify/auth` or a route's own `onRequest`. */
    verifyApiKey: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
  interface FastifyRequest {
    /** The verified key, or null on a public route. */
    apiKey: ApiKeyShape | null
  }
  interface FastifyContextConfig {
    /** `false`: a public route; `{ scopes }`: scopes the key must have. */
    apiKey?: RouteApiKeyConfigShape | false
  }
}

declare namespace fastifySimpleApiKey {
  export interface SimpleApiKeyOptions extends SecretOptions, DatabaseOptions {
    /** Run the plugin's migrations at register. Default: true on the embedded database, false otherwise. */
    migrate?: boolean
    /** Table names. */
    tables?: Partial<Tables>
    /** Scheme of the Authorization header, case-sensitive. Default `Api-Key`. */
    keyword?: string
    /** Put in front of new keys so that secret scanners can find leaked ones, e.g. `sk_live_`. Default none. */
    keyPrefix?: string
    /** Give new keys a per-key secret, of which the row keeps a hash. Default true. */
    perKeySecret?: boolean
    /** Lifetime of a new key when `expiresAt` is not given. Default '365d'. */
    keyLifetime?: Duration
    /** Register the global `onRequest` hook. Default true; false to use `fastify.verifyApiKey` yourself. */
    hook?: boolean
    /** Refuse keys whose entity is not active (403). */
    isEntityActive?: IsEntityActive
    /** Refuse keys on requests that are not HTTPS (403). Default false. */
    enforceHttps?: boolean
    /** Transition period of a rotation. Default '7d'. */
    rotationPeriod?: Duration
    /** How often the rotation state is re-read, the fallback to notifications, in ms. Default 5000. */
    syncInterval?: Duration
    /** 'header': during a transition, answers to keys under the outgoing secret carry `Api-Key-Renewal`. Default false. */
    renewal?: 'header' | false
    /** Verification cache bounds, or false for none. Default `{ max: 10000, ttl: 60000 }`. */
    cache?: CacheOptions | false
    /** Receives every audit event, e.g. to store them. */
    onAuditEvent?: OnAuditEvent
    /** The rotation, management and reissue routes, or false for none. */
    routes?: RoutesOptions | false
    /** Count accepted requests per key, route and method, written every `flushInterval` (default 5 s); false to count nothing. */
    usage?: UsageOptions | false
  }
  export type Duration = DurationValue
  export type ApiKey = ApiKeyShape
  export type ApiKeyRecord = ApiKeyRecordShape
  export type KeyPage = KeyPageShape
  export type ListFilter = ListFilterShape
  export type CacheOptions = CacheOptionsShape
  export type RoutesOptions = RoutesOptionsShape
  export type RouteApiKeyConfig = RouteApiKeyConfigShape
  export type IsEntityActive = IsEntityActiveFunction
  export type RotationStatus = RotationStatusShape
  export type RotationPhase = RotationPhaseName
  export type CreateKeyInput = CreateKeyInputShape
  export type IssuedKey = IssuedKeyShape
  export type RollOptions = RollOptionsShape
  export type AuditEvent = AuditEventShape
  export type OnAuditEvent = OnAuditEventFunction
  export type ActionContext = ActionContextShape
  export type UsageOptions = UsageOptionsShape
  export type KeyUsage = KeyUsageShape
  export type RouteUsage = RouteUsageShape
  export type RateLimitByKeyOptions = RateLimitByKeyOptionsShape
  export type RateLimitByKeyConfig = RateLimitByKeyConfigShape
  export type KeyRateLimit = KeyRateLimitShape
  export type TableNames = Tables
  export type MigrateOptions = MigrateOptionsShape
  export type KnexInstance = Knex
  export {
    fernet,
    errors,
    Keyring,
    RotatingKeyring,
    ApiKeys,
    fingerprint,
    envSchema,
    MigrationSource,
    migrationSource,
    migrationsTableName,
    migrate,
    migrationConfig,
    rollbackAdoption,
    drfTables,
    adoptDrfMigrationsTableName,
    keyPattern,
    rateLimitByKey,
    UNMATCHED_ROUTE,
    fastifySimpleApiKey as default,
    fastifySimpleApiKey
  }
}

Object.assign(fastifySimpleApiKey, {
  default: fastifySimpleApiKey,
  fastifySimpleApiKey,
  fernet,
  errors,
  Keyring,
  RotatingKeyring,
  ApiKeys,
  fingerprint,
  envSchema,
  MigrationSource,
  migrationSource,
  migrationsTableName,
  migrate,
  migrationConfig,
  rollbackAdoption,
  drfTables,
  adoptDrfMigrationsTableName,
  keyPattern,
  rateLimitByKey,
  UNMATCHED_ROUTE
})

export = fastifySimpleApiKey

// Never runs. Node's ESM loader reads the names of CommonJS exports from an object literal like this one, whose values
// must be plain identifiers (esbuild's annotation), so that `import { Keyring } from 'fastify-simple-apikey'` works too.
0 && (module.exports = {
  default: fastifySimpleApiKey,
  fastifySimpleApiKey,
  fernet: fastifySimpleApiKey,
  errors: fastifySimpleApiKey,
  Keyring: fastifySimpleApiKey,
  RotatingKeyring: fastifySimpleApiKey,
  ApiKeys: fastifySimpleApiKey,
  fingerprint: fastifySimpleApiKey,
  envSchema: fastifySimpleApiKey,
  MigrationSource: fastifySimpleApiKey,
  migrationSource: fastifySimpleApiKey,
  migrationsTableName: fastifySimpleApiKey,
  migrate: fastifySimpleApiKey,
  migrationConfig: fastifySimpleApiKey,
  rollbackAdoption: fastifySimpleApiKey,
  drfTables: fastifySimpleApiKey,
  adoptDrfMigrationsTableName: fastifySimpleApiKey,
  keyPattern: fastifySimpleApiKey,
  rateLimitByKey: fastifySimpleApiKey,
  UNMATCHED_ROUTE: fastifySimpleApiKey
})
