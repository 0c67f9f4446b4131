'use strict'
// Adopting drf-simple-apikey: adds the plugin's own columns to drf's keys table, touching none of drf's columns.

const defaults = { keys: 'drf_simple_apikey_apikey' }

// Each column is nullable or has a default, so Django's inserts, which name only drf's columns, keep working.
exports.up = async function up (knex, tables = defaults) {
  await knex.schema.alterTable(tables.keys, table => {
    table.string('previous_hashed_secret', 64)
    table.timestamp('previous_secret_expires', { useTz: true })
    table.jsonb('metadata').notNullable().defaultTo('{}')
    table.timestamp('last_used_at', { useTz: true })
    table.string('secret_fingerprint', 16)
  })
}

exports.down = async function down (knex, tables = defaults) {
  await knex.schema.alterTable(tables.keys, table => {
    table.dropColumns('previous_hashed_secret', 'previous_secret_expires', 'metadata', 'last_used_at', 'secret_fingerprint')
  })
}
