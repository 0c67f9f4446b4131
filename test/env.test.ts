import { test } from 'tap'
import Fastify from 'fastify'
import fastifyEnv from '@fastify/env'
import simpleApiKey, { envSchema, fernet } from '../index'

const A = fernet.generateSecret()
const B = fernet.generateSecret()

test('envSchema works inside an app\'s own @fastify/env schema', async t => {
  const app = Fastify()
  await app.register(fastifyEnv, {
    schema: { ...envSchema, properties: { ...envSchema.properties, PORT: { type: 'integer', default: 3000 } } },
    data: { FERNET_SECRET: A, ROTATION_FERNET_SECRET: B }
  })
  t.equal((app as unknown as { config: Record<string, unknown> }).config.FERNET_SECRET, A)
  await app.close()

  const bad = Fastify()
  bad.register(fastifyEnv, { schema: envSchema, data: { FERNET_SECRET: 'short' } })
  await t.rejects(async () => { await bad.ready() }, /FERNET_SECRET/)
  const missing = Fastify()
  missing.register(fastifyEnv, { schema: envSchema, data: {} })
  await t.rejects(async () => { await missing.ready() }, /FERNET_SECRET/)
})

test('register fails clearly on a bad or missing secret, never printing it', async t => {
  const cases: Array<[string, object, NodeJS.ProcessEnv, string, RegExp]> = [
    ['missing', {}, {}, 'FST_APIKEY_MISSING_SECRET', /FERNET_SECRET/],
    ['bad option', { fernetSecret: 'abc' + A.slice(3, 20) }, {}, 'FST_APIKEY_INVALID_SECRET', /^FERNET_SECRET/],
    ['bad env', {}, { FERNET_SECRET: A.slice(0, 30) }, 'FST_APIKEY_INVALID_SECRET', /^FERNET_SECRET/],
    ['bad rotation env', { fernetSecret: A }, { ROTATION_FERNET_SECRET: B + 'xx' }, 'FST_APIKEY_INVALID_SECRET', /^ROTATION_FERNET_SECRET/],
    ['same secrets', { fernetSecret: A, rotationFernetSecret: A }, {}, 'FST_APIKEY_SAME_SECRETS', /must differ/]
  ]
  for (const [name, options, env, code, message] of cases) {
    const saved = { ...process.env }
    delete process.env.FERNET_SECRET
    delete process.env.ROTATION_FERNET_SECRET
    Object.assign(process.env, env)
    const app = Fastify()
    app.register(simpleApiKey, { ...options, hook: false, routes: false, migrate: false })
    const err = await app.ready().then(() => null, (e: Error & { code: string }) => e)
    process.env = saved
    t.equal(err?.code, code, name)
    t.match(err?.message, message, name)
    t.notMatch(err?.message ?? '', A.slice(0, 20), `${name}: no secret in the message`)
    t.notMatch(err?.message ?? '', B.slice(0, 20), `${name}: no secret in the message`)
    await app.close()
  }
})
