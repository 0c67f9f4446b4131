import { test } from 'tap'
import Fastify, { type FastifyInstance, type InjectOptions, type LightMyRequestResponse } from 'fastify'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import simpleApiKey from '../index'

const ADMIN = ['apikeys:admin']

interface Recorded {
  url: string
  method: string
  body: string
}

/** Injects and keeps every answer, so that a test can check afterwards that no key leaked into any of them. */
function recorder (app: FastifyInstance) {
  const answers: Recorded[] = []
  const call = async (options: InjectOptions & { url: string }): Promise<LightMyRequestResponse> => {
    const res = await app.inject(options)
    answers.push({ url: options.url, method: options.method ?? 'GET', body: res.body })
    return res
  }
  return { call, answers }
}

/** The key itself and its per-key secret: neither may appear anywhere but in the answer that issues the key. */
function secretsOf (app: FastifyInstance, key: string): string[] {
  const payload = app.keyring.decrypt(key)
  return typeof payload._secret === 'string' ? [key, payload._secret] : [key]
}

const issuing = (answer: Recorded) =>
  answer.method === 'POST' && (/\/(roll|reissue)$/.test(answer.url) || /^\/[a-z/]*apikeys\/$/.test(answer.url) || answer.url === '/manage/keys/')

test('create: 201 with the key, which works; the record never holds it; bad bodies are 400 with a code', async t => {
  const db = await createTestDatabase(t, 'routes_create')
  const app = await buildApp(t, db.knex)
  const admin = await app.apiKeys.create({ name: 'root', entityId: 'ops', scopes: ADMIN })
  const { call, answers } = recorder(app)
  const headers = auth(admin.key)

  const expiresAt = new Date(Date.now() + 30 * 24 * 3600 * 1000).toISOString()
  const created = await call({
    method: 'POST',
    url: '/apikeys/',
    headers,
    payload: {
      name: 'reader',
      entityId: 'user-7',
      scopes: ['fruits:read'],
      expiresAt,
      whitelistedIps: ['127.0.0.1', '::1'],
      blacklistedIps: ['10.0.0.0/8'],
      metadata: { plan: 'pro' }
    }
  })
  t.equal(created.statusCode, 201)
  t.equal(created.headers['cache-control'], 'no-store', 'an answer with a key is never cached')
  const { key, record } = created.json()
  t.type(key, 'string')
  t.match(record, {
    name: 'reader',
    entityId: 'user-7',
    scopes: ['fruits:read'],
    expiresAt,
    whitelistedIps: ['127.0.0.1', '::1'],
    blacklistedIps: ['10.0.0.0/8'],
    metadata: { plan: 'pro' },
    revoked: false,
    lastUsedAt: null
  })
  t.same(Object.keys(record).sort(), ['blacklistedIps', 'createdAt', 'entityId', 'expiresAt', 'id', 'lastUsedAt', 'metadata', 'name', 'revoked', 'scopes', 'whitelistedIps'])
  const secrets = secretsOf(app, key)

  const used = await call({ url: '/fruits', headers: auth(key) })
  t.equal(used.statusCode, 200, 'the new key opens a route that needs its scope')
  t.equal(used.json().apiKey.id, record.id)

  const fetched = await call({ url: `/apikeys/${record.id}`, headers })
  t.equal(fetched.statusCode, 200)
  t.same(fetched.json(), { ...record, lastUsedAt: fetched.json().lastUsedAt }, 'GET /:id answers the record, without the key')
  const listed = await call({ url: '/apikeys/', headers })
  t.equal(listed.statusCode, 200)
  t.equal(listed.headers['cache-control'], 'no-store')

  const invalid: Array<[string, unknown, string, RegExp]> = [
    ['no entityId', { name: 'x' }, 'FST_ERR_VALIDATION', /entityId/],
    ['empty entityId', { entityId: '' }, 'FST_ERR_VALIDATION', /entityId/],
    ['a date that is not one', { entityId: 'e', expiresAt: 'next tuesday' }, 'FST_ERR_VALIDATION', /expiresAt/],
    ['a name too long', { entityId: 'e', name: 'n'.repeat(256) }, 'FST_ERR_VALIDATION', /name/],
    ['scopes not a list', { entityId: 'e', scopes: { a: 1 } }, 'FST_ERR_VALIDATION', /scopes/],
    ['an empty scope', { entityId: 'e', scopes: [''] }, 'FST_APIKEY_INVALID_INPUT', /^Invalid scopes: /],
    ['an IP rule that is not one', { entityId: 'e', whitelistedIps: ['10.0.0.300'] }, 'FST_APIKEY_INVALID_INPUT', /^Invalid whitelistedIps: /],
    ['a CIDR prefix too long', { entityId: 'e', blacklistedIps: ['10.0.0.0/33'] }, 'FST_APIKEY_INVALID_INPUT', /^Invalid blacklistedIps: /],
    ['metadata not an object', { entityId: 'e', metadata: 'plan' }, 'FST_ERR_VALIDATION', /metadata/],
    ['a misspelt field', { entityId: 'e', expires_at: '2030-01-01T00:00:00Z' }, 'FST_APIKEY_INVALID_INPUT', /^Invalid body: unknown field "expires_at"; expected name, entityId, /],
    ['a list for a body', [{ entityId: 'e' }], 'FST_ERR_VALIDATION', /body must be object/]
  ]
  const before = await app.apiKeys.list()
  for (const [what, payload, code, message] of invalid) {
    const res = await call({ method: 'POST', url: '/apikeys/', headers, payload: payload as object })
    t.equal(res.statusCode, 400, `${what}: 400`)
    t.equal(res.json().code, code, `${what}: ${code}`)
    t.match(res.json().message, message, `${what}: the message says what is wrong`)
  }
  const notJson = await call({ method: 'POST', url: '/apikeys/', headers: { ...headers, 'content-type': 'application/json' }, payload: '{"entityId":' })
  t.equal(notJson.statusCode, 400, 'broken JSON: 400')
  t.equal(notJson.json().code, 'FST_ERR_CTP_INVALID_JSON_BODY')
  t.equal((await app.apiKeys.list()).total, before.total, 'no bad body created a key')

  for (const answer of answers.filter(answer => !issuing(answer))) {
    for (const secret of secrets) t.notOk(answer.body.includes(secret), `${answer.method} ${answer.url}: no key, no per-key secret`)
  }
})

test('list: filters by entity, revoked and expired, and pages', async t => {
  const db = await createTestDatabase(t, 'routes_list')
  const app = await buildApp(t, db.knex)
  const admin = await app.apiKeys.create({ name: 'root', entityId: 'ops', scopes: ADMIN })
  const headers = auth(admin.key)
  const past = new Date(Date.now() - 3600_000).toISOString()
  const make = async (entityId: string, expiresAt?: string) => (await app.apiKeys.create({ entityId, expiresAt })).record.id
  const a1 = await make('alice')
  const a2 = await make('alice')
  const a3 = await make('alice', past)
  const b1 = await make('bob')
  const b2 = await make('bob', past)
  await app.apiKeys.revokeMany([a2, b2])

  const ids = async (query: string) => {
    const res = await app.inject({ url: `/apikeys/?${query}`, headers })
    t.equal(res.statusCode, 200, query)
    const body = res.json()
    return { ids: body.items.map((item: { id: number }) => item.id), total: body.total }
  }
  t.same(await ids(''), { ids: [b2, b1, a3, a2, a1, admin.record.id], total: 6 }, 'newest first')
  t.same(await ids('entityId=alice'), { ids: [a3, a2, a1], total: 3 })
  t.same(await ids('revoked=true'), { ids: [b2, a2], total: 2 })
  t.same(await ids('revoked=false&entityId=bob'), { ids: [b1], total: 1 })
  t.same(await ids('expired=true'), { ids: [b2, a3], total: 2 })
  t.same(await ids('expired=false&revoked=false'), { ids: [b1, a1, admin.record.id], total: 3 }, 'active keys')
  t.same(await ids('entityId=nobody'), { ids: [], total: 0 })

  const pages = [await ids('limit=2&offset=0'), await ids('limit=2&offset=2'), await ids('limit=2&offset=4'), await ids('limit=2&offset=6')]
  t.same(pages.map(page => page.total), [6, 6, 6, 6], 'the total counts every match, not the page')
  t.same(pages.flatMap(page => page.ids), [b2, b1, a3, a2, a1, admin.record.id], 'pages are disjoint and cover every key in order')
  t.same(await ids('limit=0'), { ids: [], total: 6 })

  for (const [query, message] of [
    ['limit=1001', /limit/], ['limit=-1', /limit/], ['offset=x', /offset/], ['revoked=perhaps', /revoked/],
    ['entity=alice', /^Invalid query: unknown field "entity"; expected entityId, revoked, expired, limit, offset$/]
  ] as const) {
    const res = await app.inject({ url: `/apikeys/?${query}`, headers })
    t.equal(res.statusCode, 400, `${query}: 400`)
    t.ok(['FST_ERR_VALIDATION', 'FST_APIKEY_INVALID_INPUT'].includes(res.json().code), `${query}: a code`)
    t.match(res.json().message, message)
  }
})

test('get, revoke, roll and mass revoke', async t => {
  const db = await createTestDatabase(t, 'routes_life')
  const app = await buildApp(t, db.knex)
  const admin = await app.apiKeys.create({ name: 'root', entityId: 'ops', scopes: ADMIN })
  const headers = auth(admin.key)
  const { call, answers } = recorder(app)
  const secrets: string[] = []
  const issue = async () => {
    const res = await call({ method: 'POST', url: '/apikeys/', headers, payload: { entityId: 'svc' } })
    secrets.push(...secretsOf(app, res.json().key))
    return res.json() as { key: string, record: { id: number } }
  }
  const status = async (key: string) => {
    const res = await call({ url: '/whoami', headers: auth(key) })
    return res.statusCode === 200 ? 200 : `${res.statusCode} ${res.json().code}`
  }

  const unknown = await call({ url: '/apikeys/424242', headers })
  t.equal(unknown.statusCode, 404)
  t.same(unknown.json(), { statusCode: 404, code: 'FST_APIKEY_UNKNOWN_KEY', error: 'Not Found', message: 'No API key with id 424242.' })
  for (const bad of ['0', 'abc', '1.5', '-3']) {
    const res = await call({ url: `/apikeys/${bad}`, headers })
    t.equal(res.statusCode, 400, `GET /apikeys/${bad}: 400`)
    t.equal(res.json().code, 'FST_ERR_VALIDATION')
  }

  const doomed = await issue()
  t.equal(await status(doomed.key), 200)
  const revoked = await call({ method: 'POST', url: `/apikeys/${doomed.record.id}/revoke`, headers })
  t.equal(revoked.statusCode, 200)
  t.equal(revoked.json().revoked, true)
  t.equal(revoked.json().id, doomed.record.id)
  t.equal(await status(doomed.key), '401 FST_APIKEY_REVOKED', 'a revoked key is refused at once')
  t.equal((await call({ method: 'POST', url: `/apikeys/${doomed.record.id}/revoke`, headers })).statusCode, 200, 'revoking twice is harmless')
  const rollRevoked = await call({ method: 'POST', url: `/apikeys/${doomed.record.id}/roll`, headers })
  t.equal(rollRevoked.statusCode, 409, 'a revoked key is not rolled: its new value would never work')
  t.same(rollRevoked.json(), { statusCode: 409, code: 'FST_APIKEY_ROLL_REVOKED', error: 'Conflict', message: `API key ${doomed.record.id} is revoked: a revoked key cannot be rolled; create a new one.` })
  const revokeUnknown = await call({ method: 'POST', url: '/apikeys/424242/revoke', headers })
  t.equal(revokeUnknown.statusCode, 404)
  t.equal(revokeUnknown.json().code, 'FST_APIKEY_UNKNOWN_KEY')

  const rolled = await issue()
  const withGrace = await call({ method: 'POST', url: `/apikeys/${rolled.record.id}/roll`, headers, payload: { gracePeriod: '1h' } })
  t.equal(withGrace.statusCode, 200)
  t.equal(withGrace.headers['cache-control'], 'no-store')
  const second = withGrace.json()
  secrets.push(...secretsOf(app, second.key))
  t.equal(second.record.id, rolled.record.id)
  t.not(second.key, rolled.key)
  t.equal(await status(second.key), 200, 'the new value works')
  t.equal(await status(rolled.key), 200, 'the old value works during the grace period')
  const noGrace = await call({ method: 'POST', url: `/apikeys/${rolled.record.id}/roll`, headers })
  t.equal(noGrace.statusCode, 200, 'no body: no grace period')
  const third = noGrace.json()
  secrets.push(...secretsOf(app, third.key))
  t.equal(await status(third.key), 200)
  t.equal(await status(second.key), '401 FST_APIKEY_INVALID', 'without a grace period the previous value stops at once')
  for (const [payload, code, message] of [
    [{ gracePeriod: 'soon' }, 'FST_APIKEY_INVALID_INPUT', /^Invalid gracePeriod: /],
    [{ gracePeriod: -5 }, 'FST_APIKEY_INVALID_INPUT', /^Invalid gracePeriod: /],
    [{ grace: '7d' }, 'FST_APIKEY_INVALID_INPUT', /^Invalid body: unknown field "grace"; expected gracePeriod$/]
  ] as const) {
    const res = await call({ method: 'POST', url: `/apikeys/${rolled.record.id}/roll`, headers, payload })
    t.equal(res.statusCode, 400, `roll ${JSON.stringify(payload)}: 400`)
    t.equal(res.json().code, code)
    t.match(res.json().message, message)
  }
  t.equal(await status(third.key), 200, 'refused rolls changed nothing')
  const rollUnknown = await call({ method: 'POST', url: '/apikeys/424242/roll', headers })
  t.equal(rollUnknown.statusCode, 404)
  t.equal(rollUnknown.json().code, 'FST_APIKEY_UNKNOWN_KEY')

  const many = [await issue(), await issue(), await issue()]
  const massRevoked = await call({ method: 'POST', url: '/apikeys/revoke', headers, payload: { ids: [many[0].record.id, many[1].record.id, 424242] } })
  t.equal(massRevoked.statusCode, 200)
  t.same(massRevoked.json().revoked.sort((a: number, b: number) => a - b), [many[0].record.id, many[1].record.id], 'answers the ids that existed')
  t.equal(await status(many[0].key), '401 FST_APIKEY_REVOKED')
  t.equal(await status(many[1].key), '401 FST_APIKEY_REVOKED')
  t.equal(await status(many[2].key), 200, 'a key not listed stays valid')
  for (const payload of [{ ids: [] }, { ids: ['x'] }, { ids: [0] }, {}, { ids: [1], all: true }]) {
    const res = await call({ method: 'POST', url: '/apikeys/revoke', headers, payload })
    t.equal(res.statusCode, 400, `mass revoke ${JSON.stringify(payload)}: 400`)
    t.ok(res.json().code, 'with a code')
  }
  t.equal(await status(many[2].key), 200)

  for (const answer of answers.filter(answer => !issuing(answer))) {
    for (const secret of secrets) t.notOk(answer.body.includes(secret), `${answer.method} ${answer.url}: no key, no per-key secret`)
  }
})

test('rotation routes: status, start, stop, and reissue for any valid key', async t => {
  const db = await createTestDatabase(t, 'routes_rotation')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB })
  const admin = await app.apiKeys.create({ name: 'root', entityId: 'ops', scopes: ADMIN })
  const client = await app.apiKeys.create({ entityId: 'svc', scopes: ['fruits:read'] })
  const headers = auth(admin.key)
  const { call, answers } = recorder(app)

  const idle = await call({ url: '/apikeys/rotation', headers })
  t.equal(idle.statusCode, 200)
  t.match(idle.json(), { phase: 'staged', rotation: null, keysToRetire: 2 }, 'both live keys are under the secret a rotation would retire')
  t.equal(idle.headers['cache-control'], 'no-store')

  const started = await call({ method: 'POST', url: '/apikeys/rotation', headers })
  t.equal(started.statusCode, 200)
  t.equal(started.json().phase, 'transition')
  t.equal(started.json().keysToRetire, 2)
  t.ok(Date.parse(started.json().rotation.endsAt) > Date.now())
  const again = await call({ method: 'POST', url: '/apikeys/rotation', headers })
  t.equal(again.statusCode, 409)
  t.equal(again.json().code, 'FST_APIKEY_ROTATION_IN_PROGRESS')

  const reissued = await call({ method: 'POST', url: '/apikeys/reissue', headers: auth(client.key) })
  t.equal(reissued.statusCode, 200, 'a key without the admin scope may reissue itself')
  t.equal(reissued.headers['cache-control'], 'no-store')
  const renewed = reissued.json()
  t.equal(renewed.record.id, client.record.id)
  t.not(renewed.key, client.key)
  t.equal((await call({ url: '/fruits', headers: auth(renewed.key) })).statusCode, 200, 'the reissued key works')
  t.equal((await call({ url: '/apikeys/rotation', headers })).json().keysToRetire, 1, 'the reissued key no longer counts as one to retire')

  const stopped = await call({ method: 'DELETE', url: '/apikeys/rotation', headers })
  t.equal(stopped.statusCode, 200)
  t.equal(stopped.json().phase, 'staged')
  const stopAgain = await call({ method: 'DELETE', url: '/apikeys/rotation', headers })
  t.equal(stopAgain.statusCode, 409)
  t.equal(stopAgain.json().code, 'FST_APIKEY_ROTATION_NOT_RUNNING')

  const secrets = [...secretsOf(app, admin.key), ...secretsOf(app, client.key), ...secretsOf(app, renewed.key), secretA, secretB]
  for (const answer of answers.filter(answer => !issuing(answer))) {
    for (const secret of secrets) t.notOk(answer.body.includes(secret), `${answer.method} ${answer.url}: no key and no secret`)
  }

  const single = await buildApp(t, db.connect(), { migrate: false })
  const noSecret = await single.inject({ method: 'POST', url: '/apikeys/rotation', headers })
  t.equal(noSecret.statusCode, 409)
  t.same(noSecret.json(), { statusCode: 409, code: 'FST_APIKEY_ROTATION_SECRET_MISSING', error: 'Conflict', message: 'Cannot start a rotation: ROTATION_FERNET_SECRET is not set.' })
})

const managementRoutes: Array<{ method: 'GET' | 'POST' | 'DELETE', url: string, payload?: object }> = [
  { method: 'GET', url: '/' },
  { method: 'POST', url: '/', payload: { entityId: 'x' } },
  { method: 'POST', url: '/revoke', payload: { ids: [1] } },
  { method: 'GET', url: '/1' },
  { method: 'GET', url: '/1/usage' },
  { method: 'POST', url: '/1/revoke' },
  { method: 'POST', url: '/1/roll' },
  { method: 'GET', url: '/rotation' },
  { method: 'POST', url: '/rotation' },
  { method: 'DELETE', url: '/rotation' }
]

test('only keys with the apikeys:admin scope manage keys; unscoped keys are never admins', async t => {
  const db = await createTestDatabase(t, 'routes_auth')
  const app = await buildApp(t, db.knex)
  const admin = await app.apiKeys.create({ entityId: 'ops', scopes: ADMIN })
  const reader = await app.apiKeys.create({ entityId: 'svc', scopes: ['fruits:read', 'apikeys:read'] })
  const unscoped = await app.apiKeys.create({ entityId: 'svc' })
  const revokedAdmin = await app.apiKeys.create({ entityId: 'ops', scopes: ADMIN })
  await app.apiKeys.revoke(revokedAdmin.record.id)

  for (const route of managementRoutes) {
    const send = (headers: Record<string, string>) => app.inject({ method: route.method, url: `/apikeys${route.url}`, headers, payload: route.payload })
    const anonymous = await send({})
    t.equal(anonymous.statusCode, 401, `${route.method} ${route.url} without a key: 401`)
    t.equal(anonymous.json().code, 'FST_APIKEY_MISSING')
    const scoped = await send(auth(reader.key))
    t.equal(scoped.statusCode, 403, `${route.method} ${route.url} without the scope: 403`)
    t.equal(scoped.json().code, 'FST_APIKEY_INSUFFICIENT_SCOPE')
    const open = await send(auth(unscoped.key))
    t.equal(open.statusCode, 403, `${route.method} ${route.url} with an unscoped key: 403`)
    t.equal(open.json().code, 'FST_APIKEY_INSUFFICIENT_SCOPE')
    t.equal((await send(auth(revokedAdmin.key))).json().code, 'FST_APIKEY_REVOKED', `${route.method} ${route.url} with a revoked admin key`)
  }
  t.equal((await app.inject({ url: '/fruits', headers: auth(unscoped.key) })).statusCode, 200, 'the unscoped key is unrestricted elsewhere')
  t.equal((await app.inject({ url: '/apikeys/', headers: auth(admin.key) })).statusCode, 200)
  t.equal((await app.apiKeys.list()).total, 4, 'no refused request created a key')
  t.equal((await app.apiKeys.get(reader.record.id))!.revoked, false, 'no refused request revoked a key')
})

test('routes.preHandler: the app\'s own guard replaces the key check', async t => {
  const db = await createTestDatabase(t, 'routes_guard')
  const app = await buildApp(t, db.knex, {
    routes: {
      async preHandler (request, reply) {
        if (request.headers['x-staff-token'] !== 'let-me-in') return reply.code(401).send({ statusCode: 401, code: 'APP_STAFF_ONLY', error: 'Unauthorized', message: 'Staff only.' })
      }
    }
  })
  const admin = await app.apiKeys.create({ entityId: 'ops', scopes: ADMIN })

  const withAdminKey = await app.inject({ url: '/apikeys/', headers: auth(admin.key) })
  t.equal(withAdminKey.statusCode, 401, 'an admin key alone no longer opens the routes')
  t.equal(withAdminKey.json().code, 'APP_STAFF_ONLY')
  const staff = await app.inject({ url: '/apikeys/', headers: { 'x-staff-token': 'let-me-in' } })
  t.equal(staff.statusCode, 200, 'the guard alone opens them, with no API key')
  t.equal(staff.json().total, 1)
  const created = await app.inject({ method: 'POST', url: '/apikeys/', headers: { 'x-staff-token': 'let-me-in' }, payload: { entityId: 'e' } })
  t.equal(created.statusCode, 201)
  t.equal((await app.inject({ url: '/whoami', headers: auth(created.json().key) })).statusCode, 200)
  t.equal((await app.inject({ url: '/whoami' })).statusCode, 401, 'the app\'s other routes still need a key')
})

test('routes.prefix, routes: false and hook: false', async t => {
  const db = await createTestDatabase(t, 'routes_options')

  const moved = await buildApp(t, db.knex, { routes: { prefix: '/manage/keys' } })
  const admin = await moved.apiKeys.create({ entityId: 'ops', scopes: ADMIN })
  const movedList = await moved.inject({ url: '/manage/keys/', headers: auth(admin.key) })
  t.equal(movedList.statusCode, 200)
  t.equal(movedList.json().total, 1)
  t.equal((await moved.inject({ url: '/manage/keys/rotation', headers: auth(admin.key) })).json().phase, 'idle')
  t.equal((await moved.inject({ url: '/apikeys/', headers: auth(admin.key) })).statusCode, 404, 'nothing left at the default prefix')
  t.equal((await moved.inject({ url: '/manage/keys/' })).statusCode, 401)

  const none = await buildApp(t, db.connect(), { migrate: false, routes: false })
  for (const route of [...managementRoutes, { method: 'POST' as const, url: '/reissue' }, { method: 'GET' as const, url: '/admin' }]) {
    t.notOk(none.hasRoute({ method: route.method, url: `/apikeys${route.url === '/' ? '/' : route.url.replace(/\/1(\/|$)/, '/:id$1')}` }), `routes: false: no ${route.method} ${route.url}`)
  }
  t.equal((await none.inject({ url: '/apikeys/', headers: auth(admin.key) })).statusCode, 404)

  const unhooked = Fastify()
  await unhooked.register(simpleApiKey, { knex: db.connect(), fernetSecret: secretA, hook: false })
  unhooked.get('/open', async () => ({ open: true }))
  await unhooked.ready()
  t.teardown(() => unhooked.close())
  t.equal((await unhooked.inject({ url: '/open' })).statusCode, 200, 'hook: false: the app\'s routes are not checked')
  const anonymous = await unhooked.inject({ url: '/apikeys/' })
  t.equal(anonymous.statusCode, 401, 'hook: false: the management routes still need a key')
  t.equal(anonymous.json().code, 'FST_APIKEY_MISSING')
  const reader = await unhooked.apiKeys.create({ entityId: 'svc', scopes: ['fruits:read'] })
  t.equal((await unhooked.inject({ url: '/apikeys/', headers: auth(reader.key) })).json().code, 'FST_APIKEY_INSUFFICIENT_SCOPE')
  const unscoped = await unhooked.apiKeys.create({ entityId: 'svc' })
  t.equal((await unhooked.inject({ url: '/apikeys/', headers: auth(unscoped.key) })).statusCode, 403)
  t.equal((await unhooked.inject({ url: '/apikeys/', headers: auth(admin.key) })).statusCode, 200)
  const reissued = await unhooked.inject({ method: 'POST', url: '/apikeys/reissue', headers: auth(reader.key) })
  t.equal(reissued.statusCode, 200, 'hook: false: reissue verifies the key itself')
  t.equal((await unhooked.inject({ method: 'POST', url: '/apikeys/reissue' })).statusCode, 401)
})

test('invalid routes options are refused at register', async t => {
  const db = await createTestDatabase(t, 'routes_bad')
  for (const [routes, message] of [
    [{ prefix: 'apikeys' }, /routes\.prefix/],
    [{ preHandler: 'admin' }, /routes\.preHandler/],
    [{ admin: 'yes' }, /routes\.admin/]
  ] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => {
      await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, migrate: true, routes: routes as never })
    }, { code: 'FST_APIKEY_INVALID_OPTION', message })
  }
})
