// Opens the database the plugin uses: the app's Knex, a PostgreSQL URL, or an embedded PGlite in a local folder.
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import knexFactory, { type Knex } from 'knex'
import type { FastifyBaseLogger } from 'fastify'
import ClientPgLite = require('knex-pglite')

export interface DatabaseOptions {
  /** An existing Knex instance (PostgreSQL or PGlite). The app keeps ownership: the plugin never destroys it. */
  knex?: Knex
  /** A `postgres://` URL; defaults to the environment's `DATABASE_URL`. */
  connection?: string
  /** Folder of the embedded database used when neither `knex` nor `connection` is given. */
  dataDir?: string
}

export interface Database {
  knex: Knex
  /** True on the embedded PGlite, which has no LISTEN/NOTIFY across processes and a single connection. */
  embedded: boolean
  /** Connection settings for a dedicated connection (LISTEN), when the database is a PostgreSQL server. */
  connectionConfig: string | Knex.PgConnectionConfig | null
  /** Whether the plugin made the Knex instance and so must destroy it on close. */
  owned: boolean
}

export const defaultDataDir = '.simple-apikey-data'

export function openDatabase (options: DatabaseOptions, log: FastifyBaseLogger, env: NodeJS.ProcessEnv = process.env): Database {
  if (options.knex !== undefined) {
    const embedded = isPglite(options.knex)
    return { knex: options.knex, embedded, connectionConfig: embedded ? null : connectionOf(options.knex), owned: false }
  }
  const url = options.connection ?? (env.DATABASE_URL === '' ? undefined : env.DATABASE_URL)
  if (url !== undefined) {
    return { knex: knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 10 }, log: knexLog(log) }), embedded: false, connectionConfig: url, owned: true }
  }
  const dataDir = resolve(options.dataDir ?? defaultDataDir)
  mkdirSync(dataDir, { recursive: true })
  log.info({ dataDir }, 'fastify-simple-apikey: no database configured (knex, connection or DATABASE_URL); using the embedded PostgreSQL (PGlite)')
  return { knex: knexFactory({ client: ClientPgLite, dialect: 'postgres', connection: { filename: dataDir }, log: knexLog(log) }), embedded: true, connectionConfig: null, owned: true }
}

// Knex prints its warnings, such as a failed connection with its stack, with console.log: on stdout, past the app's logger.
function knexLog (log: FastifyBaseLogger): Knex.Config['log'] {
  return {
    warn: message => log.warn({ knex: message }, 'fastify-simple-apikey: knex warning'),
    error: message => log.error({ knex: message }, 'fastify-simple-apikey: knex error'),
    deprecate: message => log.warn({ knex: message }, 'fastify-simple-apikey: knex deprecation'),
    debug: message => log.debug({ knex: message }, 'fastify-simple-apikey: knex debug')
  }
}

function isPglite (knex: Knex): boolean {
  return knex.client instanceof ClientPgLite
}

function connectionOf (knex: Knex): string | Knex.PgConnectionConfig | null {
  const connection = knex.client.config.connection
  return typeof connection === 'string' || (typeof connection === 'object' && connection !== null) ? connection as Knex.PgConnectionConfig : null
}
