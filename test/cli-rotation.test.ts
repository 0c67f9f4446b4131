import { test } from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import { waitFor } from './helpers/rotation'
import { fingerprint } from '../index'

// The real binary, as `npm test` builds it before running the tests.
const cli = join(__dirname, '..', 'dist', 'lib', 'cli.js')

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function run (args: string[], env: Record<string, string | undefined>): Promise<Run> {
  const base = { ...process.env }
  for (const name of ['DATABASE_URL', 'FERNET_SECRET', 'ROTATION_FERNET_SECRET']) delete base[name]
  return new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { env: { ...base, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

const secretsIn = (output: string) => [secretA, secretB].filter(secret => output.includes(secret))

test('simple-apikey rotation: start, status and stop, followed by a running app through NOTIFY', { skip: existsSync(cli) ? false : 'run `npm run build` first' }, async t => {
  const db = await createTestDatabase(t, 'cli_rotation')
  const env = { DATABASE_URL: db.url, FERNET_SECRET: secretA, ROTATION_FERNET_SECRET: secretB }
  const outputs: Run[] = []
  const cmd = async (...args: string[]) => {
    const result = await run(args, env)
    outputs.push(result)
    return result
  }

  const unmigrated = await cmd('rotation')
  t.equal(unmigrated.code, 1, 'before the migration: fails')
  t.match(unmigrated.stderr, /^simple-apikey: .*does not exist.*simple-apikey migrate.*\n$/, 'with one line that says what to run')
  t.equal(unmigrated.stderr.split('\n').length, 2)

  t.equal((await cmd('migrate')).code, 0)
  const app = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, migrate: false, syncInterval: 60_000 })
  const { key } = await app.apiKeys.create({ entityId: 'a' })

  const staged = await cmd('rotation', '--status')
  t.equal(staged.code, 0)
  t.match(JSON.parse(staged.stdout), { phase: 'staged', rotation: null, encryptingFingerprint: fingerprint(secretA), stagedFingerprint: fingerprint(secretB), keysToRetire: 1 })

  const started = await cmd('rotation')
  const exitedAt = performance.now()
  t.equal(started.code, 0)
  const [, endsAt] = /^Successfully started rotation ending at (\S+)\n$/.exec(started.stdout) ?? []
  t.ok(endsAt, `prints the end: ${started.stdout.trim()}`)
  t.ok(Math.abs(new Date(endsAt).getTime() - (Date.now() + 7 * 24 * 3600_000)) < 60_000, 'seven days from now by default')
  t.equal(started.stderr, '')
  const followed = await waitFor(() => app.keyring.phase === 'transition', 1000)
  t.ok(followed <= 1000, `a running app encrypts under B ${Math.round(performance.now() - exitedAt)} ms after the command exits`)
  t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200)

  const twice = await cmd('rotation')
  t.equal(twice.code, 1)
  t.equal(twice.stderr, 'simple-apikey: A rotation is already in progress.\n')

  const inTransition = JSON.parse((await cmd('rotation', '--status')).stdout)
  t.match(inTransition, { phase: 'transition', encryptingFingerprint: fingerprint(secretB), rotation: { endsAt }, keysToRetire: 1 })

  const stopped = await cmd('rotation', '--stop')
  t.equal(stopped.code, 0)
  t.equal(stopped.stdout, 'Successfully stopped rotation\n')
  t.ok(await waitFor(() => app.keyring.phase === 'staged', 1000) <= 1000, 'the app follows the stop')

  const nothing = await cmd('rotation', '--stop')
  t.equal(nothing.code, 1, 'nothing to stop: non-zero')
  t.equal(nothing.stderr, 'simple-apikey: No active rotation found to stop\n', 'in drf-simple-apikey\'s words, one line')
  t.equal(nothing.stdout, '')

  const short = await cmd('rotation', '--period', '90m')
  t.equal(short.code, 0)
  const [, shortEnd] = /ending at (\S+)/.exec(short.stdout) ?? []
  t.ok(Math.abs(new Date(shortEnd).getTime() - (Date.now() + 90 * 60_000)) < 60_000, '--period sets the transition\'s length')
  const badPeriod = await cmd('rotation', '--period', 'soon')
  t.not(badPeriod.code, 0)
  t.match(badPeriod.stderr, /period/)
  const both = await cmd('rotation', '--stop', '--status')
  t.not(both.code, 0, '--stop and --status together are refused')
  t.equal(JSON.parse((await cmd('rotation', '--status')).stdout).phase, 'transition', 'and did nothing')

  t.same(outputs.flatMap(output => secretsIn(output.stdout + output.stderr)), [], 'no secret in any output')
})

test('simple-apikey rotation: a missing or bad secret exits non-zero with one line that never holds a secret', { skip: existsSync(cli) ? false : 'run `npm run build` first' }, async t => {
  const db = await createTestDatabase(t, 'cli_rotation_secrets')
  const DATABASE_URL = db.url
  t.equal((await run(['migrate'], { DATABASE_URL })).code, 0)
  const sensitive = 'this-is-not-a-fernet-secret-but-must-stay-private'

  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['ROTATION_FERNET_SECRET missing', { FERNET_SECRET: secretA }, /^simple-apikey: Cannot start a rotation: ROTATION_FERNET_SECRET is not set\.\n$/],
    ['FERNET_SECRET missing', { ROTATION_FERNET_SECRET: secretB }, /^simple-apikey: FERNET_SECRET is required/],
    ['ROTATION_FERNET_SECRET malformed', { FERNET_SECRET: secretA, ROTATION_FERNET_SECRET: sensitive }, /^simple-apikey: ROTATION_FERNET_SECRET must be the url-safe base64 encoding of exactly 32 bytes\.\n$/],
    ['FERNET_SECRET malformed', { FERNET_SECRET: sensitive, ROTATION_FERNET_SECRET: secretB }, /^simple-apikey: FERNET_SECRET must be/],
    ['the same secret twice', { FERNET_SECRET: secretA, ROTATION_FERNET_SECRET: secretA }, /^simple-apikey: ROTATION_FERNET_SECRET must differ from FERNET_SECRET\.\n$/]
  ]
  for (const [label, secrets, reason] of cases) {
    const result = await run(['rotation'], { DATABASE_URL, ...secrets })
    t.equal(result.code, 1, `${label}: exits 1`)
    t.match(result.stderr, reason, `${label}: says why`)
    t.equal(result.stderr.split('\n').length, 2, `${label}: in one line`)
    t.equal(result.stdout, '')
    const output = result.stdout + result.stderr
    t.notOk(output.includes(sensitive) || secretsIn(output).length > 0, `${label}: no secret in the output`)
  }
  t.equal(await db.knex('api_key_rotations').count({ n: '*' }).then(rows => Number(rows[0].n)), 0, 'no rotation was started')

  const status = await run(['rotation', '--status'], { DATABASE_URL, FERNET_SECRET: secretA })
  t.equal(status.code, 0, 'the status needs only FERNET_SECRET')
  t.match(JSON.parse(status.stdout), { phase: 'idle', stagedFingerprint: null })
})
