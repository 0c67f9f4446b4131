import { test, type Test } from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createTestDatabase, type TestDatabase } from './helpers/database'
import { buildApp, auth, secretA } from './helpers/app'
import { Keyring, fernet } from '../index'

const CLI = join(__dirname, '..', 'dist', 'lib', 'cli.js')

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** Everything the binary printed in this file, to check at the end that no secret was among it. */
const printed: Array<{ args: string[], out: string }> = []

function run (args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  return new Promise(resolve => {
    const childEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, FERNET_SECRET: secretA, ...env }
    for (const [name, value] of Object.entries(childEnv)) if (value === undefined) delete childEnv[name]
    execFile(process.execPath, [CLI, ...args], { env: childEnv, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
      if (err?.killed === true) stderr += `[killed by the test after 60 s: ${err.signal}]`
      printed.push({ args, out: stdout + stderr })
      resolve({ code, stdout, stderr })
    })
  })
}

/** Runs a few invocations at a time: each is a whole Node process, and a busy machine should not time them out. */
async function runAll<T> (items: T[], start: (item: T) => Promise<Run>): Promise<Run[]> {
  const results: Run[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await start(items[index])
    }
  }
  await Promise.all([worker(), worker(), worker()])
  return results
}

function cli (db: TestDatabase) {
  return (args: string[], env: Record<string, string | undefined> = {}) => run(args, { DATABASE_URL: db.url, ...env })
}

/** A clear failure: non-zero, nothing on stdout, one line on stderr, no stack trace. */
function failsClearly (t: Test, result: Run, message: RegExp, what: string): void {
  t.not(result.code, 0, `${what}: a non-zero exit`)
  t.equal(result.stdout, '', `${what}: nothing on stdout`)
  t.match(result.stderr, message, `${what}: says what is wrong`)
  t.equal(result.stderr.trimEnd().split('\n').length, 1, `${what}: one line`)
  t.notMatch(result.stderr, /\n\s+at |Error: /, `${what}: no stack trace`)
}

test('the binary is built', async t => {
  t.ok(existsSync(CLI), `${CLI} exists (run \`npm run build\` first; \`npm test\` does)`)
})

test('generate-secret prints a valid Fernet secret, a new one each time', async t => {
  const first = await run(['generate-secret'], { FERNET_SECRET: undefined })
  const second = await run(['generate-secret'], { FERNET_SECRET: undefined })
  t.equal(first.code, 0)
  t.equal(first.stderr, '')
  t.match(first.stdout, /^[A-Za-z0-9_-]{43}=\n$/, 'url-safe base64 of 32 bytes, and a newline')
  const secret = first.stdout.trim()
  t.ok(fernet.isValidSecret(secret))
  t.equal(Buffer.from(secret, 'base64url').length, 32)
  t.not(secret, second.stdout.trim())
  const keyring = new Keyring([secret])
  t.same(keyring.decrypt(keyring.encrypt({ _pk: 1, _exp: 4e9 })), { _pk: 1, _exp: 4e9 }, 'usable as FERNET_SECRET')
})

test('migrate creates the tables and is idempotent; commands before it say to run it', async t => {
  const db = await createTestDatabase(t, 'cli_migrate')
  const simpleApiKey = cli(db)
  const tables = async () => (await db.knex('information_schema.tables').where({ table_schema: db.schema }).pluck('table_name')).sort()

  failsClearly(t, await simpleApiKey(['keys', 'list']), /^simple-apikey: The table "api_keys" does not exist: run `simple-apikey migrate`/, 'keys list before migrate')
  t.same(await tables(), [], 'nothing was created by the refused command')

  const first = await simpleApiKey(['migrate'])
  t.equal(first.code, 0)
  t.equal(first.stdout, 'Migrations are up to date.\n')
  t.same(await tables(), ['api_key_rotations', 'api_key_usage', 'api_keys', 'simple_apikey_migrations', 'simple_apikey_migrations_lock'])
  const applied = await db.knex('simple_apikey_migrations').pluck('name')

  const second = await simpleApiKey(['migrate'])
  t.equal(second.code, 0, 'a second run succeeds')
  t.equal(second.stdout, 'Migrations are up to date.\n')
  t.same(await db.knex('simple_apikey_migrations').pluck('name'), applied, 'and applies nothing again')

  const listed = await simpleApiKey(['keys', 'list'])
  t.equal(listed.code, 0)
  t.equal(listed.stdout, 'No API keys.\n')
})

test('keys create, list, revoke and roll against real PostgreSQL, checked by an app', async t => {
  const db = await createTestDatabase(t, 'cli_keys')
  const simpleApiKey = cli(db)
  t.equal((await simpleApiKey(['migrate'])).code, 0)
  const app = await buildApp(t, db.connect(), { migrate: false, cache: false })
  const status = async (key: string, url = '/fruits') => {
    const res = await app.inject({ url, headers: auth(key) })
    return res.statusCode === 200 ? 200 : `${res.statusCode} ${res.json().code}`
  }

  const created = await simpleApiKey(['keys', 'create', '--name', 'billing export', '--entity', 'customer-42', '--scopes', 'fruits:read,fruits:write',
    '--expires', '2031-06-30T12:00:00Z', '--allow-ip', '127.0.0.1,::1', '--deny-ip', '10.0.0.0/8'])
  t.equal(created.code, 0)
  t.match(created.stdout, /^gAAAAA[A-Za-z0-9_-]+=*\n$/, 'stdout is the key alone, for `KEY=$(simple-apikey keys create ...)`')
  const key = created.stdout.trim()
  const { _pk: id } = app.keyring.decrypt(key) as { _pk: number }
  t.equal(created.stderr, `Created key ${id}. Store it somewhere safe: it cannot be shown again.\n`)
  t.equal(await status(key), 200, 'the printed key works against the app')
  t.match(await app.apiKeys.get(id), {
    name: 'billing export',
    entityId: 'customer-42',
    scopes: ['fruits:read', 'fruits:write'],
    expiresAt: new Date('2031-06-30T12:00:00Z'),
    whitelistedIps: ['127.0.0.1', '::1'],
    blacklistedIps: ['10.0.0.0/8'],
    revoked: false
  })

  const asJson = await simpleApiKey(['keys', 'create', '--entity', 'svc', '--json'])
  t.equal(asJson.code, 0)
  const issued = JSON.parse(asJson.stdout)
  t.same(Object.keys(issued), ['key', 'record'])
  t.equal(issued.record.entityId, 'svc')
  t.same(issued.record.scopes, [])
  t.equal(await status(issued.key, '/whoami'), 200)

  const expired = await app.apiKeys.create({ name: 'old', entityId: 'svc', expiresAt: new Date(Date.now() - 60_000) })

  await app.apiKeys.flushUsage()
  const listed = await simpleApiKey(['keys', 'list'])
  t.equal(listed.code, 0)
  const lines = listed.stdout.trimEnd().split('\n')
  t.match(lines[0], /^id\s+name\s+entity\s+status\s+expires\s+scopes\s+last used$/, 'a header row')
  t.equal(lines.length, 4)
  t.match(lines[1], new RegExp(`^${expired.record.id}\\s+old\\s+svc\\s+expired\\s`))
  t.match(lines[1], /\s-$/, 'never used: -')
  t.match(lines[2], new RegExp(`^${issued.record.id}\\s+svc\\s+active\\s+\\S+\\s+\\*\\s+\\d{4}-`), 'unscoped: *')
  t.match(lines[3], new RegExp(`^${id}\\s+billing export\\s+customer-42\\s+active\\s+2031-06-30T12:00:00.000Z\\s+fruits:read,fruits:write\\s+\\d{4}-`),
    'the key used against the app shows when')
  const header = lines[0]
  t.same(lines.slice(1).map(line => line.slice(header.indexOf('status')).split(' ')[0]), ['expired', 'active', 'active'], 'columns line up')

  const json = await simpleApiKey(['keys', 'list', '--json'])
  const page = JSON.parse(json.stdout)
  t.equal(page.total, 3)
  t.same(page.items.map((item: { id: number }) => item.id), [expired.record.id, issued.record.id, id])
  t.same(JSON.parse((await simpleApiKey(['keys', 'list', '--json', '--entity', 'customer-42'])).stdout).items.map((item: { id: number }) => item.id), [id])
  t.same(JSON.parse((await simpleApiKey(['keys', 'list', '--json', '--active'])).stdout).items.map((item: { id: number }) => item.id), [issued.record.id, id])
  t.same(JSON.parse((await simpleApiKey(['keys', 'list', '--json', '--limit', '1'])).stdout), { items: [page.items[0]], total: 3 })

  const rolled = await simpleApiKey(['keys', 'roll', String(id), '--grace', '7d'])
  t.equal(rolled.code, 0)
  t.match(rolled.stdout, /^gAAAAA[A-Za-z0-9_-]+=*\n$/)
  t.equal(rolled.stderr, `Rolled key ${id}. Store it somewhere safe: it cannot be shown again.\n`)
  const second = rolled.stdout.trim()
  t.not(second, key)
  t.equal(await status(second), 200, 'the rolled value works')
  t.equal(await status(key), 200, 'the old value works for the 7 days of grace')
  const graceEnds = (await db.knex('api_keys').where({ id }).first()).previous_secret_expires
  t.ok(Math.abs(new Date(graceEnds).getTime() - (Date.now() + 7 * 24 * 3600_000)) < 60_000, 'the grace period is 7 days')
  const third = (await simpleApiKey(['keys', 'roll', String(id)])).stdout.trim()
  t.equal(await status(third), 200)
  t.equal(await status(second), '401 FST_APIKEY_INVALID', 'without --grace the previous value stops at once')

  const revoked = await simpleApiKey(['keys', 'revoke', String(id), String(issued.record.id)])
  t.equal(revoked.code, 0)
  t.equal(revoked.stdout, `Revoked ${id}, ${issued.record.id}\n`)
  t.equal(await status(third), '401 FST_APIKEY_REVOKED')
  t.equal(await status(issued.key, '/whoami'), '401 FST_APIKEY_REVOKED')
  t.same(JSON.parse((await simpleApiKey(['keys', 'list', '--json', '--revoked'])).stdout).items.map((item: { id: number }) => item.id), [issued.record.id, id])

  failsClearly(t, await simpleApiKey(['keys', 'roll', String(id)]), new RegExp(`^simple-apikey: API key ${id} is revoked: a revoked key cannot be rolled; create a new one\\.\n$`), 'roll of a revoked key')
  const missing = await simpleApiKey(['keys', 'revoke', '424242'])
  failsClearly(t, missing, /^simple-apikey: no API key with id 424242\n$/, 'revoke of an unknown id')
  const rollMissing = await simpleApiKey(['keys', 'roll', '424242'])
  failsClearly(t, rollMissing, /^simple-apikey: No API key with id 424242\.\n$/, 'roll of an unknown id')

  for (const { args, out } of printed) {
    const issuing = args[0] === 'keys' && (args[1] === 'create' || args[1] === 'roll')
    for (const secret of [secretA, ...(issuing ? [] : [key, second, third, issued.key])]) {
      t.notOk(out.includes(secret), `simple-apikey ${args.join(' ')}: no key and no Fernet secret in the output`)
    }
  }
})

test('bad arguments: one clear line, a non-zero exit, nothing done', async t => {
  const db = await createTestDatabase(t, 'cli_bad')
  const simpleApiKey = cli(db)
  t.equal((await simpleApiKey(['migrate'])).code, 0)
  const key = 'gAAAAABrEbs-t_JtJNPPdBIwN3jO6Hah05Qy2ho_yRRwNV79espy6pTH8lljN0PhMGtevhY0g8qMoPiGVYNGpbG7rZ8HOEvlLKL69yxbdcbcmq1X5cwybW50upm4uFFi0FOoYzZZjfgMTQtL'
  const cases: Array<[string[], RegExp]> = [
    [['keys', 'revoke', 'abc'], /^simple-apikey: invalid key id: expected a positive whole number/],
    [['keys', 'revoke', '1', '-2'], /unknown option '-2'|invalid key id/],
    [['keys', 'roll', '0'], /^simple-apikey: invalid key id: expected a positive whole number/],
    [['keys', 'roll', key], /^simple-apikey: invalid key id: expected a positive whole number/],
    [['keys', 'roll', '1', '--grace', 'soon'], /^error: option '--grace <duration>' argument 'soon' is invalid\. expected milliseconds or a duration such as 7d/],
    [['keys', 'create', '--name', 'x'], /^error: required option '--entity <id>' not specified/],
    [['keys', 'create', '--entity', 'e', '--expires', 'next week'], /^simple-apikey: Invalid expiresAt: a date/],
    [['keys', 'create', '--entity', 'e', '--allow-ip', '300.1.1.1'], /^simple-apikey: Invalid whitelistedIps: a list of IP addresses or CIDR ranges/],
    [['keys', 'create', '--entity', 'e', '--deny-ip', '10.0.0.0/33'], /^simple-apikey: Invalid blacklistedIps: a list of IP addresses or CIDR ranges/],
    [['keys', 'list', '--limit', '0'], /^error: option '--limit <n>' argument '0' is invalid\. expected a whole number from 1 to 1000/],
    [['keys', 'list', '--log-level', 'loud'], /^error: option '--log-level <level>' argument 'loud' is invalid/],
    [['keys', 'frobnicate'], /^error: unknown command 'frobnicate'/],
    [['rotation', '--stop'], /^simple-apikey: No active rotation found to stop/],
    [['rotation'], /^simple-apikey: Cannot start a rotation: ROTATION_FERNET_SECRET is not set\./]
  ]
  const results = await runAll(cases, ([args]) => simpleApiKey(args))
  cases.forEach(([args, message], i) => {
    failsClearly(t, results[i], message, `simple-apikey ${args.join(' ')}`)
    t.notOk(results[i].stderr.includes(key), 'a key passed as an id is not echoed')
  })
  t.equal((await db.knex('api_keys').count({ count: '*' }))[0].count, '0', 'no refused command made a key')
  const strayComma = await simpleApiKey(['keys', 'create', '--entity', 'e', '--scopes', 'a,,b,', '--json'])
  t.same(JSON.parse(strayComma.stdout).record.scopes, ['a', 'b'], 'empty items of a comma list are dropped, not refused as empty scopes')

  failsClearly(t, await simpleApiKey(['keys', 'list'], { FERNET_SECRET: 'not-a-secret' }),
    /^simple-apikey: FERNET_SECRET must be the url-safe base64 encoding of exactly 32 bytes\.\n$/, 'a bad FERNET_SECRET, not echoed')
  failsClearly(t, await simpleApiKey(['keys', 'list'], { FERNET_SECRET: undefined }),
    /^simple-apikey: FERNET_SECRET is required: set the option or the environment variable\.\n$/, 'no FERNET_SECRET')
})

test('a database that cannot be reached: one line, non-zero, no password, no stack', async t => {
  const down = 'postgres://postgres:pa55-w0rd@127.0.0.1:1/test'
  const commands = [['migrate'], ['keys', 'list'], ['keys', 'create', '--entity', 'e'], ['keys', 'revoke', '1'], ['keys', 'roll', '1'], ['rotation', '--status']]
  const started = Date.now()
  const results = await runAll(commands, args => run(args, { DATABASE_URL: down }))
  t.ok(Date.now() - started < 60_000, 'they exit promptly, with no pool left open')
  commands.forEach((args, i) => failsClearly(t, results[i], /^simple-apikey: cannot reach the database \(ECONNREFUSED\)\n$/, `simple-apikey ${args.join(' ')}`))
  const flag = await run(['keys', 'list', '--database-url', down], { DATABASE_URL: undefined })
  failsClearly(t, flag, /^simple-apikey: cannot reach the database \(ECONNREFUSED\)\n$/, '--database-url')
  failsClearly(t, await run(['keys', 'list'], { DATABASE_URL: 'postgres://postgres:pa55-w0rd@[db' }), /^simple-apikey: DATABASE_URL is not a postgres:\/\/ URL\n$/, 'a URL that does not parse')
  failsClearly(t, await run(['migrate', '--database-url', 'mysql://root:pa55-w0rd@127.0.0.1/db']), /^simple-apikey: --database-url is not a postgres:\/\/ URL\n$/, 'another database')
  const wrongUser = await run(['keys', 'list'], { DATABASE_URL: 'postgres://nobody:pa55-w0rd@127.0.0.1:5432/test' })
  failsClearly(t, wrongUser, /^simple-apikey: (role "nobody" does not exist|password authentication failed for user "nobody")\n$/, 'a role the server refuses')
  for (const { args, out } of printed) t.notOk(out.includes('pa55-w0rd'), `simple-apikey ${args.join(' ')}: the password never printed`)
})
