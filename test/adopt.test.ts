import { test, type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { execFile, spawnSync } from 'node:child_process'
import { promisify } from 'node:util'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import { createTestDatabase, type Teardown, type TestDatabase } from './helpers/database'
import simpleApiKey, { Keyring, drfTables, fingerprint, migrate, rollbackAdoption, type SimpleApiKeyOptions } from '../index'

const run = promisify(execFile)
const cli = join(__dirname, '..', 'dist', 'lib', 'cli.js')
const fixtureDir = join(__dirname, 'fixtures', 'drf')
const fixture = JSON.parse(readFileSync(join(fixtureDir, 'keys.json'), 'utf8'))
const FERNET_SECRET: string = fixture.settings.DRF_API_KEY.FERNET_SECRET
const ROTATION_FERNET_SECRET: string = fixture.settings.DRF_API_KEY.ROTATION_FERNET_SECRET
const KEYS = drfTables.keys
const ROTATIONS = drfTables.rotations
const DJANGO_TABLES = ['auth_user', KEYS, ROTATIONS, 'drf_simple_apikey_analytics_apikeyanalytics']
const ADDED_COLUMNS = [
  `${KEYS}.previous_hashed_secret`, `${KEYS}.previous_secret_expires`, `${KEYS}.metadata`, `${KEYS}.last_used_at`, `${KEYS}.secret_fingerprint`,
  `${ROTATIONS}.from_fingerprint`, `${ROTATIONS}.to_fingerprint`, `${ROTATIONS}.outcome`
]

interface DrfCase {
  case: string
  key: string
  authorization: string
  deleted: boolean
  row: { id: number, entity_id: number, scopes: string[] | null }
  expected: { rotation_off: Outcome, rotation_on: Outcome, has_scopes?: Record<string, boolean> }
}
type Outcome = { result: 'authenticated', entity_id: number, api_key_id: number } | { result: 'rejected', status: 403, detail: string } | { result: 'not_attempted' }

const cases: DrfCase[] = fixture.cases
const caseNamed = (name: string): DrfCase => cases.find(c => c.case === name)!

// drf answers every refusal with 403 {detail}; the plugin answers with its code, 401 when the key itself is bad, and drf's text.
const answerTo: Record<string, [number, string]> = {
  'Incorrect API KEY format.': [401, 'FST_APIKEY_MALFORMED'],
  'Invalid API Key.': [401, 'FST_APIKEY_INVALID'],
  'API Key has already expired.': [401, 'FST_APIKEY_EXPIRED'],
  'No entity matching this api key.': [401, 'FST_APIKEY_NOT_FOUND'],
  'This API Key has been revoked.': [401, 'FST_APIKEY_REVOKED'],
  'Access denied from blacklisted IP.': [403, 'FST_APIKEY_IP_DENIED'],
  'Access restricted to specific IP addresses.': [403, 'FST_APIKEY_IP_NOT_ALLOWED'],
  'This API key does not have the required scope(s) for this action.': [403, 'FST_APIKEY_INSUFFICIENT_SCOPE'],
  'Authentication credentials were not provided.': [401, 'FST_APIKEY_MISSING']
}

// The two documented differences: the plugin also checks the row's expiry_date, and takes `_pk` only as a JSON integer.
const differences: Record<string, { drf: Outcome['result'], ours: Outcome }> = {
  expired_by_row_expiry_only: { drf: 'authenticated', ours: { result: 'rejected', status: 403, detail: 'API Key has already expired.' } },
  payload_pk_is_numeric_string: { drf: 'authenticated', ours: { result: 'rejected', status: 403, detail: 'Invalid API Key.' } }
}

const scopeRoutes: Record<string, string[]> = {
  '[]': [],
  '["fruits:read"]': ['fruits:read'],
  '["fruits:read", "fruits:write"]': ['fruits:read', 'fruits:write'],
  '["fruits:delete"]': ['fruits:delete']
}
const scopeUrl = (required: string) => `/scoped/${Object.keys(scopeRoutes).indexOf(required)}`

/** A schema with drf-simple-apikey's tables exactly as Django's migrations leave them, and the fixture's rows. */
async function drfDatabase (t: Teardown, name: string, options: { integerIds?: boolean } = {}): Promise<TestDatabase> {
  const db = await createTestDatabase(t, name)
  const ddl: string = fixture.ddl
  // Databases that never ran drf's 0003_alter_apikey_id keep 0001's integer id.
  await db.knex.raw(options.integerIds === true ? ddl.replace(`CREATE TABLE "${KEYS}" ("id" bigint`, `CREATE TABLE "${KEYS}" ("id" integer`) : ddl)
  await db.knex.raw(fixture.seed_sql)
  return db
}

/** Rows as Django wrote them: only drf's columns, as `manage.py rotation` and the ORM insert them. */
async function insertDjangoRotation (knex: Knex, row: { is_rotation_enabled: boolean, started: string | Knex.Raw, ended: string | Knex.Raw | null }): Promise<number> {
  const [inserted] = await knex(ROTATIONS).insert(row).returning('id')
  return Number(inserted.id)
}

async function drfApp (t: Teardown, knex: Knex, options: SimpleApiKeyOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(simpleApiKey, {
    knex,
    fernetSecret: FERNET_SECRET,
    tables: drfTables,
    migrate: false,
    // Django's auth_user: the key's entityId is the user id as a string.
    isEntityActive: async entityId => (await knex('auth_user').where({ id: Number(entityId) }).first('is_active'))?.is_active === true,
    ...options
  })
  app.get('/whoami', async request => ({ apiKey: request.apiKey }))
  for (const [required, scopes] of Object.entries(scopeRoutes)) {
    app.get(scopeUrl(required), { config: { apiKey: { scopes } } }, async request => ({ apiKey: request.apiKey }))
  }
  await app.ready()
  t.teardown(() => app.close())
  return app
}

/** A database adopted and ready for verification: auth_user gets is_active, as Django's real table has. */
async function adoptedDatabase (t: Teardown, name: string, options: { integerIds?: boolean } = {}): Promise<TestDatabase> {
  const db = await drfDatabase(t, name, options)
  await db.knex.raw('ALTER TABLE auth_user ADD COLUMN is_active boolean NOT NULL DEFAULT true')
  await migrate(db.knex, drfTables, { adoptDrf: true })
  return db
}

async function expectOutcome (t: Test, app: FastifyInstance, authorization: string | null, expected: Outcome, label: string, url = '/whoami'): Promise<void> {
  const res = await app.inject({ url, headers: authorization === null ? {} : { authorization } })
  if (expected.result === 'authenticated') {
    t.equal(res.statusCode, 200, `${label}: accepted`)
    if (res.statusCode === 200) {
      t.equal(res.json().apiKey.id, expected.api_key_id, `${label}: key id`)
      t.equal(res.json().apiKey.entityId, String(expected.entity_id), `${label}: Django's user id, as a string`)
    }
    return
  }
  const detail = expected.result === 'rejected' ? expected.detail : 'Authentication credentials were not provided.'
  const [status, code] = answerTo[detail]
  t.equal(res.statusCode, status, `${label}: status`)
  t.match(res.json(), { code, message: detail }, `${label}: ${code} with drf's text`)
  t.equal(res.headers['www-authenticate'], status === 401 ? 'Api-Key' : undefined, `${label}: WWW-Authenticate on 401 only`)
}

/** Every fixture case against the app, for drf's rotation-off or rotation-on crypto. */
async function checkEveryCase (t: Test, app: FastifyInstance, rotation: 'rotation_off' | 'rotation_on'): Promise<void> {
  for (const c of cases) {
    const difference = differences[c.case]
    if (difference !== undefined) t.equal(c.expected[rotation].result, difference.drf, `${c.case}: drf's outcome is the one the guide documents`)
    await expectOutcome(t, app, c.authorization, difference?.ours ?? c.expected[rotation], c.case)
  }
  for (const bad of fixture.bad_keys) {
    const difference = differences[bad.case]
    if (difference !== undefined) t.equal(bad.expected[rotation].result, difference.drf, `${bad.case}: drf's outcome is the one the guide documents`)
    await expectOutcome(t, app, bad.authorization, difference?.ours ?? bad.expected[rotation], bad.case)
  }
  for (const header of fixture.header_cases) await expectOutcome(t, app, header.authorization, header.expected, header.case)
}

function underSecret (key: string, secret: string): boolean {
  return new Keyring([secret]).tryOpen(key) !== null
}

async function waitFor (t: Test, condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!condition() && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 25))
  t.ok(condition(), what)
}

/** information_schema columns, every row (timestamps in full, as text), indexes and constraints of the given tables. */
async function dumpTables (db: TestDatabase, tables: string[]) {
  const columns = await db.knex('information_schema.columns')
    .select('table_name', 'column_name', 'ordinal_position', 'data_type', 'character_maximum_length', 'is_nullable', 'column_default',
      'is_identity', 'identity_generation')
    .where('table_schema', db.schema).whereIn('table_name', tables)
    .orderBy(['table_name', 'ordinal_position'])
  const rows: Record<string, Array<Record<string, unknown>>> = {}
  for (const table of tables) {
    const { rows: found } = await db.knex.raw('SELECT row_to_json(t)::text AS row FROM ?? t ORDER BY id', [table])
    rows[table] = found.map((row: { row: string }) => JSON.parse(row.row))
  }
  const indexes = await db.knex('pg_indexes').select('tablename', 'indexname', 'indexdef')
    .where('schemaname', db.schema).whereIn('tablename', tables).orderBy('indexname')
  const { rows: constraints } = await db.knex.raw(`
    SELECT c.conname, r.relname AS table_name, pg_get_constraintdef(c.oid) AS definition, c.condeferrable, c.condeferred
    FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
    WHERE n.nspname = ? AND r.relname = ANY(?) ORDER BY c.conname`, [db.schema, tables])
  return { columns, rows, indexes, constraints }
}

function withoutAdded (dump: Awaited<ReturnType<typeof dumpTables>>) {
  const added = (table: string, column: string) => ADDED_COLUMNS.includes(`${table}.${column}`)
  return {
    columns: dump.columns.filter(column => !added(column.table_name, column.column_name)),
    rows: Object.fromEntries(Object.entries(dump.rows).map(([table, rows]) =>
      [table, rows.map(row => Object.fromEntries(Object.entries(row).filter(([column]) => !added(table, column))))])),
    indexes: dump.indexes.filter(index => index.indexname !== `${ROTATIONS}_one_running`),
    constraints: dump.constraints
  }
}

test('adoption adds only the plugin\'s columns to drf\'s tables, leaves Django\'s columns and rows as they were, and rolls back', async t => {
  const db = await drfDatabase(t, 'adopt_schema')
  await insertDjangoRotation(db.knex, { is_rotation_enabled: true, started: '2026-03-01T08:30:00.250000+00:00', ended: '2026-03-08T08:30:00.250000+00:00' })
  await db.knex('drf_simple_apikey_analytics_apikeyanalytics')
    .insert({ request_number: 3, accessed_endpoints: JSON.stringify({ endpoints: { '/api/fruits/': 3 } }), api_key_id: 2 })
  const before = await dumpTables(db, DJANGO_TABLES)
  t.equal(before.rows[KEYS].length, cases.filter(c => !c.deleted).length, 'the fixture\'s rows are in')

  const app = Fastify({ logger: false })
  app.register(simpleApiKey, { knex: db.knex, fernetSecret: FERNET_SECRET, tables: drfTables, migrate: false })
  await t.rejects(async () => { await app.ready() }, { code: 'FST_APIKEY_NOT_ADOPTED', message: new RegExp(`"${KEYS}".*simple-apikey migrate --adopt-drf`) },
    'the plugin on drf\'s tables before adoption says what to run')
  await app.close()

  const adopted = await run('node', [cli, 'migrate', '--adopt-drf', '--database-url', db.url], { timeout: 30_000 })
  t.match(adopted.stdout, `Adopted ${KEYS} and ${ROTATIONS}; usage goes to api_key_usage.`)
  const again = await run('node', [cli, 'migrate', '--adopt-drf', '--database-url', db.url], { timeout: 30_000 })
  t.match(again.stdout, 'Adopted', 'adopting twice is harmless')

  const after = await dumpTables(db, DJANGO_TABLES)
  t.same(withoutAdded(after), before, 'less the added columns and index, Django\'s columns, rows, indexes and constraints are unchanged')
  const addedColumns = after.columns.filter(column => ADDED_COLUMNS.includes(`${column.table_name}.${column.column_name}`))
  t.same(addedColumns.map(column => [`${column.table_name}.${column.column_name}`, column.data_type, column.is_nullable, column.column_default]), [
    [`${KEYS}.previous_hashed_secret`, 'character varying', 'YES', null],
    [`${KEYS}.previous_secret_expires`, 'timestamp with time zone', 'YES', null],
    [`${KEYS}.metadata`, 'jsonb', 'NO', '\'{}\'::jsonb'],
    [`${KEYS}.last_used_at`, 'timestamp with time zone', 'YES', null],
    [`${KEYS}.secret_fingerprint`, 'character varying', 'YES', null],
    [`${ROTATIONS}.from_fingerprint`, 'character varying', 'YES', null],
    [`${ROTATIONS}.to_fingerprint`, 'character varying', 'YES', null],
    [`${ROTATIONS}.outcome`, 'character varying', 'YES', null]
  ], 'every added column is nullable or has a default; outcome stays NULL on Django\'s rows')
  t.same(after.rows[KEYS].map(row => row.metadata), before.rows[KEYS].map(() => ({})), 'existing keys read as having no metadata')
  t.same(after.rows[ROTATIONS].map(row => row.outcome), [null], 'Django\'s rotation row keeps a NULL outcome')
  t.match(after.indexes.find(index => index.indexname === `${ROTATIONS}_one_running`),
    { indexdef: /UNIQUE INDEX .* WHERE \(\(outcome\)::text = 'running'::text\)/ }, 'the one-running index covers only the plugin\'s rows')
  t.ok(await db.knex.schema.hasTable('api_key_usage'), 'the usage table is made')
  const { rows: usageForeignKey } = await db.knex.raw(`
    SELECT pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
    WHERE n.nspname = ? AND r.relname = 'api_key_usage' AND c.contype = 'f'`, [db.schema])
  t.same(usageForeignKey.map((row: { definition: string }) => row.definition), [`FOREIGN KEY (key_id) REFERENCES ${KEYS}(id) ON DELETE CASCADE`],
    'usage rows reference drf\'s keys and go when Django deletes a key')
  t.same((await db.knex('simple_apikey_drf_migrations').select('name').orderBy('id')).map(row => row.name),
    ['20261203100001_keys_columns.js', '20261203100002_rotations_columns.js', '20261203100003_usage.js'], 'recorded in its own migrations table')
  t.notOk(await db.knex.schema.hasTable('simple_apikey_migrations'), 'the plugin\'s own migrations did not run')

  const rolledBack = await run('node', [cli, 'migrate', '--adopt-drf', '--rollback', '--database-url', db.url], { timeout: 30_000 })
  t.match(rolledBack.stdout, 'Adoption undone')
  t.same(await dumpTables(db, DJANGO_TABLES), before, 'after the rollback, Django\'s tables are exactly as before')
  t.notOk(await db.knex.schema.hasTable('api_key_usage'), 'the usage table is gone')

  const misuse = spawnSync('node', [cli, 'migrate', '--rollback', '--database-url', db.url], { timeout: 30_000 })
  t.equal(misuse.status, 1)
  t.match(misuse.stderr.toString(), '--rollback undoes an adoption: use it with --adopt-drf')
  t.notOk(await db.knex.schema.hasTable('api_key_usage'), 'and nothing ran')
})

test('adoption: a missing keys table is a clear error; a missing rotations table is made, and dropped again on rollback', async t => {
  const db = await createTestDatabase(t, 'adopt_missing')
  await t.rejects(migrate(db.knex, drfTables, { adoptDrf: true }), { code: 'FST_APIKEY_DRF_TABLE_MISSING', message: new RegExp(`"${KEYS}" does not exist`) })
  const failed = spawnSync('node', [cli, 'migrate', '--adopt-drf', '--keys-table', 'my_keys', '--database-url', db.url], { timeout: 30_000 })
  t.equal(failed.status, 1)
  t.match(failed.stderr.toString(), 'Cannot adopt: the table "my_keys" does not exist')
  const badName = spawnSync('node', [cli, 'migrate', '--adopt-drf', '--keys-table', 'x; drop table y', '--database-url', db.url], { timeout: 30_000 })
  t.equal(badName.status, 1)
  t.match(badName.stderr.toString(), 'expected a table name')

  // Django without drf's rotation app: no rotations table.
  await db.knex.raw((fixture.ddl as string).split('\n').filter(line => !line.includes(ROTATIONS)).join('\n'))
  await db.knex.raw(fixture.seed_sql)
  await migrate(db.knex, { rotations: 'api_key_rotations' }, { adoptDrf: true })
  t.ok(await db.knex.schema.hasColumn('api_key_rotations', 'outcome'), 'the rotations table is the plugin\'s own')
  const app = await drfApp(t, db.knex, { tables: { ...drfTables, rotations: 'api_key_rotations' }, rotationFernetSecret: ROTATION_FERNET_SECRET, isEntityActive: undefined })
  await expectOutcome(t, app, caseNamed('active_no_per_key_secret').authorization, caseNamed('active_no_per_key_secret').expected.rotation_off, 'drf key')
  await app.keyring.rotate()
  t.equal(app.keyring.phase, 'transition', 'rotations work on the made table')
  await app.close()
  await rollbackAdoption(db.knex, { rotations: 'api_key_rotations' })
  t.notOk(await db.knex.schema.hasTable('api_key_rotations'), 'the rotations table adoption made is dropped')
  t.notOk(await db.knex.schema.hasColumn(KEYS, 'metadata'), 'and the keys table is drf\'s again')
  t.ok(await db.knex.schema.hasTable(KEYS))
})

test('drf keys: every fixture case through HTTP, with FERNET_SECRET alone (drf with no rotation)', async t => {
  const db = await adoptedDatabase(t, 'adopt_off')
  const app = await drfApp(t, db.knex)
  t.equal(app.keyring.phase, 'idle')
  await checkEveryCase(t, app, 'rotation_off')

  for (const c of cases.filter(c => c.expected.has_scopes !== undefined)) {
    for (const [required, allowed] of Object.entries(c.expected.has_scopes!)) {
      const expected: Outcome = allowed
        ? c.expected.rotation_off
        : { result: 'rejected', status: 403, detail: 'This API key does not have the required scope(s) for this action.' }
      await expectOutcome(t, app, c.authorization, expected, `${c.case} on a route requiring ${required}`, scopeUrl(required))
    }
  }

  const scoped = caseNamed('scoped')
  t.same((await app.inject({ url: '/whoami', headers: { authorization: scoped.authorization } })).json().apiKey,
    { id: 14, name: 'scoped', entityId: '3', scopes: ['fruits:read', 'fruits:write'], expiresAt: '2099-06-01T12:00:00.123Z', metadata: {} },
    'request.apiKey from a Django row')
  await db.knex(KEYS).where({ id: 2 }).update({ name: null })
  const nameless = await app.apiKeys.get(2)
  t.equal(nameless?.name, '', 'a NULL name reads as empty')
  t.same([nameless?.scopes, nameless?.whitelistedIps, nameless?.blacklistedIps], [[], [], []], 'NULL lists read as empty: no restriction')

  await db.knex('auth_user').where({ id: 3 }).update({ is_active: false })
  const inactive = await app.inject({ url: '/whoami', headers: { authorization: scoped.authorization } })
  t.equal(inactive.statusCode, 403, 'a Django user with is_active false: refused')
  t.match(inactive.json(), { code: 'FST_APIKEY_ENTITY_INACTIVE', message: 'Entity is not active.' })
})

test('drf keys: every fixture case through HTTP while a drf rotation row is in progress', async t => {
  const db = await adoptedDatabase(t, 'adopt_on')
  const { active } = fixture.rotation_rows
  await insertDjangoRotation(db.knex, { is_rotation_enabled: active.is_rotation_enabled, started: active.started, ended: active.ended })
  const app = await drfApp(t, db.knex, { rotationFernetSecret: ROTATION_FERNET_SECRET })
  const status = await app.keyring.status()
  t.equal(status.phase, 'transition', 'an enabled drf row whose end is ahead is a transition')
  t.equal(status.encryptingFingerprint, fingerprint(ROTATION_FERNET_SECRET), 'new keys are made under ROTATION_FERNET_SECRET, as drf\'s MultiFernet does')
  t.same(status.acceptedFingerprints, [fingerprint(ROTATION_FERNET_SECRET), fingerprint(FERNET_SECRET)])
  t.match(status.rotation, { fromFingerprint: null, toFingerprint: null, endsAt: new Date(active.ended) })
  await checkEveryCase(t, app, 'rotation_on')
  const created = await app.apiKeys.create({ entityId: 1 })
  t.ok(underSecret(created.key, ROTATION_FERNET_SECRET) && !underSecret(created.key, FERNET_SECRET), 'a key made now is under ROTATION_FERNET_SECRET')
})

test('drf rotation rows: stopped and ended ones are not transitions', async t => {
  const { stopped, ended_in_the_past: endedInThePast } = fixture.rotation_rows
  for (const [label, row] of Object.entries({ stopped, endedInThePast })) {
    const db = await adoptedDatabase(t, `adopt_${label}`)
    await insertDjangoRotation(db.knex, { is_rotation_enabled: row.is_rotation_enabled, started: row.started, ended: row.ended })
    const app = await drfApp(t, db.knex)
    t.equal(app.keyring.phase, 'idle', `${label}: idle`)
    t.equal((await app.keyring.status()).encryptingFingerprint, fingerprint(FERNET_SECRET))
    const rotated = caseNamed('made_under_rotation_secret')
    await expectOutcome(t, app, rotated.authorization, rotated.expected.rotation_off, `${label}: a key under ROTATION_FERNET_SECRET, as drf with rotation off`)
  }
})

test('rotation rows that Django writes after adoption are honoured, and the plugin can stop them', async t => {
  const db = await adoptedDatabase(t, 'adopt_django_rows')
  const app = await drfApp(t, db.knex, { rotationFernetSecret: ROTATION_FERNET_SECRET, syncInterval: 100 })
  t.equal(app.keyring.phase, 'staged', 'no rotation yet: FERNET_SECRET encrypts, ROTATION_FERNET_SECRET is staged')
  const before = await app.apiKeys.create({ entityId: 1 })
  t.ok(underSecret(before.key, FERNET_SECRET) && !underSecret(before.key, ROTATION_FERNET_SECRET))

  // `python manage.py rotation`: Rotation(is_rotation_enabled=True, ended=now + ROTATION_PERIOD); the plugin's columns stay as defaulted.
  const djangoRow = await insertDjangoRotation(db.knex, { is_rotation_enabled: true, started: db.knex.raw('now()'), ended: db.knex.raw('now() + interval \'7 days\'') })
  await waitFor(t, () => app.keyring.phase === 'transition', 'the periodic re-read finds Django\'s rotation')
  t.match(await app.keyring.status(), { encryptingFingerprint: fingerprint(ROTATION_FERNET_SECRET), rotation: { id: djangoRow, fromFingerprint: null, toFingerprint: null } })
  const during = await app.apiKeys.create({ entityId: 1 })
  t.ok(underSecret(during.key, ROTATION_FERNET_SECRET) && !underSecret(during.key, FERNET_SECRET), 'new keys under ROTATION_FERNET_SECRET')
  for (const [label, key] of [['made before', before.key], ['made during', during.key], ['drf key under ROTATION', caseNamed('made_under_rotation_secret').key],
    ['drf key under FERNET', caseNamed('active_per_key_secret').key]]) {
    t.equal((await app.inject({ url: '/whoami', headers: { authorization: `Api-Key ${key}` } })).statusCode, 200, `${label}: accepted`)
  }
  await t.rejects(app.keyring.rotate(), { code: 'FST_APIKEY_ROTATION_IN_PROGRESS' }, 'the plugin does not start a second rotation over Django\'s')
  t.same(await db.knex(ROTATIONS).where({ id: djangoRow }).first('outcome'), { outcome: null }, 'the plugin left Django\'s row as it was')

  // `python manage.py rotation --stop`: is_rotation_enabled=False, ended=now on the latest enabled row.
  await db.knex(ROTATIONS).where({ id: djangoRow }).update({ is_rotation_enabled: false, ended: db.knex.raw('now()') })
  await waitFor(t, () => app.keyring.phase !== 'transition', 'Django\'s stop ends the transition')
  t.equal((await app.keyring.status()).encryptingFingerprint, fingerprint(FERNET_SECRET), 'back to FERNET_SECRET')

  // A rotation Django started, stopped by the plugin as `manage.py rotation --stop` would stop it.
  const second = await insertDjangoRotation(db.knex, { is_rotation_enabled: true, started: db.knex.raw('now()'), ended: db.knex.raw('now() + interval \'7 days\'') })
  await app.keyring.refresh()
  t.equal(app.keyring.phase, 'transition')
  const stopped = await app.keyring.stopRotation()
  t.not(stopped.phase, 'transition', 'stopped')
  t.match(await db.knex(ROTATIONS).where({ id: second }).first('is_rotation_enabled', 'outcome'), { is_rotation_enabled: false, outcome: 'stopped' },
    'Django reads the row as stopped: is_rotation_enabled is false')

  // A row with no end (Django's model allows it): drf keeps the rotation on until it is stopped.
  const open = await insertDjangoRotation(db.knex, { is_rotation_enabled: true, started: db.knex.raw('now()'), ended: null })
  await app.keyring.refresh()
  t.equal(app.keyring.phase, 'transition', 'an enabled row without an end is a transition')
  await app.keyring.stopRotation()
  t.match(await db.knex(ROTATIONS).where({ id: open }).first('is_rotation_enabled'), { is_rotation_enabled: false })

  // The plugin's own rotation on drf's table is one Django reads as on, and Django's inserts never collide with its index.
  const ours = await app.keyring.rotate()
  t.equal(ours.phase, 'transition')
  t.match(await db.knex(ROTATIONS).where({ id: ours.rotation!.id }).first(), { is_rotation_enabled: true, outcome: 'running', from_fingerprint: fingerprint(FERNET_SECRET) })
  await insertDjangoRotation(db.knex, { is_rotation_enabled: true, started: db.knex.raw('now()'), ended: db.knex.raw('now() + interval \'7 days\'') })
  t.pass('Django inserted a rotation row next to the plugin\'s running one')
})

test('keys the plugin creates on drf\'s table are rows Django reads and keys drf authenticates', async t => {
  const db = await adoptedDatabase(t, 'adopt_create')
  const app = await drfApp(t, db.knex, { rotationFernetSecret: ROTATION_FERNET_SECRET })
  const plain = await drfApp(t, db.knex, { perKeySecret: false })
  const withSecret = await app.apiKeys.create({ entityId: 1, name: 'from fastify', scopes: ['fruits:read'], whitelistedIps: ['127.0.0.0/8'] })
  const withoutSecret = await plain.apiKeys.create({ entityId: '2' })
  t.equal(withSecret.record.entityId, '1')

  const rows = await db.knex(KEYS).whereIn('id', [withSecret.record.id, withoutSecret.record.id]).orderBy('id')
    .select('id', 'name', 'expiry_date', 'revoked', 'created', 'entity_id', 'blacklisted_ips', 'whitelisted_ips', 'scopes', 'hashed_secret')
  t.match(rows[0], { name: 'from fastify', revoked: false, entity_id: 1, whitelisted_ips: ['127.0.0.0/8'], blacklisted_ips: [], scopes: ['fruits:read'], hashed_secret: /^[0-9a-f]{64}$/ })
  t.match(rows[1], { name: '', revoked: false, entity_id: 2, scopes: [], hashed_secret: '' }, 'no per-key secret: hashed_secret is \'\' as drf writes it')
  for (const row of rows) t.ok(Math.abs(new Date(row.created).getTime() - Date.now()) < 60_000, 'created is set, as Django\'s auto_now would')

  const payload = new Keyring([FERNET_SECRET]).decrypt(withSecret.key)
  t.same(Object.keys(payload), ['_pk', '_exp', '_secret'], 'drf\'s payload: _pk, _exp, _secret')
  t.ok(Number.isInteger(payload._pk) && typeof payload._exp === 'number' && /^[A-Za-z0-9_-]{43}$/.test(payload._secret as string),
    'an integer _pk, a numeric _exp and a token_urlsafe(32)-shaped secret')

  const python = spawnSync('python3', ['-c', 'import cryptography.fernet'])
  if (python.status !== 0) {
    t.pass('skipped the Python check: python3 with the cryptography package is not installed')
    return
  }
  const djangoRows = (await db.knex(KEYS).select('id', 'entity_id', 'revoked', 'hashed_secret', 'blacklisted_ips', 'whitelisted_ips'))
    .map(row => ({ ...row, id: Number(row.id) }))
  const drfSays = (rotation: boolean, keys: string[]) => {
    const input = JSON.stringify({ rotation, rows: djangoRows, authorizations: keys.map(key => `Api-Key ${key}`) })
    const result = spawnSync('python3', [join(fixtureDir, 'drf_authenticate.py')], { input, timeout: 30_000 })
    t.equal(result.status, 0, result.stderr.toString())
    return JSON.parse(result.stdout.toString())
  }
  t.same(drfSays(false, [withSecret.key, withoutSecret.key]), [
    { result: 'authenticated', entity_id: 1, api_key_id: withSecret.record.id },
    { result: 'authenticated', entity_id: 2, api_key_id: withoutSecret.record.id }
  ], 'drf-simple-apikey authenticates both keys')
  const wrongSecret = new Keyring([FERNET_SECRET]).encrypt({ ...payload, _secret: 'x'.repeat(43) })
  t.same(drfSays(false, [wrongSecret]), [{ result: 'rejected', status: 403, detail: 'Invalid API Key.' }], 'and checks the per-key secret the plugin stored')

  await app.keyring.rotate()
  const duringRotation = await app.apiKeys.create({ entityId: 3 })
  const rowsNow = await db.knex(KEYS).select('id', 'entity_id', 'revoked', 'hashed_secret', 'blacklisted_ips', 'whitelisted_ips')
  djangoRows.splice(0, djangoRows.length, ...rowsNow.map(row => ({ ...row, id: Number(row.id) })))
  t.same(drfSays(true, [duringRotation.key]), [{ result: 'authenticated', entity_id: 3, api_key_id: duringRotation.record.id }],
    'a key made during the plugin\'s rotation works in drf while its rotation is on')
})

test('entity ids on drf\'s integer entity_id: clear errors, never a 500', async t => {
  const db = await adoptedDatabase(t, 'adopt_entity')
  const app = await drfApp(t, db.knex)
  for (const entityId of ['alice', 42, '99999999999']) {
    await t.rejects(app.apiKeys.create({ entityId }), { code: 'FST_APIKEY_INVALID_INPUT', statusCode: 400, message: /^Invalid entityId: / }, `entityId ${entityId}`)
  }
  const admin = await app.apiKeys.create({ entityId: 1, scopes: ['apikeys:admin'] })
  const headers = { authorization: `Api-Key ${admin.key}` }
  const refused = await app.inject({ method: 'POST', url: '/apikeys', headers, payload: { entityId: 'alice' } })
  t.equal(refused.statusCode, 400)
  t.match(refused.json(), { code: 'FST_APIKEY_INVALID_INPUT', message: /entityId/ })
  const created = await app.inject({ method: 'POST', url: '/apikeys', headers, payload: { entityId: '3', name: 'over HTTP' } })
  t.equal(created.statusCode, 201)
  t.equal((await db.knex(KEYS).where({ id: created.json().record.id }).first('entity_id')).entity_id, 3)

  t.same(await app.apiKeys.list({ entityId: 'alice' }), { items: [], total: 0 }, 'a name owns no keys on an integer column')
  const listed = await app.inject({ url: '/apikeys?entityId=alice', headers })
  t.equal(listed.statusCode, 200)
  t.same(listed.json(), { items: [], total: 0 })
  const ofUser3 = await app.apiKeys.list({ entityId: '3' })
  t.same(ofUser3.items.map(item => item.id).sort((a, b) => a - b), [14, 15, 16, created.json().record.id], 'Django\'s keys and the new one of user 3')
})

test('a drf table with integer ids (before drf\'s 0003_alter_apikey_id): large ids are unknown, not errors', async t => {
  const db = await adoptedDatabase(t, 'adopt_int', { integerIds: true })
  const app = await drfApp(t, db.knex)
  const c = caseNamed('active_per_key_secret')
  await expectOutcome(t, app, c.authorization, c.expected.rotation_off, 'drf key on an integer id')
  const beyond = 2 ** 31
  const token = new Keyring([FERNET_SECRET]).encrypt({ _pk: beyond, _exp: 4102444800.0 })
  await expectOutcome(t, app, `Api-Key ${token}`, { result: 'rejected', status: 403, detail: 'No entity matching this api key.' }, 'an id beyond integer')
  t.equal(await app.apiKeys.get(beyond), null)
  await t.rejects(app.apiKeys.revoke(beyond), { code: 'FST_APIKEY_UNKNOWN_KEY', statusCode: 404 })
  t.same(await app.apiKeys.revokeMany([2, beyond]), [2])
  await t.rejects(app.apiKeys.roll(beyond), { code: 'FST_APIKEY_UNKNOWN_KEY' })
  const created = await app.apiKeys.create({ entityId: 1 })
  t.equal(created.record.id, 19, 'the next id of Django\'s identity sequence')
})

test('usage of drf keys is counted in the usage table, and Django can still delete a key', async t => {
  const db = await adoptedDatabase(t, 'adopt_usage')
  const app = await drfApp(t, db.knex, { usage: { flushInterval: '1h' } })
  const c = caseNamed('active_no_per_key_secret')
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ url: '/whoami', headers: { authorization: c.authorization } })).statusCode, 200)
  t.equal((await app.inject({ url: '/whoami', headers: { authorization: caseNamed('revoked').authorization } })).statusCode, 401)
  await app.apiKeys.flushUsage()
  t.match(await app.apiKeys.usage(2), { total: 3, routes: [{ method: 'GET', route: '/whoami', count: 3 }] })
  t.equal((await app.apiKeys.usage(5)).total, 0, 'refused requests are not counted')
  // Django's APIKey.delete(): a plain DELETE; the usage rows go with it.
  await db.knex(KEYS).where({ id: 2 }).delete()
  t.same(await db.knex('api_key_usage').where({ key_id: 2 }), [])
})

test('the CLI on an adopted database: keys commands take drf\'s table names', async t => {
  const db = await adoptedDatabase(t, 'adopt_cli')
  const tableFlags = ['--keys-table', KEYS, '--rotations-table', ROTATIONS, '--database-url', db.url]
  const env = { ...process.env, FERNET_SECRET, DATABASE_URL: '' }
  const listed = await run('node', [cli, 'keys', 'list', '--json', ...tableFlags], { env, timeout: 30_000 })
  t.equal(JSON.parse(listed.stdout).total, cases.filter(c => !c.deleted).length, 'Django\'s keys are listed')
  const created = await run('node', [cli, 'keys', 'create', '--entity', '2', '--json', ...tableFlags], { env, timeout: 30_000 })
  const { key, record } = JSON.parse(created.stdout)
  t.equal((await db.knex(KEYS).where({ id: record.id }).first('entity_id')).entity_id, 2, 'made on drf\'s table for user 2')
  t.ok(underSecret(key, FERNET_SECRET))
  const refused = spawnSync('node', [cli, 'keys', 'create', '--entity', 'alice', ...tableFlags], { env, timeout: 30_000 })
  t.equal(refused.status, 1)
  t.match(refused.stderr.toString(), /^simple-apikey: Invalid entityId: /)
})
