// The plugin's Knex migrations as a migration source, run into their own migrations table.
import type { Knex } from 'knex'
import * as apiKeys from '../migrations/20261203000001_api_keys'
import * as rotations from '../migrations/20261203000002_rotations'
import * as usage from '../migrations/20261203000003_usage'
import { adoptDrfMigrations, adoptDrfMigrationsTableName, checkDrfTables, drfTables } from './adopt'

export interface Tables {
  /** Table of API keys. Default `api_keys`. */
  keys: string
  /** Table of secret rotations. Default `api_key_rotations`. */
  rotations: string
  /** Table of per-key usage counts. Default `api_key_usage`. */
  usage: string
}

export const defaultTables: Tables = Object.freeze({ keys: 'api_keys', rotations: 'api_key_rotations', usage: 'api_key_usage' })

/** The plugin's own migrations table, so that its history never mixes with the app's `knex_migrations`. */
export const migrationsTableName = 'simple_apikey_migrations'

export type TableMigration = { up: (knex: Knex, tables: Tables) => Promise<void>, down: (knex: Knex, tables: Tables) => Promise<void> }

export interface MigrateOptions {
  /** Adopt drf-simple-apikey's tables: add the plugin's columns to them (tables default to drf's names) instead of creating the plugin's own. */
  adoptDrf?: boolean
}

const migrations: Record<string, TableMigration> = {
  '20261203000001_api_keys.js': apiKeys,
  '20261203000002_rotations.js': rotations,
  '20261203000003_usage.js': usage
}

/** A Knex migration source for the plugin's tables, with their names. */
export class MigrationSource implements Knex.MigrationSource<string> {
  readonly tables: Tables
  readonly #migrations: Record<string, TableMigration>

  constructor (options: { tables?: Partial<Tables> } & MigrateOptions = {}) {
    this.tables = { ...(options.adoptDrf === true ? drfTables : defaultTables), ...options.tables }
    this.#migrations = options.adoptDrf === true ? adoptDrfMigrations : migrations
  }

  async getMigrations (): Promise<string[]> {
    return Object.keys(this.#migrations)
  }

  getMigrationName (migration: string): string {
    return migration
  }

  async getMigration (migration: string): Promise<Knex.Migration> {
    const { up, down } = this.#migrations[migration]
    return { up: knex => up(knex, this.tables), down: knex => down(knex, this.tables) }
  }
}

/** For a knexfile: `migrations: { migrationSource, tableName: migrationsTableName }`. */
export const migrationSource = new MigrationSource()

/** Knex migrator settings; with `adoptDrf`, e.g. `knex.migrate.rollback(migrationConfig(drfTables, { adoptDrf: true }), true)` undoes an adoption. */
export function migrationConfig (tables?: Partial<Tables>, options: MigrateOptions = {}): Knex.MigratorConfig {
  return {
    migrationSource: new MigrationSource({ tables, adoptDrf: options.adoptDrf }),
    tableName: options.adoptDrf === true ? adoptDrfMigrationsTableName : migrationsTableName
  }
}

export async function migrate (knex: Knex, tables?: Partial<Tables>, options: MigrateOptions = {}): Promise<void> {
  const config = migrationConfig(tables, options)
  if (options.adoptDrf === true) await checkDrfTables(knex, (config.migrationSource as MigrationSource).tables)
  await knex.migrate.latest(config)
}

/** Undoes the adoption of drf-simple-apikey's tables: drops only what it added. */
export async function rollbackAdoption (knex: Knex, tables?: Partial<Tables>): Promise<void> {
  await knex.migrate.rollback(migrationConfig(tables, { adoptDrf: true }), true)
}
