'use strict'
// Adopting drf-simple-apikey: the plugin's usage table, its key_id referencing drf's keys table.

const usage = require('../20261203000003_usage')

const defaults = { keys: 'drf_simple_apikey_apikey', usage: 'api_key_usage' }

// The same table as the plugin's own migration makes, so that usage code needs no second shape.
exports.up = async function up (knex, tables = defaults) {
  await usage.up(knex, tables)
}

exports.down = async function down (knex, tables = defaults) {
  await usage.down(knex, tables)
}
