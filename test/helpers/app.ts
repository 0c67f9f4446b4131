// Test apps: a Fastify instance with the plugin on a test database and a protected and a public route.
import Fastify, { type FastifyInstance } from 'fastify'
import simpleApiKey, { fernet, type SimpleApiKeyOptions } from '../../index'
import type { Teardown } from './database'
import type { Knex } from 'knex'

export const secretA = fernet.generateSecret()
export const secretB = fernet.generateSecret()

export async function buildApp (t: Teardown, knex: Knex, options: SimpleApiKeyOptions = {}, setup?: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(simpleApiKey, { knex, fernetSecret: secretA, migrate: true, ...options })
  app.get('/fruits', { config: { apiKey: { scopes: ['fruits:read'] } } }, async request => ({ apiKey: request.apiKey }))
  app.get('/whoami', async request => ({ apiKey: request.apiKey }))
  app.get('/public', { config: { apiKey: false } }, async request => ({ public: true, apiKey: request.apiKey }))
  setup?.(app)
  await app.ready()
  t.teardown(() => app.close())
  return app
}

export function auth (key: string, keyword = 'Api-Key'): { authorization: string } {
  return { authorization: `${keyword} ${key}` }
}
