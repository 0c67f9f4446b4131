import { test } from 'tap'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import simpleApiKey, { fernet } from '../index'
import { createTestDatabase } from './helpers/database'
import { connectThroughProxy } from './helpers/proxy'

const A = fernet.generateSecret()
const B = fernet.generateSecret()

function capture () {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, _encoding, done) {
      lines.push(chunk.toString())
      done()
    }
  })
  return { lines, stream }
}

test('no key, per-key secret or Fernet secret in logs, error messages or responses', async t => {
  const db = await createTestDatabase(t, 'secrets')
  const { proxy, knex } = await connectThroughProxy(t, db.url)
  const log = capture()
  const app = Fastify({ logger: { level: 'trace', stream: log.stream } })
  await app.register(simpleApiKey, { knex, fernetSecret: A, rotationFernetSecret: B, migrate: true, cache: false, renewal: 'header', rotationPeriod: 60_000 })
  app.get('/data', async request => ({ id: request.apiKey?.id }))
  await app.ready()
  t.teardown(() => app.close())

  const issuedKeys: string[] = []
  const handedOut = (key: string) => { issuedKeys.push(key); return key }
  const admin = handedOut((await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })).key)
  const user = handedOut((await app.apiKeys.create({ entityId: 'user', blacklistedIps: ['10.0.0.0/8'] })).key)
  const bodies: string[] = []
  const call = async (method: 'GET' | 'POST' | 'DELETE', path: string, key?: string, payload?: object, handsOutKey = false) => {
    const res = await app.inject({ method, url: path, payload, headers: key === undefined ? {} : { authorization: `Api-Key ${key}` } })
    if (handsOutKey && res.statusCode < 300) handedOut(res.json().key)
    else bodies.push(res.body + JSON.stringify(res.headers))
    return res
  }

  await call('GET', '/data', user)
  await call('GET', '/data', user + 'x')
  await call('GET', '/data', `${user} ${user}`)
  await call('GET', '/data', fernet.encrypt(fernet.generateSecret(), '{}'))
  const created = await call('POST', '/apikeys/', admin, { entityId: 'new', name: 'n' }, true)
  const createdId = created.json().record.id
  await call('GET', '/apikeys/', admin)
  await call('GET', `/apikeys/${createdId}`, admin)
  await call('POST', '/apikeys/', user, { entityId: 'x' })
  await call('POST', '/apikeys/', admin, { entityId: 'x', whitelistedIps: ['not-an-ip'] })
  await call('POST', '/apikeys/rotation', admin)
  await call('POST', '/apikeys/rotation', admin)
  const renewed = await call('GET', '/data', user)
  if (renewed.headers['api-key-renewal'] !== undefined) {
    handedOut(String(renewed.headers['api-key-renewal']))
    bodies.pop()
  }
  await call('POST', '/apikeys/reissue', user, undefined, true)
  await call('POST', `/apikeys/${createdId}/roll`, admin, { gracePeriod: '1h' }, true)
  await call('POST', `/apikeys/${createdId}/revoke`, admin)
  await call('GET', '/data', issuedKeys[2])
  await call('DELETE', '/apikeys/rotation', admin)
  await call('DELETE', '/apikeys/rotation', admin)
  proxy.cut()
  await call('GET', '/data', user)
  proxy.restore()
  await call('GET', '/data', user)

  const registerErrors: string[] = []
  for (const options of [{ fernetSecret: A.slice(0, 40) }, { fernetSecret: A, rotationFernetSecret: A }, { fernetSecret: A, rotationFernetSecret: B + 'AA' }]) {
    const bad = Fastify({ logger: { level: 'trace', stream: log.stream } })
    bad.register(simpleApiKey, { knex: db.knex, ...options })
    const err = await bad.ready().then(() => null, (e: Error) => e)
    registerErrors.push(String(err?.message) + String(err?.stack))
    await bad.close()
  }

  const payloadSecrets = issuedKeys.map(key => String(app.keyring.decrypt(key)._secret ?? ''))
  const forbidden = [
    ['FERNET_SECRET', A], ['FERNET_SECRET without padding', A.replace(/=+$/, '')],
    ['ROTATION_FERNET_SECRET', B], ['ROTATION_FERNET_SECRET without padding', B.replace(/=+$/, '')],
    ...issuedKeys.map((key, i) => [`key #${i}`, key.slice(0, 60)]),
    ...payloadSecrets.filter(secret => secret !== '').map((secret, i) => [`per-key secret #${i}`, secret])
  ]
  const haystacks = { logs: log.lines.join('\n'), responses: bodies.join('\n'), 'register errors': registerErrors.join('\n') }
  t.ok(log.lines.length > 20, `captured ${log.lines.length} log lines`)
  t.ok(bodies.length > 15, `checked ${bodies.length} responses`)
  t.ok(issuedKeys.length >= 5, `${issuedKeys.length} keys handed out`)
  for (const [where, text] of Object.entries(haystacks)) {
    for (const [what, secret] of forbidden) {
      t.notOk(text.includes(secret), `no ${what} in ${where}`)
    }
  }
  t.match(haystacks.logs, /FST_APIKEY_UNAVAILABLE/, 'the outage was logged')
  t.match(haystacks.logs, /apiKeyId/, 'rejections are logged with the key id')
})
