// Rotation tests' tools: apps whose log is kept, waiting for a change to show, and which secret a key is under.
import Fastify, { type FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import simpleApiKey, { Keyring, type SimpleApiKeyOptions } from '../../index'
import { secretA } from './app'
import type { Teardown } from './database'

export interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

export interface LoggedApp {
  app: FastifyInstance
  /** Every line the app logged, parsed. */
  logs: LogLine[]
  /** Every line the app logged, as written. */
  logText: () => string
}

/** An app like buildApp's, but with Fastify's logger on at `info`, writing into memory. */
export async function buildLoggedApp (t: Teardown, knex: Knex, options: SimpleApiKeyOptions = {}): Promise<LoggedApp> {
  const logs: LogLine[] = []
  const chunks: string[] = []
  const stream = {
    write (chunk: string) {
      chunks.push(chunk)
      logs.push(JSON.parse(chunk))
    }
  }
  const app = Fastify({ logger: { level: 'info', stream } })
  await app.register(simpleApiKey, { knex, fernetSecret: secretA, ...options })
  app.get('/whoami', async request => ({ id: request.apiKey?.id }))
  await app.ready()
  t.teardown(() => app.close())
  return { app, logs, logText: () => chunks.join('') }
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Polls `check` every few ms; resolves the ms it took to become true, or Infinity after `timeoutMs`. */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = performance.now()
  for (;;) {
    if (await check()) return performance.now() - start
    if (performance.now() - start > timeoutMs) return Infinity
    await sleep(2)
  }
}

/** Whether the key (without prefix) is a Fernet token under exactly this secret. */
export function isUnder (key: string, secret: string): boolean {
  return new Keyring([secret]).tryOpen(key) !== null
}

/** What another instance that already encrypts under `to` would have issued for the same key. */
export function reissuedUnder (key: string, to: string, from: string): string {
  return new Keyring([to, from]).reencrypt(key)
}
