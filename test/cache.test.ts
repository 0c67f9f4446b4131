import { test } from 'tap'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import Knex, { type Knex as KnexInstance } from 'knex'
import type { FastifyInstance } from 'fastify'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import { fernet, Keyring } from '../index'
import { Verifier } from '../lib/verify'
import { VerificationCache } from '../lib/cache'
import { KeyStore } from '../lib/store'
import { migrate, defaultTables } from '../lib/migrations'

// No periodic re-read and no usage writes during these tests: every query counted is one the requests made.
const QUIET = { syncInterval: 3_600_000, usage: false as const }
const LONG_TTL = { cache: { ttl: 600_000 } }

/** Counts the queries a Knex instance sends: all of them, and the reads of the keys table. */
function queryCounter (knex: KnexInstance) {
  const counter = { all: 0, keyReads: 0 }
  knex.on('query', (query: { sql: string }) => {
    counter.all++
    if (/^\s*select\b/i.test(query.sql) && query.sql.includes('"api_keys"')) counter.keyReads++
  })
  return counter
}

async function get (app: FastifyInstance, key: string) {
  const res = await app.inject({ url: '/whoami', headers: auth(key) })
  return { status: res.statusCode, code: res.statusCode === 200 ? null : res.json().code as string }
}

/** Runs `requests` and gives the key reads they caused. */
async function readsOf (counter: { keyReads: number }, requests: () => Promise<unknown>): Promise<number> {
  const before = counter.keyReads
  await requests()
  return counter.keyReads - before
}

test('a warm cache answers without any query; cache: false reads the key once per request', async t => {
  const db = await createTestDatabase(t, 'cache_warm')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, QUIET)
  const { key } = await app.apiKeys.create({ entityId: 'e' })

  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 200, code: null })), 1, 'first request: one read')
  const before = queries.all
  const warm = []
  for (let i = 0; i < 50; i++) warm.push((await get(app, key)).status)
  t.same(new Set(warm), new Set([200]), '50 requests on a warm cache, all accepted')
  t.equal(queries.all - before, 0, 'with zero queries of any kind')

  // A cached key inside a header of another form is parsed as any other header.
  const status = async (authorization: string) => {
    const res = await app.inject({ url: '/whoami', headers: { authorization } })
    return { status: res.statusCode, code: res.statusCode === 200 ? null : res.json().code }
  }
  t.same(await status(`Api-Key ${key} ${key}`), { status: 401, code: 'FST_APIKEY_MALFORMED' }, 'cached key followed by another word: malformed')
  t.same(await status(`Api-Key ${key} `), { status: 200, code: null }, 'trailing space: accepted, as drf-simple-apikey does')
  t.same(await status(`Api-Key \t ${key}`), { status: 200, code: null }, 'any run of whitespace between keyword and key')
  t.same(await status(`api-key ${key}`), { status: 401, code: 'FST_APIKEY_MISSING' }, 'the keyword is case-sensitive')
  t.same(await status(`Api-Key${key}`), { status: 401, code: 'FST_APIKEY_MISSING' }, 'no space: no keyword')

  const prefixedKnex = db.connect()
  const prefixedQueries = queryCounter(prefixedKnex)
  const prefixed = await buildApp(t, prefixedKnex, { ...QUIET, keyPrefix: 'sk_', migrate: false })
  const issued = await prefixed.apiKeys.create({ entityId: 'e' })
  const reads = await readsOf(prefixedQueries, async () => {
    for (const form of [issued.key, issued.key.slice(3), issued.key, issued.key.slice(3)]) t.same(await get(prefixed, form), { status: 200, code: null })
  })
  t.equal(reads, 1, 'keyPrefix: with and without the prefix, one key, one read')

  const uncachedKnex = db.connect()
  const uncachedQueries = queryCounter(uncachedKnex)
  const uncached = await buildApp(t, uncachedKnex, { ...QUIET, cache: false, migrate: false })
  const statuses: number[] = []
  const uncachedReads = await readsOf(uncachedQueries, async () => {
    for (let i = 0; i < 10; i++) statuses.push((await get(uncached, key)).status)
  })
  t.same(new Set(statuses), new Set([200]), 'cache: false: 10 requests accepted')
  t.equal(uncachedReads, 10, 'with 10 reads')
})

test('a token that ends like a cached key is judged whole: refused, and the key stays cached', async t => {
  const db = await createTestDatabase(t, 'cache_tag')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, QUIET)
  const { key } = await app.apiKeys.create({ entityId: 'e' })
  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 200, code: null })), 1)

  const sameEnding = [`x${key.slice(1)}`, key.slice(0, 20) + (key[20] === 'A' ? 'B' : 'A') + key.slice(21), key.slice(-60)]
  for (const token of sameEnding) {
    t.equal(token.slice(-43), key.slice(-43), 'the same last 43 characters')
    t.equal(await readsOf(queries, async () => t.same(await get(app, token), { status: 401, code: 'FST_APIKEY_INVALID' }, 'refused')), 0, 'without a read')
    t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 200, code: null }, 'the key itself still works')), 0, 'from the cache')
  }
})

test('cache: false reads through one prepared statement per connection, and falls back when a pooler loses it', async t => {
  const db = await createTestDatabase(t, 'cache_prepared')
  // One connection, so that the test's own queries see the session the plugin's reads ran in.
  const knex = Knex({ client: 'pg', connection: db.url, pool: { min: 1, max: 1 } })
  t.teardown(() => knex.destroy())
  const queries = queryCounter(knex)
  const app = await buildApp(t, knex, { ...QUIET, cache: false })
  const { key } = await app.apiKeys.create({ entityId: 'e' })
  const statements = async () => (await knex.raw('SELECT name FROM pg_prepared_statements')).rows.map((row: { name: string }) => row.name)

  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 200, code: null })), 1)
  const prepared = await statements()
  t.match(prepared, [/^simple_apikey_find_[0-9a-f]{16}$/], 'the read is a named prepared statement')
  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 200, code: null })), 1)
  t.same(await statements(), prepared, 'prepared once, reused')

  // What PgBouncer's transaction mode does to a named statement: the server connection no longer has it.
  await knex.raw('DEALLOCATE ALL')
  t.same(await get(app, key), { status: 200, code: null }, 'the lost statement falls back to the query builder, no error')
  t.same(await get(app, key), { status: 200, code: null })
  t.same(await statements(), [], 'and stays on it')
})

test('cache: false: concurrent requests with different keys share one query, each answered from its own row', async t => {
  const db = await createTestDatabase(t, 'cache_batch')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, { ...QUIET, cache: false })
  const valid = await Promise.all(Array.from({ length: 20 }, (_, index) => app.apiKeys.create({ entityId: `e${index}` })))
  const revoked = await app.apiKeys.create({ entityId: 'revoked' })
  await app.apiKeys.revoke(revoked.record.id)
  const expired = await app.apiKeys.create({ entityId: 'expired' })
  await db.knex('api_keys').where({ id: expired.record.id }).update({ expiry_date: new Date(Date.now() - 1000) })
  const elsewhere = await app.apiKeys.create({ entityId: 'elsewhere', whitelistedIps: ['192.0.2.1'] })
  const unknown = new Keyring([secretA]).encrypt({ _pk: 2 ** 40, _exp: 4e9 })

  const cases: Array<[string, string, { status: number, code?: string, entityId?: string }]> = [
    ...valid.map((issued, index) => [`valid ${index}`, issued.key, { status: 200, entityId: `e${index}` }] as [string, string, { status: number, entityId: string }]),
    ['revoked', revoked.key, { status: 401, code: 'FST_APIKEY_REVOKED' }],
    ['expired', expired.key, { status: 401, code: 'FST_APIKEY_EXPIRED' }],
    ['allowed elsewhere', elsewhere.key, { status: 403, code: 'FST_APIKEY_IP_NOT_ALLOWED' }],
    ['unknown id', unknown, { status: 401, code: 'FST_APIKEY_NOT_FOUND' }]
  ]
  const before = queries.keyReads
  const answers = await Promise.all(cases.map(async ([, key]) => {
    const res = await app.inject({ url: '/whoami', headers: auth(key) })
    return res.statusCode === 200 ? { status: 200, entityId: res.json().apiKey.entityId } : { status: res.statusCode, code: res.json().code }
  }))
  const reads = queries.keyReads - before
  for (const [index, [name, , expected]] of cases.entries()) t.same(answers[index], expected, name)
  t.ok(reads >= 1 && reads < cases.length, `${cases.length} concurrent requests, ${reads} read(s)`)
})

test('concurrent first requests with one key cause exactly one database read', async t => {
  const db = await createTestDatabase(t, 'cache_flight')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, QUIET)
  const { key } = await app.apiKeys.create({ entityId: 'e' })

  // Hold the keys table locked, so that the first read waits in PostgreSQL while the other 49 requests arrive.
  const locker = db.connect()
  const trx = await locker.transaction()
  await trx.raw('LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE')
  const lockerPid = (await trx.raw('SELECT pg_backend_pid() AS pid')).rows[0].pid
  const before = queries.keyReads
  const responses = Promise.all(Array.from({ length: 50 }, () => get(app, key)))
  const blocked = async () => Number((await db.knex.raw('SELECT count(*) AS n FROM pg_stat_activity WHERE ? = ANY(pg_blocking_pids(pid))', [lockerPid])).rows[0].n)
  const deadline = Date.now() + 10_000
  while (await blocked() === 0 && Date.now() < deadline) await sleep(20)
  t.equal(await blocked(), 1, 'one read waits on the lock')
  await sleep(200)
  t.equal(await blocked(), 1, 'still one, after every request has had time to arrive')
  await trx.commit()

  const results = await responses
  t.equal(queries.keyReads - before, 1, '50 concurrent requests: one read')
  t.same(results.filter(result => result.status !== 200), [], 'all 50 accepted')
  t.equal(await readsOf(queries, () => get(app, key)), 0, 'and the key is cached for the next request')
})

test('revoke and roll take effect at once in the instance that made them, however long the TTL', async t => {
  const db = await createTestDatabase(t, 'cache_revoke')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, { ...QUIET, ...LONG_TTL })

  const revoked = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await get(app, revoked.key)).status, 200)
  t.equal(await readsOf(queries, () => get(app, revoked.key)), 0, 'cached')
  await app.apiKeys.revoke(revoked.record.id)
  t.same(await get(app, revoked.key), { status: 401, code: 'FST_APIKEY_REVOKED' }, 'revoke: refused on the next request')

  const many = await Promise.all([app.apiKeys.create({ entityId: 'e' }), app.apiKeys.create({ entityId: 'e' })])
  for (const issued of many) t.equal((await get(app, issued.key)).status, 200)
  await app.apiKeys.revokeMany(many.map(issued => issued.record.id))
  for (const issued of many) t.same(await get(app, issued.key), { status: 401, code: 'FST_APIKEY_REVOKED' }, 'revokeMany: each refused')

  const rolled = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await get(app, rolled.key)).status, 200)
  t.equal(await readsOf(queries, () => get(app, rolled.key)), 0, 'cached')
  const next = await app.apiKeys.roll(rolled.record.id)
  t.same(await get(app, rolled.key), { status: 401, code: 'FST_APIKEY_INVALID' }, 'roll without grace: the old value is refused at once')
  t.same(await get(app, next.key), { status: 200, code: null }, 'the new value works')

  const graced = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await get(app, graced.key)).status, 200)
  const gracePeriod = 2000
  const graceEnds = Date.now() + gracePeriod
  const successor = await app.apiKeys.roll(graced.record.id, { gracePeriod })
  const rolledAt = Date.now()
  t.equal(await readsOf(queries, async () => t.equal((await get(app, graced.key)).status, 200, 'within the grace period: the old value works')), 1,
    'read afresh after the roll')
  // The roll's notification also comes back to this instance and drops the entry once more; once it has, the key stays cached.
  let reads = 1
  while ((reads !== 0 || Date.now() - rolledAt < 300) && Date.now() < graceEnds - 300) {
    await sleep(20)
    reads = await readsOf(queries, () => get(app, graced.key))
  }
  t.equal(reads, 0, 'cached again, with the grace period\'s end')
  await sleep(graceEnds - Date.now() + 50)
  t.equal(await readsOf(queries, async () => t.same(await get(app, graced.key), { status: 401, code: 'FST_APIKEY_INVALID' },
    'the grace period over: refused at once, from the cache')), 0, 'without a read')
  t.equal((await get(app, successor.key)).status, 200)
})

test('rotation start, stop and completion show on the very next request of the instance that made them, cached key or not', async t => {
  const db = await createTestDatabase(t, 'cache_rotation')
  const queries = queryCounter(db.knex)
  const rotationPeriod = 1500
  const app = await buildApp(t, db.knex, { ...QUIET, ...LONG_TTL, rotationFernetSecret: secretB, rotationPeriod, renewal: 'header' })
  const underA = await app.apiKeys.create({ entityId: 'e' })
  const answer = async (key: string) => {
    const res = await app.inject({ url: '/whoami', headers: auth(key) })
    return { status: res.statusCode, renewal: res.headers['api-key-renewal'] !== undefined }
  }
  const warm = async () => {
    await get(app, underA.key)
    t.equal(await readsOf(queries, () => get(app, underA.key)), 0, 'cached')
  }

  await warm()
  t.same(await answer(underA.key), { status: 200, renewal: false }, 'no rotation: no renewal offered')
  await app.keyring.rotate()
  t.same(await answer(underA.key), { status: 200, renewal: true }, 'start: the next request is offered the key under the new secret')

  await warm()
  await app.keyring.stopRotation()
  t.same(await answer(underA.key), { status: 200, renewal: false }, 'stop: the next request is no longer offered a renewal')

  await app.keyring.rotate()
  const underB = await app.apiKeys.create({ entityId: 'e' })
  await warm()
  t.equal((await get(app, underB.key)).status, 200)
  const deadline = Date.now() + rotationPeriod + 10_000
  while (app.keyring.phase !== 'completed' && Date.now() < deadline) await sleep(10)
  t.equal(app.keyring.phase, 'completed', 'the transition ended by the clock')
  // Without the drop, the cached key under the retired secret would pass until the TTL, ten minutes away.
  t.same(await get(app, underA.key), { status: 401, code: 'FST_APIKEY_INVALID' }, 'completion: the retired secret\'s key is refused at once')
  t.same(await get(app, underB.key), { status: 200, code: null }, 'the new secret\'s key still works')
})

test('a key that expires while cached is refused at its expiry, not at the end of the TTL', async t => {
  const db = await createTestDatabase(t, 'cache_expiry')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, { ...QUIET, ...LONG_TTL })
  const expiresAt = Date.now() + 1500
  const { key } = await app.apiKeys.create({ entityId: 'e', expiresAt: new Date(expiresAt) })
  t.equal((await get(app, key)).status, 200)
  t.equal(await readsOf(queries, () => get(app, key)), 0, 'cached')
  await sleep(expiresAt - Date.now() + 50)
  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 401, code: 'FST_APIKEY_EXPIRED' }, 'refused just after its expiry')), 0,
    'the cached entry knows its expiry: no read')

  // The row's expiry counts too when it is earlier than the token's, e.g. after an operator shortened it.
  const shortened = await app.apiKeys.create({ entityId: 'e' })
  const rowExpiry = Date.now() + 1500
  await db.knex('api_keys').where({ id: shortened.record.id }).update({ expiry_date: new Date(rowExpiry) })
  t.equal((await get(app, shortened.key)).status, 200)
  await sleep(rowExpiry - Date.now() + 50)
  t.same(await get(app, shortened.key), { status: 401, code: 'FST_APIKEY_EXPIRED' }, 'refused at the row\'s expiry')
})

test('the cache is bounded by its TTL and by its size', async t => {
  const db = await createTestDatabase(t, 'cache_bounds')
  const queries = queryCounter(db.knex)
  const ttl = 1500
  const app = await buildApp(t, db.knex, { ...QUIET, cache: { ttl, max: 3 } })

  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await get(app, key)).status, 200)
  const cachedAt = Date.now()
  // Revoked behind the plugin's back (plain SQL, no notification): only the TTL brings the change.
  await db.knex('api_keys').where({ id: record.id }).update({ revoked: true })
  t.equal(await readsOf(queries, () => get(app, key)), 0, 'within the TTL: answered from the cache')
  t.ok(Date.now() - cachedAt < ttl, 'that request came within the TTL')
  await sleep(cachedAt + ttl - Date.now() + 50)
  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 401, code: 'FST_APIKEY_REVOKED' }, 'after the TTL: the change is seen')), 1,
    'read afresh once the TTL is over')

  const keys = await Promise.all(Array.from({ length: 5 }, () => app.apiKeys.create({ entityId: 'e' })))
  t.equal(await readsOf(queries, async () => { for (const issued of keys) await get(app, issued.key) }), 5)
  t.equal(await readsOf(queries, async () => { for (const issued of keys.slice(2).reverse()) await get(app, issued.key) }), 0, 'the 3 most recent stay cached')
  t.equal(await readsOf(queries, () => get(app, keys[0].key)), 1, 'max: 3, so the oldest was evicted')
})

test('refusals the row decided are cached too: a client retrying a revoked key costs one read, until the TTL', async t => {
  const db = await createTestDatabase(t, 'cache_refusals')
  const queries = queryCounter(db.knex)
  const ttl = 1500
  const app = await buildApp(t, db.knex, { ...QUIET, cache: { ttl } })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  // Revoked in plain SQL: revoke()'s own notification, coming back to this instance at an unknown moment, would drop the cached refusal once more.
  await db.knex('api_keys').where({ id: record.id }).update({ revoked: true })
  const answers: Array<{ status: number, code: string | null }> = []
  t.equal(await readsOf(queries, async () => { for (let i = 0; i < 20; i++) answers.push(await get(app, key)) }), 1, '20 requests with a revoked key: one read')
  t.same(new Set(answers.map(answer => answer.code)), new Set(['FST_APIKEY_REVOKED']), 'each refused as revoked')
  const refusedAt = Date.now()

  // Restored behind the plugin's back: like any cached outcome, the refusal lasts at most the TTL.
  await db.knex('api_keys').where({ id: record.id }).update({ revoked: false })
  t.same(await get(app, key), { status: 401, code: 'FST_APIKEY_REVOKED' }, 'within the TTL: still refused')
  t.ok(Date.now() - refusedAt < ttl, 'that request came within the TTL')
  await sleep(refusedAt + ttl - Date.now() + 50)
  t.equal(await readsOf(queries, async () => t.same(await get(app, key), { status: 200, code: null }, 'after the TTL: read again, and accepted')), 1)

  const uncachedKnex = db.connect()
  const uncachedQueries = queryCounter(uncachedKnex)
  const uncached = await buildApp(t, uncachedKnex, { ...QUIET, cache: false, migrate: false })
  await app.apiKeys.revoke(record.id)
  t.equal(await readsOf(uncachedQueries, async () => { for (let i = 0; i < 5; i++) await get(uncached, key) }), 5, 'cache: false: every request reads')
})

test('forged and malformed tokens never reach the database, cache or not', async t => {
  const db = await createTestDatabase(t, 'cache_forged')
  const queries = queryCounter(db.knex)
  const app = await buildApp(t, db.knex, { ...QUIET, cache: false })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  t.equal(await readsOf(queries, () => get(app, key)), 1, 'a valid key is read: the counter sees this app\'s reads')

  const tampered = Buffer.from(key, 'base64url')
  tampered[40] ^= 1
  const underA = new Keyring([secretA])
  const forged: Record<string, string> = {
    'random bytes': randomBytes(120).toString('base64url'),
    'a token under another secret': new Keyring([fernet.generateSecret()]).encrypt({ _pk: record.id, _exp: 4e9 }),
    'a valid key with one bit changed': tampered.toString('base64url'),
    'a genuine token already expired': underA.encrypt({ _pk: record.id, _exp: Date.now() / 1000 - 1 }),
    'a genuine token without a key id': underA.encrypt({ _exp: 4e9 }),
    'not base64': '!'.repeat(100),
    'megabytes long': 'gAAAAA'.repeat(200_000),
    empty: ''
  }
  const cachedKnex = db.connect()
  const cachedQueries = queryCounter(cachedKnex)
  const cached = await buildApp(t, cachedKnex, { ...QUIET, migrate: false })
  const before = queries.all + cachedQueries.all
  const expected: Record<string, string> = { 'a genuine token already expired': 'FST_APIKEY_EXPIRED', empty: 'FST_APIKEY_MALFORMED' }
  // Twice on the caching app: the second time, the refusals it remembered answer, and must answer the same.
  for (const [target, label] of [[app, 'cache: false'], [cached, 'cache'], [cached, 'cache, again']] as const) {
    for (const [name, token] of Object.entries(forged)) {
      const res = await target.inject({ url: '/whoami', headers: { authorization: `Api-Key ${token}` } })
      t.same({ status: res.statusCode, code: res.json().code }, { status: 401, code: expected[name] ?? 'FST_APIKEY_INVALID' }, `${label}: ${name}`)
    }
  }
  t.equal(queries.all + cachedQueries.all - before, 0, 'no query for any of them')
})

test('a flood of 200k forged tokens keeps the cache, the in-flight reads and the heap flat', async t => {
  const db = await createTestDatabase(t, 'cache_flood')
  await migrate(db.knex, defaultTables)
  const queries = queryCounter(db.knex)
  const store = new KeyStore(db.knex, defaultTables)
  const cache = new VerificationCache({ max: 10_000 })
  const verifier = new Verifier({ keyword: 'Api-Key', keyPrefix: '', enforceHttps: false, maxKeyLength: 2048 },
    { keyring: { current: new Keyring([secretA]) }, findKey: id => store.find(id), cache })

  // The costliest forgery to refuse: a well-formed token of a key's size, current timestamp, random body: it fails only at the HMAC.
  const header = Buffer.alloc(9)
  const forge = () => {
    header[0] = 0x80
    header.writeUInt32BE(0, 1)
    header.writeUInt32BE(Math.floor(Date.now() / 1000), 5)
    return Buffer.concat([header, randomBytes(16 + 96 + 32)]).toString('base64url')
  }
  const codes = new Set<string>()
  let maxPending = 0
  const flood = async (count: number) => {
    for (let sent = 0; sent < count; sent += 1000) {
      // 1000 at once, as concurrent requests would be.
      await Promise.all(Array.from({ length: 1000 }, () => verifier.resolve(forge()).then(
        () => codes.add('accepted'),
        (err: { code: string }) => codes.add(err.code))))
      maxPending = Math.max(maxPending, verifier.pendingReads)
    }
  }
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const heapAfterGc = () => {
    gc()
    gc()
    return process.memoryUsage().heapUsed
  }

  await flood(10_000)
  const heapBefore = heapAfterGc()
  await flood(200_000)
  const growth = heapAfterGc() - heapBefore
  t.same([...codes], ['FST_APIKEY_INVALID'], 'every forged token refused as invalid')
  t.equal(cache.size, 0, 'nothing cached among the keys in use')
  t.equal(cache.forgedSize, 1000, 'the refused tokens remembered stay at their bound of 1000')
  t.equal(maxPending, 0, 'no in-flight read, even with 1000 at once')
  t.equal(queries.all, 0, 'no query')
  // 200k tokens of 204 characters are 40 MB as strings alone: kept anywhere, they would show many times over this bound.
  t.ok(growth < 8 * 2 ** 20, `heap after GC grew by ${(growth / 2 ** 20).toFixed(1)} MB (bound 8 MB)`)
})
