import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import { expectAssignable, expectError, expectType } from 'tsd'
import simpleApiKey, {
  fernet, Keyring, fingerprint, envSchema, migrationSource, migrationsTableName, MigrationSource, keyPattern,
  migrate, migrationConfig, rollbackAdoption, drfTables, rateLimitByKey, UNMATCHED_ROUTE, errors,
  type SimpleApiKeyOptions, type ApiKey, type ApiKeyRecord, type IssuedKey, type RotationStatus, type AuditEvent,
  type KeyUsage, type TableNames
} from '..'
import fastifyRateLimit from '@fastify/rate-limit'
import type { Knex } from 'knex'
import * as cjs from '..'

const app = Fastify()
app.register(simpleApiKey, { fernetSecret: fernet.generateSecret() })
app.register(simpleApiKey, {
  fernetSecret: 'x',
  rotationFernetSecret: 'y',
  connection: 'postgres://localhost/app',
  migrate: true,
  tables: { keys: 'keys' },
  keyword: 'Api-Key',
  keyPrefix: 'sk_live_',
  perKeySecret: true,
  keyLifetime: '365d',
  hook: true,
  isEntityActive: async (entityId: string, request: FastifyRequest) => entityId !== '' && request.ip !== '',
  enforceHttps: false,
  rotationPeriod: '7d',
  syncInterval: 5000,
  renewal: 'header',
  cache: { max: 1000, ttl: 60_000 },
  usage: { flushInterval: '5s' },
  routes: { prefix: '/internal/apikeys', admin: false, preHandler: async () => {} },
  onAuditEvent: (event: AuditEvent) => { expectType<string>(event.actor) }
})
app.register(simpleApiKey.default, {})
app.register(simpleApiKey.fastifySimpleApiKey, { cache: false })
expectError(app.register(simpleApiKey, { keyword: 42 }))
expectError(app.register(simpleApiKey, { renewal: 'body' }))
expectError(app.register(simpleApiKey, { usage: { flushInterval: true } }))
app.register(simpleApiKey, { usage: false, routes: false })
app.register(fastifyRateLimit, { ...rateLimitByKey({ defaultMax: 100, defaultTimeWindow: '1 minute' }) })
expectAssignable<SimpleApiKeyOptions>({ dataDir: '.data' })

app.get('/fruits', { config: { apiKey: { scopes: ['fruits:read'] } } }, async request => {
  expectType<ApiKey | null>(request.apiKey)
  expectType<number | undefined>(request.apiKey?.id)
  expectType<string[] | undefined>(request.apiKey?.scopes)
  return 'ok'
})
app.get('/public', { config: { apiKey: false } }, async () => 'ok')
expectError(app.get('/bad', { config: { apiKey: { scopes: 'fruits:read' } } }, async () => 'ok'))

app.after(async () => {
  const issued = await app.apiKeys.create({ entityId: 42, scopes: ['a'], expiresAt: new Date() })
  expectType<IssuedKey>(issued)
  expectType<string>(issued.key)
  expectType<ApiKeyRecord>(issued.record)
  expectType<ApiKeyRecord | null>(await app.apiKeys.get(1))
  expectType<ApiKeyRecord[]>((await app.apiKeys.list({ entityId: '42', revoked: false })).items)
  expectType<ApiKeyRecord>(await app.apiKeys.revoke(1))
  expectType<number[]>(await app.apiKeys.revokeMany([1, 2]))
  expectType<IssuedKey>(await app.apiKeys.roll(1, { gracePeriod: '7d' }))
  expectType<IssuedKey>(await app.apiKeys.reissue(issued.key))
  expectError(app.apiKeys.create({ name: 'no entity' }))
  const usage = await app.apiKeys.usage(1)
  expectType<KeyUsage>(usage)
  expectType<number>(usage.total)
  expectType<Date | null>(usage.lastUsedAt)
  expectType<string>(usage.routes[0].route)
  expectType<void>(await app.apiKeys.flushUsage())

  expectType<string>(app.keyring.encrypt({ _pk: 1 }))
  expectType<Record<string, unknown>>(app.keyring.decrypt('token'))
  expectType<string>(app.keyring.reencrypt('token'))
  expectType<RotationStatus>(await app.keyring.rotate())
  expectType<RotationStatus>(await app.keyring.stopRotation({ actor: 'ops' }))
  const status = await app.keyring.status()
  expectType<'idle' | 'staged' | 'transition' | 'completed'>(status.phase)
  expectType<number>(status.keysToRetire)
  expectType<(request: FastifyRequest, reply: FastifyReply) => Promise<void>>(app.verifyApiKey)
})

expectType<string>(fernet.encrypt(fernet.generateSecret(), 'hello', { now: new Date(), iv: Buffer.alloc(16) }))
expectType<Buffer>(fernet.decrypt('secret', 'token', { ttl: 60, now: new Date() }))
expectType<string>(new Keyring(['a', 'b']).encrypt({ a: 1 }))
expectType<string>(fingerprint('secret'))
expectAssignable<string>(migrationsTableName)
expectAssignable<MigrationSource>(migrationSource)
expectType<RegExp>(keyPattern('sk_live_'))
expectType<readonly ['FERNET_SECRET']>(envSchema.required)
expectType<typeof simpleApiKey>(cjs.default)
expectAssignable<TableNames>(drfTables)
expectAssignable<string>(UNMATCHED_ROUTE)
declare const knex: Knex
expectType<Promise<void>>(migrate(knex))
expectType<Promise<void>>(migrate(knex, drfTables, { adoptDrf: true }))
expectAssignable<Knex.MigratorConfig>(migrationConfig(drfTables, { adoptDrf: true }))
expectAssignable<Promise<unknown>>(rollbackAdoption(knex, drfTables))
expectAssignable<Error>(new errors.InvalidKeyError())
