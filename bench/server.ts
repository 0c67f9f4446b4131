// One bench server, in its own process: the bare route, behind @fastify/bearer-auth, or behind the plugin, as bench/scenarios.ts says.
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import bearerAuth from '@fastify/bearer-auth'
import knexFactory, { type Knex } from 'knex'
import simpleApiKey, { fernet, Keyring } from '../index'
import { INVALID_KEYS, MANY_INVALID_KEYS, MANY_KEYS, scenarioById, type Scenario } from './scenarios'

/** What the server tells the bench once it listens: its port and the requests to drive it with. */
export interface ReadyMessage {
  type: 'ready'
  port: number
  requests: Array<{ headers: Record<string, string> }>
}

export interface StatsMessage {
  type: 'stats'
  /** Queries the plugin sent to PostgreSQL since the server started (Knex's `query` event). */
  queries: number
  /** HTTP requests the server received since it started. */
  requests: number
  /** CPU time the server process has used, user and system, in microseconds: a cost per request that the machine's other load does not inflate. */
  cpuMicros: number
  rssBytes: number
  /** Database work still under way (connections in use or awaited), e.g. requests left in flight when the load generator stopped. */
  busy: boolean
}

async function start (scenario: Scenario): Promise<void> {
  const app = Fastify({ logger: false })
  let queries = 0
  let requests: ReadyMessage['requests']
  let knex: Knex | null = null

  if (scenario.server === 'bearer-auth') {
    const key = randomBytes(32).toString('base64url')
    await app.register(bearerAuth, { keys: new Set([key]) })
    const keys = scenario.credentials === 'invalid' ? Array.from({ length: INVALID_KEYS }, () => randomBytes(32).toString('base64url')) : [key]
    requests = keys.map(value => ({ headers: { authorization: `Bearer ${value}` } }))
  } else if (scenario.server === 'plugin') {
    knex = knexFactory({ client: 'pg', connection: requiredEnv('BENCH_DATABASE_URL'), pool: { min: 0, max: 10 } })
    knex.on('query', () => { queries++ })
    await app.register(simpleApiKey, { knex, fernetSecret: requiredEnv('FERNET_SECRET'), migrate: false, routes: false, ...scenario.pluginOptions })
    requests = (await keysFor(app, scenario)).map(key => ({ headers: { authorization: `Api-Key ${key}` } }))
  } else {
    requests = [{ headers: {} }]
  }

  app.get('/', async () => ({ hello: 'world' }))
  let received = 0
  app.server.on('request', () => { received++ })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const ready: ReadyMessage = { type: 'ready', port: (app.server.address() as AddressInfo).port, requests }
  process.send!(ready)

  process.on('message', (message: { type: string }) => {
    if (message.type === 'stats') {
      const cpu = process.cpuUsage()
      const pool = knex?.client.pool
      const busy = pool !== undefined && pool !== null && pool.numUsed() + pool.numPendingAcquires() > 0
      const stats: StatsMessage = { type: 'stats', queries, requests: received, cpuMicros: cpu.user + cpu.system, rssBytes: process.memoryUsage.rss(), busy }
      process.send!(stats)
    }
  })
  process.on('disconnect', () => {
    app.close().then(() => knex?.destroy()).finally(() => process.exit(0))
  })
}

async function keysFor (app: FastifyInstance, scenario: Scenario): Promise<string[]> {
  if (scenario.credentials === 'invalid' || scenario.credentials === 'many-invalid') {
    // Well-formed keys with a real key's payload, sealed under a secret the server does not have: refusing one takes a full HMAC check.
    const forger = new Keyring([fernet.generateSecret()])
    const count = scenario.credentials === 'invalid' ? INVALID_KEYS : MANY_INVALID_KEYS
    return Array.from({ length: count }, (_, index) => forger.encrypt({ _pk: index + 1, _exp: Date.now() / 1000 + 3600, _secret: randomBytes(32).toString('base64url') }))
  }
  const count = scenario.credentials === 'many-valid' ? MANY_KEYS : 1
  const keys: string[] = []
  while (keys.length < count) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, count - keys.length) }, () => app.apiKeys.create({ entityId: `bench-${scenario.id}` })))
    keys.push(...batch.map(issued => issued.key))
  }
  return keys
}

function requiredEnv (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set`)
  return value
}

start(scenarioById(process.argv[2])).catch(err => {
  console.error(err)
  process.exit(1)
})
