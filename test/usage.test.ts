import { test } from 'tap'
import Knex from 'knex'
import type { FastifyInstance } from 'fastify'
import { createTestDatabase } from './helpers/database'
import { connectThroughProxy } from './helpers/proxy'
import { buildApp, auth } from './helpers/app'
import { UNMATCHED_ROUTE } from '../index'

interface UsageRow { key_id: string, method: string, route: string, count: string }

async function tableCounts (knex: Knex.Knex): Promise<Record<string, number>> {
  const rows: UsageRow[] = await knex('api_key_usage').select('key_id', 'method', 'route', 'count')
  return Object.fromEntries(rows.map(row => [`${row.key_id} ${row.method} ${row.route}`, Number(row.count)]))
}

async function lastUsed (knex: Knex.Knex, id: number): Promise<Date | null> {
  const row = await knex('api_keys').select('last_used_at').where({ id }).first()
  return row.last_used_at
}

const itemRoutes = (app: FastifyInstance) => {
  app.get('/items/:id', async request => ({ id: (request.params as { id: string }).id }))
  app.post('/items', async () => ({ created: true }))
}

test('a burst of 500 concurrent requests across two instances is counted exactly, rejected ones not at all', async t => {
  const db = await createTestDatabase(t, 'usage_burst')
  const options = { usage: { flushInterval: 20 } }
  const first = await buildApp(t, db.knex, options, itemRoutes)
  const second = await buildApp(t, db.connect(), options, itemRoutes)
  const reader = await first.apiKeys.create({ entityId: 'a', scopes: ['fruits:read'] })
  const unscoped = await first.apiKeys.create({ entityId: 'b' })
  const wrongScope = await first.apiKeys.create({ entityId: 'c', scopes: ['vegetables:read'] })
  const revoked = await first.apiKeys.create({ entityId: 'd' })
  await first.apiKeys.revoke(revoked.record.id)
  const publicOnly = await first.apiKeys.create({ entityId: 'e' })

  const plan: Array<{ app: FastifyInstance, method: 'GET' | 'POST', url: string, key: string, status: number, counts?: string }> = []
  for (let i = 0; i < 500; i++) {
    const app = i % 2 === 0 ? first : second
    const valid = i % 3 === 0 ? reader : unscoped
    const id = valid.record.id
    switch (i % 10) {
      case 0: plan.push({ app, method: 'GET', url: `/fruits?page=${i}`, key: reader.key, status: 200, counts: `${reader.record.id} GET /fruits` }); break
      case 1: plan.push({ app, method: 'GET', url: `/items/${i}?q=${i}`, key: valid.key, status: 200, counts: `${id} GET /items/:id` }); break
      case 2: plan.push({ app, method: 'POST', url: '/items', key: valid.key, status: 200, counts: `${id} POST /items` }); break
      case 3: plan.push({ app, method: 'GET', url: `/nowhere/${i}?token=${i}`, key: valid.key, status: 404, counts: `${id} GET ${UNMATCHED_ROUTE}` }); break
      case 4: plan.push({ app, method: 'GET', url: '/whoami', key: valid.key, status: 200, counts: `${id} GET /whoami` }); break
      case 5: plan.push({ app, method: 'GET', url: '/fruits', key: wrongScope.key, status: 403 }); break
      case 6: plan.push({ app, method: 'GET', url: '/whoami', key: revoked.key, status: 401 }); break
      case 7: plan.push({ app, method: 'GET', url: '/whoami', key: reader.key.slice(0, -4) + 'AAAA', status: 401 }); break
      case 8: plan.push({ app, method: 'GET', url: '/public', key: publicOnly.key, status: 200 }); break
      default: plan.push({ app, method: 'GET', url: '/items/7', key: valid.key, status: 200, counts: `${id} GET /items/:id` })
    }
  }
  const expected: Record<string, number> = {}
  for (const step of plan) if (step.counts !== undefined) expected[step.counts] = (expected[step.counts] ?? 0) + 1

  const responses = await Promise.all(plan.map(step => step.app.inject({ method: step.method, url: step.url, headers: auth(step.key) })))
  t.same(responses.map(res => res.statusCode), plan.map(step => step.status), 'every request got the answer it should')

  await Promise.all([first.apiKeys.flushUsage(), second.apiKeys.flushUsage()])
  t.same(await tableCounts(db.knex), expected, 'per key, method and route pattern: exact counts, no raw URLs or query strings')
  t.equal(Object.values(expected).reduce((a, b) => a + b, 0), 300, 'the plan counts 300 accepted requests')

  for (const key of [reader, unscoped]) t.type(await lastUsed(db.knex, key.record.id), Date, 'last_used_at set for a used key')
  for (const key of [wrongScope, revoked, publicOnly]) {
    t.equal(await lastUsed(db.knex, key.record.id), null, 'rejected keys and keys used on public routes only: never used')
    t.same(await first.apiKeys.usage(key.record.id), { total: 0, lastUsedAt: null, routes: [] })
  }

  const usage = await second.apiKeys.usage(reader.record.id)
  const readerRows = Object.entries(expected).filter(([row]) => row.startsWith(`${reader.record.id} `))
  t.equal(usage.total, readerRows.reduce((sum, [, count]) => sum + count, 0))
  t.same(usage.routes.map(route => `${reader.record.id} ${route.method} ${route.route}`).sort(), readerRows.map(([row]) => row).sort())
  t.same(usage.routes.map(route => route.count), [...usage.routes.map(route => route.count)].sort((a, b) => b - a), 'most used first')
  t.same(usage.lastUsedAt, await lastUsed(db.knex, reader.record.id))
  t.ok(usage.routes.every(route => route.lastUsedAt.getTime() <= usage.lastUsedAt!.getTime()))

  const again = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? first : second).inject({ url: '/whoami', headers: auth(unscoped.key) })))
  t.ok(again.every(res => res.statusCode === 200))
  await Promise.all([first.apiKeys.flushUsage(), second.apiKeys.flushUsage(), first.apiKeys.flushUsage()])
  const after = await tableCounts(db.knex)
  t.equal(after[`${unscoped.record.id} GET /whoami`], expected[`${unscoped.record.id} GET /whoami`] + 100, 'later flushes add onto the same rows')
})

test('close() writes every count: nothing is lost on a graceful shutdown, even with the database the plugin opened', async t => {
  const db = await createTestDatabase(t, 'usage_close')
  const app = await buildApp(t, db.knex, { knex: undefined, connection: db.url, usage: { flushInterval: '1h' } })
  const { key, record } = await app.apiKeys.create({ entityId: 'e', scopes: ['fruits:read'] })
  const sent = 137
  const responses = await Promise.all(Array.from({ length: sent }, (_, i) => app.inject({ url: i % 2 === 0 ? '/fruits' : '/whoami', headers: auth(key) })))
  t.ok(responses.every(res => res.statusCode === 200))
  t.same(await tableCounts(db.knex), {}, 'with a one-hour interval nothing was written yet')

  await app.close()
  t.same(await tableCounts(db.knex), { [`${record.id} GET /fruits`]: 69, [`${record.id} GET /whoami`]: 68 })
  t.type(await lastUsed(db.knex, record.id), Date)
})

test('requests in flight when close() is called are counted too', async t => {
  const db = await createTestDatabase(t, 'usage_inflight')
  let entered = 0
  let release!: () => void
  const released = new Promise<void>(resolve => { release = resolve })
  let allEntered!: () => void
  const inFlight = 20
  const everyoneIn = new Promise<void>(resolve => { allEntered = resolve })
  const app = await buildApp(t, db.knex, { usage: { flushInterval: '1h' } }, app => {
    app.get('/slow', async () => {
      if (++entered === inFlight) allEntered()
      await released
      return { done: true }
    })
  })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const requests = Array.from({ length: inFlight }, () => fetch(`${address}/slow`, { headers: auth(key) }))
  await everyoneIn
  const closing = app.close()
  release()
  const statuses = await Promise.all(requests.map(async request => (await request).status))
  await closing
  t.same(statuses, Array(inFlight).fill(200))
  t.same(await tableCounts(db.knex), { [`${record.id} GET /slow`]: inFlight })
})

test('usage: false counts nothing and writes nothing', async t => {
  const db = await createTestDatabase(t, 'usage_off')
  const app = await buildApp(t, db.knex, { usage: false })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  for (let i = 0; i < 10; i++) t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)
  await app.apiKeys.flushUsage()
  await app.close()
  t.same(await tableCounts(db.knex), {})
  t.equal(await lastUsed(db.knex, record.id), null)
})

test('the timer writes on its own every flushInterval', async t => {
  const db = await createTestDatabase(t, 'usage_timer')
  const app = await buildApp(t, db.knex, { usage: { flushInterval: 30 } })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  for (let i = 0; i < 3; i++) await app.inject({ url: '/whoami', headers: auth(key) })
  const deadline = Date.now() + 5000
  while (Date.now() < deadline && (await tableCounts(db.knex))[`${record.id} GET /whoami`] !== 3) await new Promise(resolve => setTimeout(resolve, 20))
  t.same(await tableCounts(db.knex), { [`${record.id} GET /whoami`]: 3 }, 'written without a flush call')
})

test('a failed write keeps its counts for the next one, however many times it fails', async t => {
  const db = await createTestDatabase(t, 'usage_down')
  const { proxy, knex } = await connectThroughProxy(t, db.url)
  const app = await buildApp(t, knex, { usage: { flushInterval: '1h' } })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)
  await app.apiKeys.flushUsage()

  proxy.cut()
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5; i++) t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200, 'the key is cached')
    await t.rejects(app.apiKeys.flushUsage(), 'the write fails while the database is away')
  }
  await t.rejects(app.apiKeys.flushUsage())
  proxy.restore()
  await app.apiKeys.flushUsage()
  t.same(await tableCounts(db.knex), { [`${record.id} GET /whoami`]: 16 }, 'each request counted once: none lost, none twice')
  await app.apiKeys.flushUsage()
  t.same(await tableCounts(db.knex), { [`${record.id} GET /whoami`]: 16 }, 'nothing left over to write twice')
})

test('a key deleted before its counts are written does not break the write of the others', async t => {
  const db = await createTestDatabase(t, 'usage_deleted')
  const app = await buildApp(t, db.knex, { usage: { flushInterval: '1h' } })
  const kept = await app.apiKeys.create({ entityId: 'e' })
  const deleted = await app.apiKeys.create({ entityId: 'e' })
  for (const { key } of [kept, deleted, kept]) t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)
  await db.knex('api_keys').where({ id: deleted.record.id }).delete()

  await app.apiKeys.flushUsage()
  t.same(await tableCounts(db.knex), { [`${kept.record.id} GET /whoami`]: 2 })
  await t.rejects(app.apiKeys.usage(deleted.record.id), { code: 'FST_APIKEY_UNKNOWN_KEY', statusCode: 404 })
  t.equal((await app.inject({ url: '/whoami', headers: auth(kept.key) })).statusCode, 200)
  await app.apiKeys.flushUsage()
  t.same(await tableCounts(db.knex), { [`${kept.record.id} GET /whoami`]: 3 }, 'the deleted key\'s counts are not retried forever')
})

test('GET /apikeys/:id/usage: admin only, 404 for unknown keys, the same as apiKeys.usage()', async t => {
  const db = await createTestDatabase(t, 'usage_route')
  const app = await buildApp(t, db.knex, { usage: { flushInterval: '1h' } }, itemRoutes)
  const admin = await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })
  const user = await app.apiKeys.create({ entityId: 'u' })
  for (let i = 0; i < 3; i++) await app.inject({ url: `/items/${i}`, headers: auth(user.key) })
  await app.inject({ method: 'POST', url: '/items', headers: auth(user.key) })
  for (let i = 0; i < 2; i++) await app.inject({ url: '/whoami', headers: auth(user.key) })

  const before = await app.inject({ url: `/apikeys/${user.record.id}/usage`, headers: auth(admin.key) })
  t.equal(before.statusCode, 200)
  t.same(before.json(), { total: 0, lastUsedAt: null, routes: [] }, 'nothing written yet: the route shows written counts')

  await app.apiKeys.flushUsage()
  const res = await app.inject({ url: `/apikeys/${user.record.id}/usage`, headers: auth(admin.key) })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(body.routes.map((route: { method: string, route: string, count: number }) => [route.method, route.route, route.count]),
    [['GET', '/items/:id', 3], ['GET', '/whoami', 2], ['POST', '/items', 1]])
  t.equal(body.total, 6)
  const direct = await app.apiKeys.usage(user.record.id)
  t.same(body, JSON.parse(JSON.stringify(direct)), 'the route answers what apiKeys.usage() resolves')
  t.equal(body.lastUsedAt, direct.lastUsedAt!.toISOString())

  t.equal((await app.inject({ url: '/apikeys/999999/usage', headers: auth(admin.key) })).json().code, 'FST_APIKEY_UNKNOWN_KEY')
  t.equal((await app.inject({ url: '/apikeys/999999/usage', headers: auth(admin.key) })).statusCode, 404)
  t.equal((await app.inject({ url: '/apikeys/abc/usage', headers: auth(admin.key) })).statusCode, 400)
  t.equal((await app.inject({ url: `/apikeys/${user.record.id}/usage`, headers: auth(user.key) })).statusCode, 403, 'an unscoped key is no admin')
  t.equal((await app.inject({ url: `/apikeys/${user.record.id}/usage` })).statusCode, 401)

  await app.apiKeys.flushUsage()
  const adminUsage = await app.apiKeys.usage(admin.record.id)
  t.same(adminUsage.routes.map(route => [route.method, route.route]), [['GET', '/apikeys/:id/usage']], 'the admin key is counted on the route pattern')
  t.equal(adminUsage.total, 5, 'its accepted requests, 404s included; the 403 and 401 were other keys or none')
  await t.rejects(app.apiKeys.usage(0), { code: 'FST_APIKEY_INVALID_INPUT' })
})

test('route patterns longer than the column are cut by characters, and routes that then coincide share one row', async t => {
  const db = await createTestDatabase(t, 'usage_long')
  const stem = '/' + 'a'.repeat(510) + '\u{1F600}'
  const app = await buildApp(t, db.knex, { usage: { flushInterval: '1h' } }, app => {
    app.get(`${stem}/one`, async () => 'one')
    app.get(`${stem}/two`, async () => 'two')
  })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  const path = '/' + 'a'.repeat(510) + encodeURIComponent('\u{1F600}')
  for (const suffix of ['/one', '/one', '/two']) t.equal((await app.inject({ url: path + suffix, headers: auth(key) })).statusCode, 200)
  await app.apiKeys.flushUsage()
  t.same(await tableCounts(db.knex), { [`${record.id} GET ${stem}`]: 3 }, '512 characters, the emoji whole')
})

test('usage options are checked at register', async t => {
  const db = await createTestDatabase(t, 'usage_options')
  for (const usage of ['yes', null, { flushInterval: 'soon' }, { flushInterval: -1 }, { flushInterval: 1 }]) {
    await t.rejects(buildApp(t, db.knex, { usage: usage as never }), { code: 'FST_APIKEY_INVALID_OPTION' }, JSON.stringify(usage))
  }
})
