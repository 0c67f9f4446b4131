import { test, type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { Agent, request } from 'node:http'
import Knex, { type Knex as KnexInstance } from 'knex'
import type { FastifyInstance } from 'fastify'
import { createTestDatabase, serverUrl } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import { buildLoggedApp, isUnder, sleep, waitFor } from './helpers/rotation'
import { fingerprint, migrate } from '../index'

const fpA = fingerprint(secretA)
const fpB = fingerprint(secretB)
// The bound for a change made on one instance to take effect on the others.
const BOUND_MS = 1000
// High, so that only NOTIFY can meet the bound.
const NO_PERIODIC_READ = { syncInterval: 60_000 }

function summary (samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1)
  return `n=${sorted.length} median=${at(0.5)} ms p90=${at(0.9)} ms max=${sorted[sorted.length - 1].toFixed(1)} ms`
}

/** Requests to `app` with each key until stopped; counts answers by status. */
function steadyRequests (app: FastifyInstance, keys: string[]) {
  const statuses = new Map<number, number>()
  const flow = { running: true }
  const loop = (async () => {
    for (let i = 0; flow.running; i++) {
      const res = await app.inject({ url: '/whoami', headers: auth(keys[i % keys.length]) })
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
      await sleep(1)
    }
  })()
  return {
    statuses,
    stop: async () => {
      flow.running = false
      await loop
      return statuses
    }
  }
}

test('two instances: a start, stop, completion, revoke and roll on one take effect on the other within 1 s, through NOTIFY alone', async t => {
  const db = await createTestDatabase(t, 'sync_two')
  const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', ...NO_PERIODIC_READ })
  const two = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, rotationPeriod: '1h', migrate: false, ...NO_PERIODIC_READ })
  const keyA = await one.apiKeys.create({ entityId: 'a' })
  await one.keyring.rotate()
  const keyB = await one.apiKeys.create({ entityId: 'b' })
  await one.keyring.stopRotation()
  await waitFor(() => two.keyring.phase === 'staged', BOUND_MS)

  // Instance 2 serves keys under A and B the whole time.
  const traffic = steadyRequests(two, [keyA.key, keyB.key])
  const starts: number[] = []
  const stops: number[] = []
  for (let round = 0; round < 10; round++) {
    const started = performance.now()
    const rotating = one.keyring.rotate()
    const followed = await waitFor(() => two.keyring.current.encryptingFingerprint === fpB, BOUND_MS * 2)
    await rotating
    starts.push(followed === Infinity ? Infinity : performance.now() - started)
    if (round === 0) {
      t.equal(two.keyring.phase, 'transition')
      t.ok(isUnder((await two.apiKeys.create({ entityId: 'made on two' })).key, secretB), 'instance 2 issues keys under B')
    }
    const stopping = performance.now()
    const stopped = one.keyring.stopRotation()
    await waitFor(() => two.keyring.current.encryptingFingerprint === fpA, BOUND_MS * 2)
    await stopped
    stops.push(performance.now() - stopping)
  }
  const statuses = await traffic.stop()
  t.ok(Math.max(...starts) <= BOUND_MS, `start: instance 2 encrypts under B within 1 s of the call on instance 1 (${summary(starts)})`)
  t.ok(Math.max(...stops) <= BOUND_MS, `stop: instance 2 encrypts under A again within 1 s (${summary(stops)})`)
  t.same([...statuses.keys()], [200], `instance 2 answered every one of its ${[...statuses.values()].reduce((a, b) => a + b, 0)} requests with keys under A and B: no rejection`)
  t.equal(two.keyring.phase, 'staged')
  t.same((await two.keyring.status()).acceptedFingerprints, [fpA, fpB])

  // revoke: instance 2's cache holds the key
  const revoked = await one.apiKeys.create({ entityId: 'to revoke' })
  t.equal((await two.inject({ url: '/whoami', headers: auth(revoked.key) })).statusCode, 200)
  t.equal((await two.inject({ url: '/whoami', headers: auth(revoked.key) })).statusCode, 200, 'cached on instance 2')
  const revokedAt = performance.now()
  await one.apiKeys.revoke(revoked.record.id)
  const revokeLatency = await waitFor(async () => (await two.inject({ url: '/whoami', headers: auth(revoked.key) })).statusCode === 401, BOUND_MS * 2)
  t.ok(revokeLatency <= BOUND_MS, `revoke: instance 2 refuses the cached key within 1 s (${(performance.now() - revokedAt).toFixed(1)} ms)`)
  t.equal((await two.inject({ url: '/whoami', headers: auth(revoked.key) })).json().code, 'FST_APIKEY_REVOKED')

  // roll with no grace: instance 2's cache holds the old value
  const rolled = await one.apiKeys.create({ entityId: 'to roll' })
  t.equal((await two.inject({ url: '/whoami', headers: auth(rolled.key) })).statusCode, 200)
  const rolledAt = performance.now()
  const { key: newValue } = await one.apiKeys.roll(rolled.record.id)
  const rollLatency = await waitFor(async () => (await two.inject({ url: '/whoami', headers: auth(rolled.key) })).statusCode === 401, BOUND_MS * 2)
  t.ok(rollLatency <= BOUND_MS, `roll: instance 2 refuses the old value within 1 s (${(performance.now() - rolledAt).toFixed(1)} ms)`)
  t.equal((await two.inject({ url: '/whoami', headers: auth(newValue) })).statusCode, 200, 'and accepts the new one')
})

test('two instances: the completion happens on each by its own clock, within 1 s of the end', async t => {
  const db = await createTestDatabase(t, 'sync_complete')
  const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: 1500, ...NO_PERIODIC_READ })
  const two = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, migrate: false, ...NO_PERIODIC_READ })
  const keyA = await one.apiKeys.create({ entityId: 'a' })
  t.equal((await two.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200, 'cached on instance 2')
  const { rotation } = await one.keyring.rotate()
  const endsAt = rotation!.endsAt!.getTime()
  t.ok(await waitFor(() => two.keyring.phase === 'transition', BOUND_MS) <= BOUND_MS)
  const keyB = await two.apiKeys.create({ entityId: 'b' })

  const traffic = steadyRequests(two, [keyB.key])
  await waitFor(() => one.keyring.phase === 'completed' && two.keyring.phase === 'completed', endsAt - Date.now() + BOUND_MS * 2)
  const lateness = Date.now() - endsAt
  t.ok(lateness >= 0 && lateness <= BOUND_MS, `both completed ${lateness} ms after the end`)
  const statuses = await traffic.stop()
  t.same([...statuses.keys()], [200], 'keys under B were served throughout')
  t.equal((await two.inject({ url: '/whoami', headers: auth(keyA.key) })).json().code, 'FST_APIKEY_INVALID', 'instance 2 refuses A though it had cached the key')
  t.equal((await one.inject({ url: '/whoami', headers: auth(keyA.key) })).json().code, 'FST_APIKEY_INVALID')
  await waitFor(async () => (await db.knex('api_key_rotations').first()).outcome === 'completed', 1000)
  const rows = await db.knex('api_key_rotations').select('outcome')
  t.same(rows, [{ outcome: 'completed' }], 'recorded once')
})

test('two instances starting a rotation at the same moment: the database lets exactly one run', async t => {
  const db = await createTestDatabase(t, 'sync_race')
  const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', ...NO_PERIODIC_READ })
  const two = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, rotationPeriod: '1h', migrate: false, ...NO_PERIODIC_READ })
  for (let round = 0; round < 5; round++) {
    await waitFor(() => one.keyring.phase === 'staged' && two.keyring.phase === 'staged', BOUND_MS)
    const results = await Promise.allSettled([one.keyring.rotate(), two.keyring.rotate()])
    const won = results.filter(result => result.status === 'fulfilled')
    const lost = results.filter((result): result is PromiseRejectedResult => result.status === 'rejected')
    t.equal(won.length, 1, `round ${round}: one started it`)
    t.equal(lost.length, 1)
    t.equal(lost[0]?.reason.code, 'FST_APIKEY_ROTATION_IN_PROGRESS', 'the other is told one is in progress')
    t.equal(Number((await db.knex('api_key_rotations').where({ outcome: 'running' }).count({ n: '*' }))[0].n), 1, 'exactly one rotation row running')
    await (round % 2 === 0 ? one : two).keyring.stopRotation()
  }
  await t.rejects(db.knex('api_key_rotations').insert([
    { is_rotation_enabled: true, ended: new Date(Date.now() + 1000), outcome: 'running' },
    { is_rotation_enabled: true, ended: new Date(Date.now() + 1000), outcome: 'running' }
  ]), { code: '23505' }, 'the database itself refuses a second running row')
})

test('load: a steady stream of requests with keys under A and B sees no rejection across the start and the stop of rotations', async t => {
  const db = await createTestDatabase(t, 'sync_load')
  const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', ...NO_PERIODIC_READ })
  // No cache on the second: each of its requests decrypts and reads the key again under the keyring in force.
  const two = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, rotationPeriod: '1h', migrate: false, cache: false, ...NO_PERIODIC_READ })
  const keyA = await one.apiKeys.create({ entityId: 'a' })
  await one.keyring.rotate()
  const keyB = await one.apiKeys.create({ entityId: 'b' })
  await one.keyring.stopRotation()
  const keys = [keyA.key, keyB.key]
  t.ok(isUnder(keyA.key, secretA) && isUnder(keyB.key, secretB))
  const urls: string[] = []
  for (const app of [one, two]) {
    await app.listen({ port: 0, host: '127.0.0.1' })
    urls.push(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}/whoami`)
  }

  const agent = new Agent({ keepAlive: true, maxSockets: 20 })
  t.teardown(() => agent.destroy())
  const statuses = new Map<number, number>()
  const codes = new Map<string, number>()
  // Windows between the events: staged, transition (started on one), staged, transition (started on two), staged.
  const flow = { running: true, window: 0 }
  const answered = [0, 0, 0, 0, 0]
  const straddling = { count: 0 }
  const worker = async (n: number) => {
    for (let i = n; flow.running; i++) {
      const window = flow.window
      const res = await get(agent, urls[i % 2], auth(keys[(i >> 1) % 2]))
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
      if (res.status !== 200) codes.set(String(JSON.parse(res.body).code), (codes.get(String(JSON.parse(res.body).code)) ?? 0) + 1)
      answered[flow.window]++
      if (flow.window !== window) straddling.count++
    }
  }
  const started = performance.now()
  const workers = Array.from({ length: 20 }, (_, n) => worker(n))
  for (const event of [() => one.keyring.rotate(), () => one.keyring.stopRotation(), () => two.keyring.rotate(), () => two.keyring.stopRotation()]) {
    await sleep(800)
    await event()
    flow.window++
  }
  await sleep(800)
  flow.running = false
  await Promise.all(workers)
  const seconds = (performance.now() - started) / 1000
  const total = [...statuses.values()].reduce((a, b) => a + b, 0)
  t.same(Object.fromEntries(codes), {}, 'no error codes')
  t.same([...statuses.keys()], [200], `${total} requests in ${seconds.toFixed(1)} s, 20 concurrent, over two instances: every one answered 200`)
  t.ok(answered.every(count => count >= 20), `requests flowed in every window: ${answered.join(', ')} (staged, transition, staged, transition, staged)`)
  t.ok(straddling.count > 0, `${straddling.count} requests were in flight across a start or a stop`)
  t.equal(Number((await db.knex('api_key_rotations').where({ outcome: 'stopped' }).count({ n: '*' }))[0].n), 3, 'the stream ran across two starts and two stops (and the setup\'s)')
})

function get (agent: Agent, url: string, headers: Record<string, string>): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, agent }, res => {
      const chunks: Buffer[] = []
      res.on('data', chunk => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }))
    })
    req.on('error', reject)
    req.end()
  })
}

// A role of its own lets the test refuse new connections to one instance's listener while its pool keeps working.
async function limitedRole (t: Test, schema: string) {
  const role = `sync_listener_${randomBytes(4).toString('hex')}`
  const admin = Knex({ client: 'pg', connection: serverUrl, pool: { min: 0, max: 1 } })
  await admin.raw('CREATE ROLE ?? LOGIN', [role])
  await admin.raw('GRANT USAGE ON SCHEMA ?? TO ??', [schema, role])
  await admin.raw('GRANT ALL ON ALL TABLES IN SCHEMA ?? TO ??', [schema, role])
  await admin.raw('GRANT ALL ON ALL SEQUENCES IN SCHEMA ?? TO ??', [schema, role])
  t.teardown(async () => {
    await admin.raw('ALTER ROLE ?? CONNECTION LIMIT -1', [role])
    await admin.raw('DROP OWNED BY ??', [role])
    await admin.raw('DROP ROLE ??', [role])
    await admin.destroy()
  })
  const url = new URL(serverUrl)
  const connect = (): KnexInstance => {
    const knex = Knex({
      client: 'pg',
      connection: { host: url.hostname, port: Number(url.port), database: url.pathname.slice(1), user: role },
      searchPath: [schema],
      pool: { min: 2, max: 2 }
    })
    t.teardown(() => knex.destroy())
    return knex
  }
  const listeners = async () => Number((await admin.raw(
    'SELECT count(*) AS n FROM pg_stat_activity WHERE usename = ? AND application_name = ? AND query LIKE \'LISTEN %\'',
    [role, 'fastify-simple-apikey listener'])).rows[0].n)
  return {
    connect,
    listeners,
    refuseNewConnections: () => admin.raw('ALTER ROLE ?? CONNECTION LIMIT 0', [role]),
    allowNewConnections: () => admin.raw('ALTER ROLE ?? CONNECTION LIMIT -1', [role]),
    dropListeners: () => admin.raw('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ? AND query LIKE \'LISTEN %\'', [role])
  }
}

test('without the LISTEN connection, changes arrive by the periodic re-read; late instances accept keys under B; the listener reconnects', async t => {
  const db = await createTestDatabase(t, 'sync_fallback')
  await migrate(db.knex)
  const role = await limitedRole(t, db.schema)
  const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', ...NO_PERIODIC_READ })
  const periodic = await buildApp(t, role.connect(), { rotationFernetSecret: secretB, migrate: false, syncInterval: 500 })
  const late = await buildApp(t, role.connect(), { rotationFernetSecret: secretB, migrate: false, ...NO_PERIODIC_READ })
  t.equal(await role.listeners(), 2, 'both instances listen')
  const keyA = await one.apiKeys.create({ entityId: 'a' })
  for (const app of [periodic, late]) t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200, 'cached')

  await role.refuseNewConnections()
  await role.dropListeners()
  t.equal(await waitFor(async () => await role.listeners() === 0, 2000) < 2000, true, 'the listeners are gone and cannot come back')

  await one.keyring.rotate()
  const keyB = await one.apiKeys.create({ entityId: 'b' })
  await sleep(100)
  t.equal(late.keyring.phase, 'staged', 'an instance that has not learned of the rotation yet')
  t.equal((await late.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200, 'still accepts keys that the first instance issued under B')
  t.ok(isUnder((await late.apiKeys.create({ entityId: 'c' })).key, secretA), 'and issues under A, which every instance accepts')

  const rotationArrived = await waitFor(() => periodic.keyring.phase === 'transition', 2000)
  t.ok(rotationArrived <= 2000, `the rotation arrived by the periodic re-read (syncInterval 500 ms) in ${Math.round(rotationArrived + 100)} ms`)
  t.equal((await periodic.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200, 'cached again, under the keyring of the transition')
  await one.apiKeys.revoke(keyA.record.id)
  const revokeArrived = await waitFor(async () => (await periodic.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode === 401, 2000)
  t.ok(revokeArrived <= 2000, `a revocation too, though the key was cached (${Math.round(revokeArrived)} ms)`)
  t.equal(await role.listeners(), 0, 'all that while without a listener')
  t.equal(late.keyring.phase, 'staged', 'the instance with syncInterval 60 s has heard nothing')

  await role.allowNewConnections()
  const back = await waitFor(async () => await role.listeners() === 2, 7000)
  t.ok(back <= 7000, `the listeners reconnect by themselves (${Math.round(back)} ms)`)
  t.ok(await waitFor(() => late.keyring.phase === 'transition', BOUND_MS) <= BOUND_MS, 'and re-read what they missed')
  t.equal((await late.inject({ url: '/whoami', headers: auth(keyA.key) })).json().code, 'FST_APIKEY_REVOKED', 'the missed revocation included, though it was cached')

  const stopping = performance.now()
  await one.keyring.stopRotation()
  t.ok(await waitFor(() => late.keyring.phase === 'staged', BOUND_MS) <= BOUND_MS,
    `after reconnecting, NOTIFY brings the stop within 1 s again (${Math.round(performance.now() - stopping)} ms)`)
})

test('an app whose knex connection is a function: it cannot LISTEN, yet others hear its changes and it hears theirs by the periodic re-read', async t => {
  const db = await createTestDatabase(t, 'sync_function')
  await migrate(db.knex)
  const listening = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', ...NO_PERIODIC_READ })
  const knex = Knex({ client: 'pg', connection: async () => ({ connectionString: serverUrl }), searchPath: [db.schema], pool: { min: 0, max: 2 } })
  t.teardown(() => knex.destroy())
  const { app: blind, logs } = await buildLoggedApp(t, knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', syncInterval: 500 })
  t.ok(logs.some(line => line.level === 40 && /no LISTEN connection/.test(line.msg)), 'it says that it cannot listen')

  const key = await listening.apiKeys.create({ entityId: 'a' })
  t.equal((await listening.inject({ url: '/whoami', headers: auth(key.key) })).statusCode, 200, 'cached on the listening app')
  await blind.apiKeys.revoke(key.record.id)
  t.ok(await waitFor(async () => (await listening.inject({ url: '/whoami', headers: auth(key.key) })).statusCode === 401, BOUND_MS) <= BOUND_MS,
    'its revocation reaches the listening app within 1 s')
  await blind.keyring.rotate()
  t.ok(await waitFor(() => listening.keyring.phase === 'transition', BOUND_MS) <= BOUND_MS, 'and so does its rotation')
  await listening.keyring.stopRotation()
  t.ok(await waitFor(() => blind.keyring.phase === 'staged', 2000) <= 2000, 'it learns of the others\' changes every syncInterval')
})

test('anything else on the channel is ignored: no crash, and real messages still arrive', async t => {
  const db = await createTestDatabase(t, 'sync_garbage')
  const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, ...NO_PERIODIC_READ })
  const two = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, migrate: false, ...NO_PERIODIC_READ })
  const channel = `simple_apikey:${db.schema}.api_keys`
  const { key } = await one.apiKeys.create({ entityId: 'a' })
  t.equal((await two.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)
  for (const payload of ['not json', 'null', '[]', '{"kind":"key","id":"1 or 1=1"}', '{"kind":"key"}', '{"kind":"drop"}', '"rotation"', '']) {
    await db.knex.raw('select pg_notify(?, ?)', [channel, payload])
  }
  await sleep(200)
  t.equal((await two.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200, 'still serving')
  await one.keyring.rotate()
  t.ok(await waitFor(() => two.keyring.phase === 'transition', BOUND_MS) <= BOUND_MS, 'and still listening')
})
