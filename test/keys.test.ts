import { test } from 'tap'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import { isUnder, sleep, waitFor } from './helpers/rotation'
import { Keyring, fernet, fingerprint } from '../index'

test('reissue: the same key under the encrypting secret, by the API and by POST /apikeys/reissue', async t => {
  const db = await createTestDatabase(t, 'keys_reissue')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: 1500, keyPrefix: 'sk_' })
  const plain = (key: string) => key.slice('sk_'.length)
  const whoami = async (key: string) => app.inject({ url: '/whoami', headers: auth(key) })
  const first = await app.apiKeys.create({ entityId: 'a', scopes: ['fruits:read'] })
  const second = await app.apiKeys.create({ entityId: 'b' })

  const staged = await app.apiKeys.reissue(first.key, { actor: 'ops' })
  t.ok(isUnder(plain(staged.key), secretA), 'staged: A still encrypts, so the reissued key is under A')
  t.not(staged.key, first.key, 'a fresh token')

  const { rotation } = await app.keyring.rotate()
  t.equal((await app.keyring.status()).keysToRetire, 2)
  const reissued = await app.apiKeys.reissue(first.key)
  t.match(reissued.key, /^sk_gAAAAA/)
  t.ok(isUnder(plain(reissued.key), secretB) && !isUnder(plain(reissued.key), secretA), 'transition: under B')
  t.same(reissued.record, first.record, 'the same key: id, scopes and expiry unchanged')
  t.equal((await whoami(reissued.key)).json().apiKey.id, first.record.id, 'the reissued key works')
  t.equal((await whoami(first.key)).statusCode, 200, 'and the old value too, until the completion')
  t.equal((await app.keyring.status()).keysToRetire, 1, 'it no longer counts as a key to retire')
  t.equal((await db.knex('api_keys').where({ id: first.record.id }).first()).secret_fingerprint, fingerprint(secretB))

  const res = await app.inject({ method: 'POST', url: '/apikeys/reissue', headers: auth(second.key) })
  t.equal(res.statusCode, 200, 'authenticated by the key itself, no admin scope needed')
  const body = res.json()
  t.match(body, { key: /^sk_gAAAAA/, record: { id: second.record.id, entityId: 'b' } })
  t.ok(isUnder(plain(body.key), secretB))
  t.equal((await whoami(body.key)).json().apiKey.id, second.record.id)
  t.equal((await app.keyring.status()).keysToRetire, 0)
  t.equal((await app.inject({ method: 'POST', url: '/apikeys/reissue' })).statusCode, 401, 'no key, no reissue')

  await waitFor(() => app.keyring.phase === 'completed', rotation!.endsAt!.getTime() - Date.now() + 2000)
  t.equal((await whoami(first.key)).json().code, 'FST_APIKEY_INVALID', 'completed: the old value stops')
  t.equal((await whoami(reissued.key)).statusCode, 200, 'the reissued one keeps working')
  t.equal((await whoami(body.key)).statusCode, 200)
  await t.rejects(app.apiKeys.reissue(first.key), { code: 'FST_APIKEY_INVALID' }, 'a key under the retired secret cannot be reissued any more')
})

test('reissue refuses revoked, expired, rolled-away and invalid keys', async t => {
  const db = await createTestDatabase(t, 'keys_reissue_refused')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB })
  const revoked = await app.apiKeys.create({ entityId: 'a' })
  await app.apiKeys.revoke(revoked.record.id)
  await t.rejects(app.apiKeys.reissue(revoked.key), { code: 'FST_APIKEY_REVOKED' })
  const res = await app.inject({ method: 'POST', url: '/apikeys/reissue', headers: auth(revoked.key) })
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'FST_APIKEY_REVOKED')
  t.notOk(res.body.includes('gAAAAA'), 'no key in the answer')

  const expired = await app.apiKeys.create({ entityId: 'a', expiresAt: new Date(Date.now() - 1000) })
  await t.rejects(app.apiKeys.reissue(expired.key), { code: 'FST_APIKEY_EXPIRED' })
  const rolled = await app.apiKeys.create({ entityId: 'a' })
  await app.apiKeys.roll(rolled.record.id)
  await t.rejects(app.apiKeys.reissue(rolled.key), { code: 'FST_APIKEY_INVALID' }, 'a rolled-away value cannot be brought back')

  await t.rejects(app.apiKeys.reissue('garbage'), { code: 'FST_APIKEY_INVALID' })
  await t.rejects(app.apiKeys.reissue(new Keyring([fernet.generateSecret()]).encrypt({ _pk: rolled.record.id, _exp: 4e9 })), { code: 'FST_APIKEY_INVALID' })
  await t.rejects(app.apiKeys.reissue(`${rolled.key} ${rolled.key}`), { code: 'FST_APIKEY_MALFORMED' })
  await t.rejects(app.apiKeys.reissue(''), { code: /^FST_APIKEY_/, statusCode: 401 })
})

test('roll with a grace period: both values work until it ends, then only the new one', async t => {
  const db = await createTestDatabase(t, 'keys_roll_grace')
  const app = await buildApp(t, db.knex)
  const whoami = async (key: string) => app.inject({ url: '/whoami', headers: auth(key) })
  const { key: old, record } = await app.apiKeys.create({ entityId: 'a', scopes: ['s'] })
  t.equal((await whoami(old)).statusCode, 200, 'warm cache')

  const rolled = await app.apiKeys.roll(record.id, { gracePeriod: 1200 }, { actor: 'ops' })
  const rolledAt = Date.now()
  t.not(rolled.key, old)
  t.same(rolled.record, record, 'the same key record')
  t.not(app.keyring.decrypt(rolled.key)._secret, app.keyring.decrypt(old)._secret, 'a new per-key secret')
  t.equal((await whoami(rolled.key)).json().apiKey.id, record.id, 'the new value works')
  t.equal((await whoami(old)).statusCode, 200, 'the old one too, during the grace period')

  await sleep(rolledAt + 1200 - Date.now() + 100)
  const refused = await whoami(old)
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'FST_APIKEY_INVALID', 'after the grace period the old value is invalid, though it was cached')
  t.equal((await whoami(rolled.key)).statusCode, 200, 'the new value keeps working')

  const viaRoute = await app.inject({
    method: 'POST',
    url: `/apikeys/${record.id}/roll`,
    headers: auth((await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })).key),
    payload: { gracePeriod: '1h' }
  })
  t.equal(viaRoute.statusCode, 200)
  t.equal((await whoami(viaRoute.json().key)).statusCode, 200)
  t.equal((await whoami(rolled.key)).statusCode, 200, 'route with gracePeriod \'1h\': the previous value still works')
})

test('roll without a grace period: the old value fails at once, even cached, even with the id as a string', async t => {
  const db = await createTestDatabase(t, 'keys_roll_now')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h' })
  const whoami = async (key: string) => app.inject({ url: '/whoami', headers: auth(key) })

  for (const [label, roll] of [
    ['no options', (id: number) => app.apiKeys.roll(id)],
    ['gracePeriod 0', (id: number) => app.apiKeys.roll(id, { gracePeriod: 0 })],
    // JavaScript callers pass ids straight from a URL or a form.
    ['id as a string', (id: number) => app.apiKeys.roll(String(id) as unknown as number)]
  ] as const) {
    const { key: old, record } = await app.apiKeys.create({ entityId: label })
    t.equal((await whoami(old)).statusCode, 200, `${label}: warm cache`)
    const rolled = await roll(record.id)
    const refused = await whoami(old)
    t.equal(refused.statusCode, 401, `${label}: the old value fails at once`)
    t.equal(refused.json().code, 'FST_APIKEY_INVALID')
    t.equal((await whoami(rolled.key)).json().apiKey.id, record.id, `${label}: the new value works`)
  }

  await app.keyring.rotate()
  const { key, record } = await app.apiKeys.create({ entityId: 'rotating' })
  await app.keyring.stopRotation()
  const rolled = await app.apiKeys.roll(record.id)
  t.ok(isUnder(rolled.key, secretA), 'a rolled key is under the secret that encrypts now')
  t.equal((await db.knex('api_keys').where({ id: record.id }).first()).secret_fingerprint, fingerprint(secretA))
  t.equal((await whoami(key)).statusCode, 401)

  await t.rejects(app.apiKeys.roll(999_999), { code: 'FST_APIKEY_UNKNOWN_KEY', statusCode: 404 })
  await t.rejects(app.apiKeys.roll(record.id, { gracePeriod: 'soon' }), { code: 'FST_APIKEY_INVALID_INPUT', statusCode: 400 })
  await t.rejects(app.apiKeys.roll(-1), { code: 'FST_APIKEY_INVALID_INPUT' })
})
