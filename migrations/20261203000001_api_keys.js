'use strict'
// api_keys: one row per key, in drf-simple-apikey's column layout, holding a hash of the per-key secret and never the key.

exports.up = async function up (knex, tables = { keys: 'api_keys' }) {
  await knex.schema.createTable(tables.keys, table => {
    table.bigIncrements('id').primary()
    table.string('name', 255).notNullable().defaultTo('')
    table.text('entity_id').notNullable()
    table.timestamp('expiry_date', { useTz: true }).notNullable()
    table.boolean('revoked').notNullable().defaultTo(false)
    table.timestamp('created', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    table.jsonb('whitelisted_ips')
    table.jsonb('blacklisted_ips')
    table.jsonb('scopes').notNullable().defaultTo('[]')
    table.string('hashed_secret', 64).notNullable().defaultTo('')
    // A rolled key's old secret stays valid until previous_secret_expires.
    table.string('previous_hashed_secret', 64)
    table.timestamp('previous_secret_expires', { useTz: true })
    table.jsonb('metadata').notNullable().defaultTo('{}')
    table.timestamp('last_used_at', { useTz: true })
    // Fingerprint of the Fernet secret the key was last issued under, to count the keys a rotation will retire.
    table.string('secret_fingerprint', 16)
    table.index(['entity_id'])
  })
}

exports.down = async function down (knex, tables = { keys: 'api_keys' }) {
  await knex.schema.dropTable(tables.keys)
}
