'use strict'
// Adopting drf-simple-apikey: adds the secrets' fingerprints and the outcome to drf's rotations table, or makes the table.

const rotations = require('../20261203000002_rotations')

const defaults = { rotations: 'drf_simple_apikey_rotation_rotation' }
// Marks a rotations table that adoption made (Django's rotation app was not installed), so that down drops it.
const CREATED_BY_ADOPTION = 'fastify-simple-apikey: made by the drf-simple-apikey adoption'

// outcome has no default: rows that Django's `manage.py rotation` inserts keep NULL, which the plugin
// reads with drf's meaning (on while is_rotation_enabled and ended is not past), and they stay out of
// the one-running index, so Django's writes never collide with it.
exports.up = async function up (knex, tables = defaults) {
  if (!await knex.schema.hasTable(tables.rotations)) {
    await rotations.up(knex, tables)
    // COMMENT takes a literal, not a parameter; the text is a constant without quotes.
    await knex.raw(`COMMENT ON TABLE ?? IS '${CREATED_BY_ADOPTION}'`, [tables.rotations])
    return
  }
  await knex.schema.alterTable(tables.rotations, table => {
    table.string('from_fingerprint', 16)
    table.string('to_fingerprint', 16)
    table.string('outcome', 16)
  })
  await knex.raw('CREATE UNIQUE INDEX ?? ON ?? ((true)) WHERE outcome = \'running\'', [`${tables.rotations}_one_running`, tables.rotations])
}

exports.down = async function down (knex, tables = defaults) {
  const { rows } = await knex.raw('SELECT obj_description(quote_ident(?)::regclass, \'pg_class\') AS comment', [tables.rotations])
  if (rows[0].comment === CREATED_BY_ADOPTION) {
    await rotations.down(knex, tables)
    return
  }
  await knex.raw('DROP INDEX IF EXISTS ??', [`${tables.rotations}_one_running`])
  await knex.schema.alterTable(tables.rotations, table => {
    table.dropColumns('from_fingerprint', 'to_fingerprint', 'outcome')
  })
}
