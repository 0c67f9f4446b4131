import { test } from 'tap'
import { randomBytes } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import fastifyAuth from '@fastify/auth'
import { Redis } from 'ioredis'
import type { Knex } from 'knex'
import { createTestDatabase } from './helpers/database'
import { auth, secretA } from './helpers/app'
import simpleApiKey, { rateLimitByKey, type RateLimitByKeyOptions } from '../index'

interface Teardown { teardown: (fn: () => Promise<void> | void) => void }

async function limitedApp (t: Teardown, knex: Knex, limits: RateLimitByKeyOptions, extra: { redis?: Redis, nameSpace?: string, limiterFirst?: boolean } = {}): Promise<FastifyInstance> {
  const app = Fastify()
  const limiter = { ...rateLimitByKey(limits), redis: extra.redis, nameSpace: extra.nameSpace }
  if (extra.limiterFirst === true) await app.register(rateLimit, limiter)
  await app.register(simpleApiKey, { knex, fernetSecret: secretA, migrate: true, usage: false })
  if (extra.limiterFirst !== true) await app.register(rateLimit, limiter)
  app.get('/whoami', async request => ({ id: request.apiKey?.id }))
  app.get('/public', { config: { apiKey: false } }, async () => ({ public: true }))
  await app.ready()
  t.teardown(() => app.close())
  return app
}

const remaining = (res: { headers: Record<string, unknown> }) => Number(res.headers['x-ratelimit-remaining'])

for (const limiterFirst of [false, true]) {
  test(`each key has its own limit from its metadata; rejected keys use no quota (limiter registered ${limiterFirst ? 'before' : 'after'} the plugin)`, async t => {
    const db = await createTestDatabase(t, 'ratelimit_local')
    const app = await limitedApp(t, db.knex, { defaultMax: 3 }, { limiterFirst })
    const generous = await app.apiKeys.create({ entityId: 'a', metadata: { rateLimit: { max: 5, timeWindow: '1 minute' } } })
    const plain = await app.apiKeys.create({ entityId: 'b' })
    const other = await app.apiKeys.create({ entityId: 'c', metadata: { rateLimit: { max: 5 } } })
    const revoked = await app.apiKeys.create({ entityId: 'a', metadata: { rateLimit: { max: 5 } } })
    await app.apiKeys.revoke(revoked.record.id)
    const call = (key?: string, url = '/whoami') => app.inject({ url, headers: key === undefined ? {} : auth(key) })

    const first = await call(generous.key)
    t.equal(first.statusCode, 200)
    t.equal(first.headers['x-ratelimit-limit'], '5', 'the limit is the key\'s own')
    t.equal(remaining(first), 4)

    for (let i = 0; i < 20; i++) {
      t.equal((await call(generous.key.slice(0, -6) + 'AAAAAA')).statusCode, 401)
      t.equal((await call(revoked.key)).statusCode, 401)
      t.equal((await call('not-a-key')).statusCode, 401)
      t.equal((await call()).statusCode, 401)
    }
    const second = await call(generous.key)
    t.equal(remaining(second), 3, 'eighty rejected requests took nothing from the key\'s quota')
    t.equal(remaining(await call(undefined, '/public')), 2, 'nor from the address\'s quota on public routes')

    for (let i = 0; i < 3; i++) t.equal((await call(generous.key)).statusCode, 200)
    const limited = await call(generous.key)
    t.equal(limited.statusCode, 429, 'the sixth request in the window is refused')
    t.equal(limited.headers['x-ratelimit-limit'], '5')
    t.ok(Number(limited.headers['retry-after']) > 0)

    t.equal((await call(other.key)).statusCode, 200, 'another key with the same limit is unaffected')
    t.equal(remaining(await call(other.key)), 3)
    for (let i = 0; i < 3; i++) t.equal((await call(plain.key)).statusCode, 200)
    const plainLimited = await call(plain.key)
    t.equal(plainLimited.statusCode, 429, 'a key without a limit in its metadata gets the default')
    t.equal(plainLimited.headers['x-ratelimit-limit'], '3')

    const admin = await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })
    const managed = await app.inject({ url: '/apikeys/rotation', headers: auth(admin.key) })
    t.equal(managed.statusCode, 200)
    t.equal(managed.headers['x-ratelimit-limit'], limiterFirst ? '3' : undefined,
      limiterFirst ? 'registered before the plugin, the limiter covers its routes too' : 'registered after, it covers the routes declared after it')
  })
}

test('the key\'s own time window; values that are no limit fall back to the defaults', async t => {
  const db = await createTestDatabase(t, 'ratelimit_window')
  const app = await limitedApp(t, db.knex, { defaultMax: 4, defaultTimeWindow: '1 hour' })
  const short = await app.apiKeys.create({ entityId: 'a', metadata: { rateLimit: { max: 2, timeWindow: '2 seconds' } } })
  const long = await app.apiKeys.create({ entityId: 'b', metadata: { rateLimit: { max: 2 } } })
  const reset = async (key: string) => Number((await app.inject({ url: '/whoami', headers: auth(key) })).headers['x-ratelimit-reset'])
  t.ok(await reset(short.key) <= 2, 'a window of 2 s resets within 2 s')
  t.ok(await reset(long.key) > 3500, 'the default window of 1 hour')

  for (const rateLimit of [{ max: -1 }, { max: 2.5 }, { max: '7' }, { timeWindow: 'soon' }, { timeWindow: 0 }, 'fast', null, []]) {
    const odd = await app.apiKeys.create({ entityId: 'c', metadata: { rateLimit } })
    const res = await app.inject({ url: '/whoami', headers: auth(odd.key) })
    t.equal(res.statusCode, 200, JSON.stringify(rateLimit))
    t.equal(res.headers['x-ratelimit-limit'], '4', `${JSON.stringify(rateLimit)}: default max`)
    t.ok(Number(res.headers['x-ratelimit-reset']) > 3500, `${JSON.stringify(rateLimit)}: default window`)
  }
})

test('two instances share one key\'s limit through Redis; other keys are unaffected', async t => {
  const db = await createTestDatabase(t, 'ratelimit_redis')
  const nameSpace = `simple-apikey-test-${randomBytes(6).toString('hex')}-`
  const connect = () => new Redis({ host: '127.0.0.1', port: 6379, connectTimeout: 2000, maxRetriesPerRequest: 1 })
  const redisA = connect()
  const redisB = connect()
  t.teardown(async () => {
    const keys = await redisA.keys(`${nameSpace}*`)
    if (keys.length > 0) await redisA.del(...keys)
    await redisA.quit()
    await redisB.quit()
  })
  const limits = { defaultMax: 100 }
  const one = await limitedApp(t, db.knex, limits, { redis: redisA, nameSpace })
  const two = await limitedApp(t, db.connect(), limits, { redis: redisB, nameSpace })
  const shared = await one.apiKeys.create({ entityId: 'a', metadata: { rateLimit: { max: 5, timeWindow: '1 minute' } } })
  const bystander = await one.apiKeys.create({ entityId: 'b', metadata: { rateLimit: { max: 5, timeWindow: '1 minute' } } })

  const statuses: number[] = []
  for (const app of [one, one, one, two, two]) statuses.push((await app.inject({ url: '/whoami', headers: auth(shared.key) })).statusCode)
  const sixth = await two.inject({ url: '/whoami', headers: auth(shared.key) })
  t.same(statuses, [200, 200, 200, 200, 200])
  t.equal(sixth.statusCode, 429, '3 on one instance and 3 on the other: the sixth is refused')
  t.equal((await one.inject({ url: '/whoami', headers: auth(shared.key) })).statusCode, 429, 'on both instances')

  t.equal((await two.inject({ url: '/whoami', headers: auth(shared.key.slice(0, -6) + 'AAAAAA') })).statusCode, 401)
  const bystanderRes = await two.inject({ url: '/whoami', headers: auth(bystander.key) })
  t.equal(bystanderRes.statusCode, 200, 'another key is unaffected')
  t.equal(remaining(bystanderRes), 4)
  t.equal(await redisA.get(`${nameSpace}apikey:${shared.record.id}`), '7', 'one counter in Redis for the key, by id: 7 accepted requests, the 401 not among them')
})

test('with hook: false and @fastify/auth, the limiter runs in preHandler after it', async t => {
  const db = await createTestDatabase(t, 'ratelimit_auth')
  const app = Fastify()
  await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, migrate: true, hook: false, usage: false })
  await app.register(fastifyAuth)
  await app.register(rateLimit, rateLimitByKey({ defaultMax: 2, hook: 'preHandler' }))
  app.after(() => {
    app.get('/guarded', { preHandler: app.auth([app.verifyApiKey]) }, async (request: FastifyRequest) => ({ id: request.apiKey?.id }))
  })
  await app.ready()
  t.teardown(() => app.close())
  const { key } = await app.apiKeys.create({ entityId: 'a' })
  for (let i = 0; i < 5; i++) t.equal((await app.inject({ url: '/guarded', headers: auth('forged') })).statusCode, 401)
  const ok = await app.inject({ url: '/guarded', headers: auth(key) })
  t.equal(ok.statusCode, 200)
  t.equal(remaining(ok), 1)
  t.equal((await app.inject({ url: '/guarded', headers: auth(key) })).statusCode, 200)
  t.equal((await app.inject({ url: '/guarded', headers: auth(key) })).statusCode, 429)
})

test('rateLimitByKey checks its options', async t => {
  for (const options of [{ defaultMax: -1 }, { defaultMax: 1.5 }, { defaultTimeWindow: 'soon' }, { defaultTimeWindow: 0 }, { hook: 'onSend' }]) {
    t.throws(() => rateLimitByKey(options as RateLimitByKeyOptions), { code: 'FST_APIKEY_INVALID_OPTION' }, JSON.stringify(options))
  }
  t.throws(() => rateLimitByKey(null as unknown as RateLimitByKeyOptions), { code: 'FST_APIKEY_INVALID_OPTION' })
})
