// Adopting a drf-simple-apikey database: drf's table names and the migrations that add the plugin's columns to its tables.
import type { Knex } from 'knex'
import type { TableMigration, Tables } from './migrations'
import * as keysColumns from '../migrations/adopt-drf/20261203100001_keys_columns'
import * as rotationsColumns from '../migrations/adopt-drf/20261203100002_rotations_columns'
import * as usage from '../migrations/adopt-drf/20261203100003_usage'
import { DrfTableMissingError } from './errors'

/** The tables of a Django project that runs drf-simple-apikey with its rotation app; usage is the plugin's own new table. */
export const drfTables: Tables = Object.freeze({
  keys: 'drf_simple_apikey_apikey',
  rotations: 'drf_simple_apikey_rotation_rotation',
  usage: 'api_key_usage'
})

/** The adoption's own migrations table, apart from the plugin's `simple_apikey_migrations` and Django's `django_migrations`. */
export const adoptDrfMigrationsTableName = 'simple_apikey_drf_migrations'

// When the plugin's own migrations gain a column, a migration here must add it to drf's tables too.
export const adoptDrfMigrations: Record<string, TableMigration> = {
  '20261203100001_keys_columns.js': keysColumns,
  '20261203100002_rotations_columns.js': rotationsColumns,
  '20261203100003_usage.js': usage
}

/** Adoption alters drf's tables: they must be there, or the names are wrong. */
export async function checkDrfTables (knex: Knex, tables: Tables): Promise<void> {
  if (!await knex.schema.hasTable(tables.keys)) throw new DrfTableMissingError(tables.keys)
}
