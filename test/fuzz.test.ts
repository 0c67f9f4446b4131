import { test } from 'tap'
import fc from 'fast-check'
import { createTestDatabase } from './helpers/database'
import { buildApp, secretA, secretB } from './helpers/app'
import { fernet, Keyring } from '../index'

const DEFINED_CODES = new Set([
  'FST_APIKEY_MISSING', 'FST_APIKEY_MALFORMED', 'FST_APIKEY_INVALID', 'FST_APIKEY_EXPIRED', 'FST_APIKEY_NOT_FOUND',
  'FST_APIKEY_REVOKED', 'FST_APIKEY_IP_DENIED', 'FST_APIKEY_IP_NOT_ALLOWED', 'FST_APIKEY_ENTITY_INACTIVE',
  'FST_APIKEY_INSUFFICIENT_SCOPE', 'FST_APIKEY_HTTPS_REQUIRED'
])
const RUNS = Number(process.env.FUZZ_RUNS ?? 1500)

// Header values an HTTP client can send: visible ASCII, spaces and tabs.
const headerText = (maxLength: number) => fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map(c => String.fromCharCode(c)), maxLength })
  .chain(text => fc.constantFrom(text, `Api-Key ${text}`, `Api-Key\t${text}`, `Api-Key  ${text} `))

test('generated Authorization headers: always a defined 401/403, and forged tokens never touch the database', async t => {
  const db = await createTestDatabase(t, 'fuzz')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB })
  const { key, record } = await app.apiKeys.create({ entityId: 'victim', scopes: ['other:scope'] })
  const queries: string[] = []
  db.knex.on('query', (query: { sql: string }) => queries.push(query.sql))

  const underA = new Keyring([secretA])
  const stranger = new Keyring([fernet.generateSecret()])
  const wrongTypes = fc.record({
    _pk: fc.oneof(fc.constant('1 OR 1=1'), fc.constant(-1), fc.constant(1e30), fc.constant(0), fc.constant(1.5), fc.constant(null),
      fc.constant(String(record.id)), fc.constant([record.id]), fc.constant({ $gt: 0 }), fc.boolean(), fc.string()),
    _exp: fc.oneof(fc.constant('never'), fc.constant(null), fc.constant({ nested: { deep: [1, 2] } }), fc.constant(NaN), fc.string(), fc.boolean(), fc.double({ min: 1e12, max: 1e13 })),
    _secret: fc.oneof(fc.constant(undefined), fc.integer(), fc.constant({ a: 1 }), fc.constant(['x']))
  }, { requiredKeys: [] }).filter(payload =>
    // At least one field of the wrong type, so that the payload can never name a row to read.
    !(typeof payload._pk === 'number' && Number.isSafeInteger(payload._pk) && payload._pk > 0 &&
      typeof payload._exp === 'number' && Number.isFinite(payload._exp) && (payload._secret === undefined || typeof payload._secret === 'string')))

  const forged = fc.oneof(
    { weight: 3, arbitrary: headerText(300) },
    { weight: 1, arbitrary: fc.integer({ min: 10_000, max: 200_000 }).map(n => `Api-Key ${'A'.repeat(n)}`) },
    {
      weight: 3,
      arbitrary: fc.tuple(fc.nat({ max: key.length - 1 }), fc.integer({ min: 1, max: 5 })).map(([at, bit]) => {
        const bytes = Buffer.from(key, 'base64url')
        bytes[at % bytes.length] ^= 1 << bit
        return `Api-Key ${bytes.toString('base64url')}`
      })
    },
    { weight: 2, arbitrary: fc.jsonValue().map(payload => `Api-Key ${stranger.encrypt({ _pk: record.id, _exp: 4e9, payload })}`) },
    { weight: 3, arbitrary: wrongTypes.map(payload => `Api-Key ${underA.encrypt(payload)}`) },
    { weight: 1, arbitrary: fc.jsonValue().filter(value => value === null || typeof value !== 'object' || Array.isArray(value)).map(value => `Api-Key ${fernet.encrypt(secretA, JSON.stringify(value))}`) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map(bytes => `Api-Key ${fernet.encrypt(secretA, Buffer.from(bytes))}`) },
    { weight: 1, arbitrary: fc.array(headerText(80), { minLength: 2, maxLength: 3 }) }
  )

  let answered = 0
  await fc.assert(fc.asyncProperty(forged, async authorization => {
    const res = await app.inject({ url: '/fruits', headers: { authorization } as Record<string, string> })
    answered++
    const body = res.json()
    if (res.statusCode !== 401 && res.statusCode !== 403) throw new Error(`status ${res.statusCode} for a forged header`)
    if (!DEFINED_CODES.has(body.code)) throw new Error(`undefined code ${body.code}`)
    if (queries.length !== 0) throw new Error(`a forged token reached the database: ${queries[0]}`)
  }), { numRuns: RUNS })
  t.equal(answered, RUNS, `${RUNS} generated headers answered`)
  t.equal(queries.length, 0, 'zero database queries')

  const genuine = await app.inject({ url: '/whoami', headers: { authorization: `Api-Key ${key}` } })
  t.equal(genuine.statusCode, 200, 'the genuine key still works after the flood')
})

test('payloads naming rows: any id and expiry gets a defined answer, never 200 for a forged secret', async t => {
  const db = await createTestDatabase(t, 'fuzzrows')
  const app = await buildApp(t, db.knex)
  await app.apiKeys.create({ entityId: 'someone' })
  const underA = new Keyring([secretA])
  await fc.assert(fc.asyncProperty(
    fc.record({ _pk: fc.integer({ min: 1, max: 2 ** 40 }), _exp: fc.double({ min: 0, max: 1e11, noNaN: true }), _secret: fc.option(fc.string(), { nil: undefined }) }),
    async payload => {
      const res = await app.inject({ url: '/whoami', headers: { authorization: `Api-Key ${underA.encrypt(payload)}` } })
      if (res.statusCode !== 401) throw new Error(`status ${res.statusCode}`)
      if (!DEFINED_CODES.has(res.json().code)) throw new Error(`undefined code ${res.json().code}`)
    }), { numRuns: 300 })
  t.pass('300 payloads with real-looking ids refused with defined codes')
})
