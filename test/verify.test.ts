import { test } from 'tap'
import { createHash } from 'node:crypto'
import Fastify from 'fastify'
import fastifyAuth from '@fastify/auth'
import { createTestDatabase } from './helpers/database'
import { connectThroughProxy } from './helpers/proxy'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import simpleApiKey, { fernet, Keyring, keyPattern } from '../index'

test('verification: every row of the table against real PostgreSQL', async t => {
  const db = await createTestDatabase(t, 'verify')
  let active = true
  const app = await buildApp(t, db.knex, { isEntityActive: entityId => entityId !== 'inactive' && active })
  const { key, record } = await app.apiKeys.create({ name: 'reader', entityId: 'user-1', scopes: ['fruits:read'] })

  const expect = async (headers: Record<string, string>, status: number, code: string | null, message: string | null, url = '/fruits') => {
    const res = await app.inject({ url, headers })
    t.equal(res.statusCode, status, `${code ?? 'ok'}: status`)
    if (code !== null) {
      const body = res.json()
      t.equal(body.code, code)
      t.equal(body.message, message)
      t.equal(body.statusCode, status)
      t.ok(body.error)
      t.equal(res.headers['www-authenticate'], status === 401 ? 'Api-Key' : undefined, `${code}: WWW-Authenticate`)
    }
    return res
  }

  const ok = await expect(auth(key), 200, null, null)
  t.same(ok.json().apiKey, { id: record.id, name: 'reader', entityId: 'user-1', scopes: ['fruits:read'], expiresAt: record.expiresAt.toISOString(), metadata: {} })

  await expect({}, 401, 'FST_APIKEY_MISSING', 'Authentication credentials were not provided.')
  await expect({ authorization: `Bearer ${key}` }, 401, 'FST_APIKEY_MISSING', 'Authentication credentials were not provided.')
  await expect({ authorization: `api-key ${key}` }, 401, 'FST_APIKEY_MISSING', 'Authentication credentials were not provided.')
  await expect({ authorization: 'Api-Key' }, 401, 'FST_APIKEY_MALFORMED', 'Incorrect API KEY format.')
  await expect({ authorization: `Api-Key\t${key}` }, 200, null, null)
  await expect({ authorization: `  Api-Key   ${key}  ` }, 200, null, null)
  await expect({ authorization: `Api-Key ${key} ${key}` }, 401, 'FST_APIKEY_MALFORMED', 'Incorrect API KEY format.')
  await expect({ authorization: 'Api-Key not-a-token' }, 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(new Keyring([fernet.generateSecret()]).encrypt({ _pk: record.id, _exp: 4e9 })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  const underA = new Keyring([secretA])
  await expect(auth(fernet.encrypt(secretA, '[1]')), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(underA.encrypt({ _exp: 4e9 })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(underA.encrypt({ _pk: record.id })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(underA.encrypt({ _pk: String(record.id), _exp: 4e9 })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(underA.encrypt({ _pk: record.id, _exp: 'never' })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(underA.encrypt({ _pk: record.id, _exp: 4e9 })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')
  await expect(auth(underA.encrypt({ _pk: record.id, _exp: 4e9, _secret: 'wrong' })), 401, 'FST_APIKEY_INVALID', 'Invalid API Key.')

  await expect(auth(underA.encrypt({ _pk: record.id, _exp: Date.now() / 1000 - 1 })), 401, 'FST_APIKEY_EXPIRED', 'API Key has already expired.')
  const shortLived = await app.apiKeys.create({ entityId: 'user-1', expiresAt: new Date(Date.now() + 60_000) })
  await db.knex('api_keys').where({ id: shortLived.record.id }).update({ expiry_date: new Date(Date.now() - 1000) })
  await expect(auth(shortLived.key), 401, 'FST_APIKEY_EXPIRED', 'API Key has already expired.', '/whoami')

  await expect(auth(underA.encrypt({ _pk: 999999, _exp: 4e9 })), 401, 'FST_APIKEY_NOT_FOUND', 'No entity matching this api key.')

  const revoked = await app.apiKeys.create({ entityId: 'user-1' })
  await app.apiKeys.revoke(revoked.record.id)
  await expect(auth(revoked.key), 401, 'FST_APIKEY_REVOKED', 'This API Key has been revoked.', '/whoami')

  const denied = await app.apiKeys.create({ entityId: 'user-1', blacklistedIps: ['10.0.0.0/8', '127.0.0.0/24'] })
  await expect(auth(denied.key), 403, 'FST_APIKEY_IP_DENIED', 'Access denied from blacklisted IP.', '/whoami')
  const elsewhere = await app.apiKeys.create({ entityId: 'user-1', whitelistedIps: ['192.168.1.0/24', '2001:db8::/32'] })
  await expect(auth(elsewhere.key), 403, 'FST_APIKEY_IP_NOT_ALLOWED', 'Access restricted to specific IP addresses.', '/whoami')
  const here = await app.apiKeys.create({ entityId: 'user-1', whitelistedIps: ['127.0.0.1'], blacklistedIps: ['10.0.0.1'] })
  await expect(auth(here.key), 200, null, null, '/whoami')

  const inactive = await app.apiKeys.create({ entityId: 'inactive' })
  await expect(auth(inactive.key), 403, 'FST_APIKEY_ENTITY_INACTIVE', 'Entity is not active.', '/whoami')

  const writer = await app.apiKeys.create({ entityId: 'user-1', scopes: ['fruits:write'] })
  await expect(auth(writer.key), 403, 'FST_APIKEY_INSUFFICIENT_SCOPE', 'This API key does not have the required scope(s) for this action.')
  const unscoped = await app.apiKeys.create({ entityId: 'user-1' })
  await expect(auth(unscoped.key), 200, null, null, '/fruits')

  const publicRes = await app.inject({ url: '/public' })
  t.same(publicRes.json(), { public: true, apiKey: null }, 'public route: no key needed, request.apiKey is null')

  active = false
  await expect(auth(key), 403, 'FST_APIKEY_ENTITY_INACTIVE', 'Entity is not active.')
})

test('HTTPS enforcement', async t => {
  const db = await createTestDatabase(t, 'https')
  const app = await buildApp(t, db.knex, { enforceHttps: true })
  const { key } = await app.apiKeys.create({ entityId: 'e' })
  const res = await app.inject({ url: '/whoami', headers: auth(key) })
  t.equal(res.statusCode, 403)
  t.equal(res.json().code, 'FST_APIKEY_HTTPS_REQUIRED')
  t.match(res.json().message, /^API key authentication requires HTTPS\./)
})

test('HTTPS behind a trusted proxy follows Fastify\'s trustProxy', async t => {
  const db = await createTestDatabase(t, 'proxy')
  const app = Fastify({ trustProxy: true })
  await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, migrate: true, enforceHttps: true })
  app.get('/', async request => ({ id: request.apiKey?.id, ip: request.ip }))
  t.teardown(() => app.close())
  const { key, record } = await app.apiKeys.create({ entityId: 'e', whitelistedIps: ['203.0.113.7'] })
  const res = await app.inject({ url: '/', headers: { ...auth(key), 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.7' } })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { id: record.id, ip: '203.0.113.7' })
  const wrongIp = await app.inject({ url: '/', headers: { ...auth(key), 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.8' } })
  t.equal(wrongIp.json().code, 'FST_APIKEY_IP_NOT_ALLOWED')
})

test('the row keeps a hash of the per-key secret and never the key', async t => {
  const db = await createTestDatabase(t, 'stored')
  const app = await buildApp(t, db.knex)
  const { key, record } = await app.apiKeys.create({ entityId: 'e', scopes: ['a'], metadata: { plan: 'pro' } })
  const payload = app.keyring.decrypt(key)
  t.same(Object.keys(payload), ['_pk', '_exp', '_secret'])
  t.equal(payload._pk, record.id)
  t.equal(payload._exp, record.expiresAt.getTime() / 1000)
  const row = await db.knex('api_keys').where({ id: record.id }).first()
  t.equal(row.hashed_secret, createHash('sha256').update(payload._secret as string).digest('hex'))
  const dump = JSON.stringify(await db.knex('api_keys').select())
  t.notOk(dump.includes(key), 'no key in the table')
  t.notOk(dump.includes(payload._secret as string), 'no per-key secret in the table')

  const withoutSecret = await buildApp(t, db.connect(), { perKeySecret: false, migrate: false })
  const plain = await withoutSecret.apiKeys.create({ entityId: 'e' })
  t.notOk('_secret' in withoutSecret.keyring.decrypt(plain.key))
  t.equal((await db.knex('api_keys').where({ id: plain.record.id }).first()).hashed_secret, '')
  t.equal((await withoutSecret.inject({ url: '/whoami', headers: auth(plain.key) })).statusCode, 200, 'empty hashed_secret: accepted without the check')
})

test('keyPrefix: new keys carry it, keys without it still work, and keyPattern finds them', async t => {
  const db = await createTestDatabase(t, 'prefix')
  const app = await buildApp(t, db.knex, { keyPrefix: 'sk_live_' })
  const { key } = await app.apiKeys.create({ entityId: 'e' })
  t.match(key, /^sk_live_gAAAAA/)
  t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)
  t.equal((await app.inject({ url: '/whoami', headers: auth(key.slice('sk_live_'.length)) })).statusCode, 200, 'unprefixed key accepted')
  const text = `config: API_KEY=${key} # leaked`
  t.same(text.match(keyPattern('sk_live_')), [key])
  t.same('nothing here gAAAA'.match(keyPattern('sk_live_')), null)
})

test('a database that cannot be reached answers 503, never 500 and never lets through', async t => {
  const db = await createTestDatabase(t, 'down')
  const { proxy, knex } = await connectThroughProxy(t, db.url)
  const app = await buildApp(t, knex, { cache: false })
  const { key } = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)

  proxy.cut()
  const res = await app.inject({ url: '/whoami', headers: auth(key) })
  t.equal(res.statusCode, 503)
  t.equal(res.json().code, 'FST_APIKEY_UNAVAILABLE')
  t.equal((await app.inject({ url: '/whoami', headers: auth('garbage') })).statusCode, 401, 'forged keys need no database')

  proxy.restore()
  t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200, 'recovers without a restart')
})

test('request.apiKey and decorators with hook: false, for @fastify/auth composition', async t => {
  const db = await createTestDatabase(t, 'nohook')
  const app = Fastify()
  await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, rotationFernetSecret: secretB, migrate: true, hook: false })
  await app.register(fastifyAuth)
  app.get('/open', async request => ({ apiKey: request.apiKey }))
  app.after(() => {
    app.get('/guarded', { preHandler: app.auth([app.verifyApiKey]) }, async request => ({ id: request.apiKey?.id }))
  })
  await app.ready()
  t.teardown(() => app.close())
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  t.same((await app.inject({ url: '/open' })).json(), { apiKey: null }, 'no global hook')
  t.equal((await app.inject({ url: '/guarded' })).statusCode, 401)
  t.same((await app.inject({ url: '/guarded', headers: auth(key) })).json(), { id: record.id })
})
