'use strict'
// rotations: the history of Fernet secret rotations, in drf-simple-apikey's layout plus the secrets' fingerprints.

exports.up = async function up (knex, tables = { rotations: 'api_key_rotations' }) {
  await knex.schema.createTable(tables.rotations, table => {
    table.bigIncrements('id').primary()
    table.boolean('is_rotation_enabled').notNullable().defaultTo(false)
    table.timestamp('started', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    table.timestamp('ended', { useTz: true }).notNullable()
    table.string('from_fingerprint', 16)
    table.string('to_fingerprint', 16)
    // running until its end or a stop; completed once its end has passed; stopped when ended early.
    table.string('outcome', 16).notNullable().defaultTo('running')
  })
  // Two instances starting a rotation at the same moment: the database lets only one row be running.
  await knex.raw('CREATE UNIQUE INDEX ?? ON ?? ((true)) WHERE outcome = \'running\'', [`${tables.rotations}_one_running`, tables.rotations])
}

exports.down = async function down (knex, tables = { rotations: 'api_key_rotations' }) {
  await knex.schema.dropTable(tables.rotations)
}
