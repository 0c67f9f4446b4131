'use strict'
// usage: per key, route pattern and method, how many accepted requests and when the last one came.

exports.up = async function up (knex, tables = { keys: 'api_keys', usage: 'api_key_usage' }) {
  await knex.schema.createTable(tables.usage, table => {
    table.bigInteger('key_id').notNullable().references('id').inTable(tables.keys).onDelete('CASCADE')
    table.string('method', 16).notNullable()
    table.string('route', 512).notNullable()
    table.bigInteger('count').notNullable().defaultTo(0)
    table.timestamp('last_used_at', { useTz: true }).notNullable()
    table.primary(['key_id', 'method', 'route'])
  })
}

exports.down = async function down (knex, tables = { usage: 'api_key_usage' }) {
  await knex.schema.dropTable(tables.usage)
}
