import { test } from 'tap'
import Fastify from 'fastify'
import Knex from 'knex'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import { buildLoggedApp, isUnder, reissuedUnder, waitFor } from './helpers/rotation'
import { connectThroughProxy } from './helpers/proxy'
import simpleApiKey, { fernet, fingerprint, migrate } from '../index'

const fpA = fingerprint(secretA)
const fpB = fingerprint(secretB)

// A test-only trigger: every write to the rotations table, so that a test can count them.
async function recordRotationWrites (knex: Knex.Knex): Promise<() => Promise<Array<{ op: string, outcome: string }>>> {
  await knex.raw('CREATE TABLE rotation_writes (n serial, op text, outcome text)')
  await knex.raw(`CREATE FUNCTION record_rotation_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO rotation_writes (op, outcome) VALUES (TG_OP, NEW.outcome); RETURN NEW; END $$`)
  await knex.raw('CREATE TRIGGER record_rotation_write AFTER INSERT OR UPDATE ON api_key_rotations FOR EACH ROW EXECUTE FUNCTION record_rotation_write()')
  return () => knex('rotation_writes').select('op', 'outcome').orderBy('n')
}

test('the life cycle on one app: idle, staged, transition, completion by the clock', async t => {
  const db = await createTestDatabase(t, 'rotation_life')

  // idle: only A
  const onlyA = await buildApp(t, db.knex)
  const idle = await onlyA.keyring.status()
  t.match(idle, { phase: 'idle', rotation: null, encryptingFingerprint: fpA, acceptedFingerprints: [fpA], stagedFingerprint: null, retiringFingerprint: null, keysToRetire: 0 })
  t.same(idle.acceptedFingerprints, [fpA])
  await t.rejects(onlyA.keyring.rotate(), { code: 'FST_APIKEY_ROTATION_SECRET_MISSING', statusCode: 409, message: /ROTATION_FERNET_SECRET is not set/ })
  await t.rejects(onlyA.keyring.stopRotation(), { code: 'FST_APIKEY_ROTATION_NOT_RUNNING' })
  const early = await onlyA.apiKeys.create({ entityId: 'early' })
  t.ok(isUnder(early.key, secretA), 'idle: new keys under A')

  // staged: B configured
  const writes = await recordRotationWrites(db.knex)
  const app = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, rotationPeriod: 1500, syncInterval: 60_000, migrate: false })
  const staged = await app.keyring.status()
  t.match(staged, { phase: 'staged', rotation: null, encryptingFingerprint: fpA, stagedFingerprint: fpB, retiringFingerprint: fpA })
  t.same(staged.acceptedFingerprints, [fpA, fpB])
  const keyA = await app.apiKeys.create({ entityId: 'client-a' })
  t.ok(isUnder(keyA.key, secretA) && !isUnder(keyA.key, secretB), 'staged: new keys under A')
  const keyAunderB = reissuedUnder(keyA.key, secretB, secretA)
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200, 'staged: key under A accepted')
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyAunderB) })).statusCode, 200, 'staged: key under B accepted, as an instance that learned of a rotation first would issue it')
  const revoked = await app.apiKeys.create({ entityId: 'gone' })
  await app.apiKeys.revoke(revoked.record.id)
  await app.apiKeys.create({ entityId: 'expired', expiresAt: new Date(Date.now() - 1000) })
  t.equal((await app.keyring.status()).keysToRetire, 2, 'staged: live keys under A, not the revoked or expired ones')

  // transition
  const before = Date.now()
  const started = await app.keyring.rotate({ actor: 'ops' })
  t.equal(started.phase, 'transition')
  t.equal(started.encryptingFingerprint, fpB)
  t.same(started.acceptedFingerprints, [fpB, fpA])
  t.equal(started.stagedFingerprint, null)
  t.equal(started.retiringFingerprint, fpA)
  t.equal(started.keysToRetire, 2)
  t.match(started.rotation, { fromFingerprint: fpA, toFingerprint: fpB })
  const startedAt = started.rotation!.startedAt
  const endsAt = started.rotation!.endsAt!
  t.ok(startedAt.getTime() >= before - 1000 && startedAt.getTime() <= Date.now() + 1000, 'start is now')
  t.equal(endsAt.getTime() - startedAt.getTime(), 1500, 'end is start plus rotationPeriod')
  const keyB = await app.apiKeys.create({ entityId: 'client-b' })
  t.ok(isUnder(keyB.key, secretB) && !isUnder(keyB.key, secretA), 'transition: new keys under B')
  t.equal((await app.keyring.status()).keysToRetire, 2, 'keys under B are not counted')
  for (const key of [keyA.key, keyAunderB, keyB.key, early.key]) {
    t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200, 'transition: keys under A and B accepted')
  }
  await t.rejects(app.keyring.rotate(), { code: 'FST_APIKEY_ROTATION_IN_PROGRESS', statusCode: 409 })
  t.same(await db.knex('api_key_rotations').select('outcome', 'from_fingerprint', 'to_fingerprint', 'is_rotation_enabled'),
    [{ outcome: 'running', from_fingerprint: fpA, to_fingerprint: fpB, is_rotation_enabled: true }])

  // completion by the clock: no request, no restart, no call
  await waitFor(() => app.keyring.phase === 'completed', endsAt.getTime() - Date.now() + 2000)
  const lateness = Date.now() - endsAt.getTime()
  t.ok(lateness >= 0 && lateness <= 1000, `completed by the timer alone, ${lateness} ms after the end`)
  t.ok(await waitFor(async () => (await writes()).length === 2, 1000) <= 1000, 'the keyring\'s timer records the completion right after')
  t.same(await writes(), [{ op: 'INSERT', outcome: 'running' }, { op: 'UPDATE', outcome: 'completed' }], 'the bookkeeping write was done off the request path')
  for (let i = 0; i < 20; i++) await app.inject({ url: '/whoami', headers: auth(i % 2 === 0 ? keyB.key : keyA.key) })
  t.equal((await writes()).length, 2, 'requests write nothing to the rotations table')
  const rejected = await app.inject({ url: '/whoami', headers: auth(keyA.key) })
  t.equal(rejected.statusCode, 401)
  t.equal(rejected.json().code, 'FST_APIKEY_INVALID', 'completed: keys under A rejected as invalid')
  t.equal((await app.inject({ url: '/whoami', headers: auth(early.key) })).statusCode, 401)
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200, 'completed: keys under B work')
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyAunderB) })).statusCode, 200)
  const completed = await app.keyring.status()
  t.match(completed, { phase: 'completed', encryptingFingerprint: fpB, stagedFingerprint: null, retiringFingerprint: null, keysToRetire: 0 })
  t.same(completed.acceptedFingerprints, [fpB])
  t.ok(isUnder((await app.apiKeys.create({ entityId: 'after' })).key, secretB), 'completed: new keys under B')
  await t.rejects(app.keyring.rotate(), { code: 'FST_APIKEY_ROTATION_SECRET_MISSING', message: /retired|encrypts/ })
  await t.rejects(app.keyring.stopRotation(), { code: 'FST_APIKEY_ROTATION_NOT_RUNNING' })

  // The A-only instance (deployed without B, against the guide) has no secret left: it refuses rather than accept a retired one.
  const stranded = await onlyA.inject({ url: '/whoami', headers: auth(keyA.key) })
  t.equal(stranded.statusCode, 500)
  t.equal(stranded.json().code, 'FST_APIKEY_NO_USABLE_SECRET', 'an instance without B refuses every key after the completion')
  await t.rejects(onlyA.apiKeys.create({ entityId: 'x' }), { code: 'FST_APIKEY_NO_USABLE_SECRET' })
  await t.rejects(onlyA.keyring.status(), { code: 'FST_APIKEY_NO_USABLE_SECRET', message: /FERNET_SECRET/ })

  // operator swap: A := B, B := old A
  const swapped = await buildLoggedApp(t, db.connect(), { fernetSecret: secretB, rotationFernetSecret: secretA })
  const warning = swapped.logs.find(line => line.level === 40 && line.fingerprint === fpA)
  t.ok(warning, 'the retired secret\'s presence is logged as a warning')
  t.match(warning?.msg, /retired/)
  t.equal((await swapped.app.inject({ url: '/whoami', headers: auth(keyA.key) })).json().code, 'FST_APIKEY_INVALID', 'swapped: the retired secret is never accepted again')
  t.equal((await swapped.app.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200)
  const afterSwap = await swapped.app.keyring.status()
  t.match(afterSwap, { phase: 'completed', encryptingFingerprint: fpB })
  t.same(afterSwap.acceptedFingerprints, [fpB])
  await t.rejects(swapped.app.keyring.rotate(), { code: 'FST_APIKEY_ROTATION_SECRET_MISSING', message: /retired/ }, 'B is a retired secret')
  const text = swapped.logText()
  t.notOk(text.includes(secretA) || text.includes(secretB) || text.includes(keyA.key) || text.includes(keyB.key), 'no secret or key in the log')

  // operator swap with B unset
  const unset = await buildLoggedApp(t, db.connect(), { fernetSecret: secretB })
  t.equal((await unset.app.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200)
  t.equal((await unset.app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 401)
  t.notOk(unset.logs.some(line => line.level >= 40), 'nothing to warn about')
  t.match(await unset.app.keyring.status(), { phase: 'completed', encryptingFingerprint: fpB, stagedFingerprint: null })

  // the next rotation: B := a new secret C
  const secretC = fernet.generateSecret()
  const next = await buildApp(t, db.connect(), { fernetSecret: secretB, rotationFernetSecret: secretC, rotationPeriod: 60_000, migrate: false })
  t.match(await next.keyring.status(), { phase: 'staged', encryptingFingerprint: fpB, stagedFingerprint: fingerprint(secretC), retiringFingerprint: fpB })
  t.match(await next.keyring.rotate(), { phase: 'transition', rotation: { fromFingerprint: fpB, toFingerprint: fingerprint(secretC) } })
  t.equal((await next.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200)
  t.equal((await next.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 401, 'a secret retired two rotations ago stays retired')
})

test('a request at the very end sees A retired, and the completion is still recorded at once, off the request path', async t => {
  const db = await createTestDatabase(t, 'rotation_edge')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: 1500, syncInterval: 60_000 })
  const keyA = await app.apiKeys.create({ entityId: 'a' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200, 'cached')
  const endsAt = (await app.keyring.rotate()).rotation!.endsAt!.getTime()
  // Wake up at the end, before the keyring's own timer (due a few ms later), and use the keyring first.
  await new Promise(resolve => setTimeout(resolve, endsAt - Date.now()))
  while (Date.now() < endsAt);
  t.same(app.keyring.current.fingerprints, [fpB], 'from the end on, only B is accepted')
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).json().code, 'FST_APIKEY_INVALID', 'a cached key under A is refused')
  const recorded = await waitFor(async () => (await db.knex('api_key_rotations').first()).outcome === 'completed', 1000)
  t.ok(recorded <= 1000, 'the completion is recorded by the keyring\'s timer, not at the next periodic re-read a minute later')
})

test('stop early: A encrypts again and keys issued under B keep working', async t => {
  const db = await createTestDatabase(t, 'rotation_stop')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h' })
  const keyA = await app.apiKeys.create({ entityId: 'a' })
  await app.keyring.rotate()
  const keyB = await app.apiKeys.create({ entityId: 'b' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200)

  const stopped = await app.keyring.stopRotation({ actor: 'ops' })
  t.match(stopped, { phase: 'staged', encryptingFingerprint: fpA, stagedFingerprint: fpB, retiringFingerprint: fpA, keysToRetire: 1 })
  t.same(stopped.acceptedFingerprints, [fpA, fpB])
  const row = await db.knex('api_key_rotations').first()
  t.match(row, { is_rotation_enabled: false, outcome: 'stopped' }, 'drf-simple-apikey\'s stop: disabled, ended now')
  t.ok(Math.abs(new Date(row.ended).getTime() - Date.now()) < 5000)
  t.ok(isUnder((await app.apiKeys.create({ entityId: 'c' })).key, secretA), 'stopped: new keys under A again')
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200)
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200, 'keys issued under B during the transition still work')
  await t.rejects(app.keyring.stopRotation(), { code: 'FST_APIKEY_ROTATION_NOT_RUNNING', statusCode: 409 })

  t.match(await app.keyring.rotate(), { phase: 'transition' }, 'a stopped rotation can be started again')
  t.same((await db.knex('api_key_rotations').select('outcome').orderBy('id')).map(r => r.outcome), ['stopped', 'running'])
})

test('B equal to A fails at register', async t => {
  const db = await createTestDatabase(t, 'rotation_same')
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, rotationFernetSecret: secretA, migrate: true }) },
    { code: 'FST_APIKEY_SAME_SECRETS', message: 'ROTATION_FERNET_SECRET must differ from FERNET_SECRET.' })
})

test('renewal: \'header\' hands keys under the outgoing secret their replacement during a transition', async t => {
  const db = await createTestDatabase(t, 'rotation_renewal')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: 1500, renewal: 'header', keyPrefix: 'sk_' })
  const plain = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, rotationPeriod: 1500, migrate: false, keyPrefix: 'sk_' })
  const keyA = await app.apiKeys.create({ entityId: 'a' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).headers['api-key-renewal'], undefined, 'staged: no renewal')

  const { rotation } = await app.keyring.rotate()
  await plain.keyring.refresh()
  const keyB = await app.apiKeys.create({ entityId: 'b' })
  const res = await app.inject({ url: '/whoami', headers: auth(keyA.key) })
  t.equal(res.statusCode, 200)
  const renewal = res.headers['api-key-renewal'] as string
  t.match(renewal, /^sk_gAAAAA/)
  t.ok(isUnder(renewal.slice(3), secretB), 'the renewal is under the new secret')
  t.not(renewal, keyA.key)
  t.equal((await app.inject({ url: '/whoami', headers: auth(renewal) })).json().apiKey.id, keyA.record.id, 'the renewal is the same key')
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyB.key) })).headers['api-key-renewal'], undefined, 'keys under the new secret get none')
  t.equal((await app.inject({ url: '/whoami', headers: auth(renewal) })).headers['api-key-renewal'], undefined)
  t.equal((await plain.inject({ url: '/whoami', headers: auth(keyA.key) })).headers['api-key-renewal'], undefined, 'off by default')
  t.equal((await app.inject({ url: '/whoami', headers: auth('garbage') })).headers['api-key-renewal'], undefined)

  await waitFor(() => app.keyring.phase === 'completed', rotation!.endsAt!.getTime() - Date.now() + 2000)
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 401, 'the old value stops at completion')
  const after = await app.inject({ url: '/whoami', headers: auth(renewal) })
  t.equal(after.statusCode, 200, 'the renewal keeps working after completion')
  t.equal(after.headers['api-key-renewal'], undefined)
})

test('the rotation routes: status, start, stop, protected by apikeys:admin', async t => {
  const db = await createTestDatabase(t, 'rotation_routes')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '7d' })
  const admin = await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })
  const user = await app.apiKeys.create({ entityId: 'user' })
  const call = (method: 'GET' | 'POST' | 'DELETE', key?: string) =>
    app.inject({ method, url: '/apikeys/rotation', headers: key === undefined ? {} : auth(key) })

  t.equal((await call('GET')).statusCode, 401)
  t.equal((await call('POST', user.key)).json().code, 'FST_APIKEY_INSUFFICIENT_SCOPE', 'an unscoped key cannot rotate')
  const status = await call('GET', admin.key)
  t.equal(status.statusCode, 200)
  t.match(status.json(), { phase: 'staged', rotation: null, encryptingFingerprint: fpA, acceptedFingerprints: [fpA, fpB], keysToRetire: 2 })

  const started = await call('POST', admin.key)
  t.equal(started.statusCode, 200)
  const body = started.json()
  t.match(body, { phase: 'transition', encryptingFingerprint: fpB, rotation: { fromFingerprint: fpA, toFingerprint: fpB } })
  t.equal(new Date(body.rotation.endsAt).getTime() - new Date(body.rotation.startedAt).getTime(), 7 * 24 * 3600 * 1000)
  const again = await call('POST', admin.key)
  t.equal(again.statusCode, 409)
  t.match(again.json(), { code: 'FST_APIKEY_ROTATION_IN_PROGRESS', message: 'A rotation is already in progress.' })
  t.equal((await call('GET', admin.key)).json().phase, 'transition')

  const stopped = await call('DELETE', admin.key)
  t.equal(stopped.statusCode, 200)
  t.equal(stopped.json().phase, 'staged')
  const none = await call('DELETE', admin.key)
  t.equal(none.statusCode, 409)
  t.equal(none.json().code, 'FST_APIKEY_ROTATION_NOT_RUNNING')

  const onlyA = await buildApp(t, db.connect(), { migrate: false })
  const missing = await onlyA.inject({ method: 'POST', url: '/apikeys/rotation', headers: auth(admin.key) })
  t.equal(missing.statusCode, 409)
  t.equal(missing.json().code, 'FST_APIKEY_ROTATION_SECRET_MISSING')
  t.notOk(missing.body.includes(secretA) || missing.body.includes(secretB), 'no secret in the answer')
})

test('the transition ends by the clock even when the database cannot be reached', async t => {
  const db = await createTestDatabase(t, 'rotation_offline')
  await migrate(db.knex)
  const { proxy, knex } = await connectThroughProxy(t, db.url, { max: 4, acquireConnectionTimeout: 500 })
  const { app, logText } = await buildLoggedApp(t, knex, { rotationFernetSecret: secretB, rotationPeriod: 1500, syncInterval: 60_000 })
  const keyA = await app.apiKeys.create({ entityId: 'a' })
  const { rotation } = await app.keyring.rotate()
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200)

  proxy.cut()
  await waitFor(() => app.keyring.phase === 'completed', rotation!.endsAt!.getTime() - Date.now() + 3000)
  t.equal(app.keyring.phase, 'completed', 'completed by the clock alone')
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).json().code, 'FST_APIKEY_INVALID', 'A is refused without asking the database')
  t.ok(await waitFor(() => /could not re-read the rotation state/.test(logText()), 3000) <= 3000, 'the timer tried the database and said it could not')

  t.equal((await db.knex('api_key_rotations').first()).outcome, 'running')
  proxy.restore()
  const marked = await waitFor(async () => (await db.knex('api_key_rotations').first()).outcome === 'completed', 7000)
  t.ok(marked < 7000, 'once the database is back, the bookkeeping is done without any request (the listener reconnects and re-reads)')
})

test('drf-simple-apikey rotation rows: FERNET_SECRET to ROTATION_FERNET_SECRET while enabled and not ended', async t => {
  const db = await createTestDatabase(t, 'rotation_drf')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', syncInterval: 60_000 })
  // drf-simple-apikey's table allows an open-ended rotation.
  await db.knex.raw('ALTER TABLE api_key_rotations ALTER COLUMN ended DROP NOT NULL')
  const keyA = await app.apiKeys.create({ entityId: 'a' })

  await db.knex('api_key_rotations').insert({ is_rotation_enabled: true, started: new Date(), ended: new Date(Date.now() + 3600_000) })
  await app.keyring.refresh()
  t.match(await app.keyring.status(), { phase: 'transition', encryptingFingerprint: fpB, retiringFingerprint: fpA, keysToRetire: 1 })
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200)

  // drf's `rotation --stop`: disabled, ended now; the outcome column keeps its default.
  await db.knex('api_key_rotations').update({ is_rotation_enabled: false, ended: new Date() })
  await app.keyring.refresh()
  t.match(await app.keyring.status(), { phase: 'staged', encryptingFingerprint: fpA })
  t.match(await app.keyring.rotate(), { phase: 'transition' }, 'a rotation stopped by drf does not block the next one')
  await app.keyring.stopRotation()

  await db.knex('api_key_rotations').insert({ is_rotation_enabled: true, started: new Date(), ended: null })
  await app.keyring.refresh()
  const open = await app.keyring.status()
  t.match(open, { phase: 'transition', encryptingFingerprint: fpB, rotation: { endsAt: null } }, 'no end: a transition until stopped')
  const keyB = await app.apiKeys.create({ entityId: 'b' })
  t.equal((await app.inject({ url: '/apikeys/rotation', headers: auth((await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })).key) })).json().rotation.endsAt, null)
  await app.keyring.stopRotation()
  t.match(await app.keyring.status(), { phase: 'staged', encryptingFingerprint: fpA })
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyB.key) })).statusCode, 200)

  // A drf row that ended by its clock retires nothing: it does not say which secret it moved from.
  await db.knex('api_key_rotations').insert({ is_rotation_enabled: true, started: new Date(Date.now() - 7200_000), ended: new Date(Date.now() - 3600_000) })
  await app.keyring.refresh()
  t.match(await app.keyring.status(), { phase: 'staged', encryptingFingerprint: fpA })
  t.equal((await app.inject({ url: '/whoami', headers: auth(keyA.key) })).statusCode, 200)
})
