import { test, type Test } from 'tap'
import { Writable } from 'node:stream'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { createTestDatabase } from './helpers/database'
import { auth, secretA, secretB } from './helpers/app'
import simpleApiKey, { type AuditEvent, type SimpleApiKeyOptions } from '../index'

const ADMIN = ['apikeys:admin']

interface LoggedAudit {
  type: string
  actor: string
  at: string
  keyId?: number
  rotationId?: number
  details?: Record<string, unknown>
}

/** An app whose pino logger writes into memory, with every onAuditEvent call kept. */
async function auditedApp (t: Test, options: SimpleApiKeyOptions) {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk, encoding, done) {
      lines.push(...chunk.toString().split('\n').filter((line: string) => line !== ''))
      done()
    }
  })
  const received: AuditEvent[] = []
  const app = Fastify({ logger: { level: 'info', stream } })
  await app.register(simpleApiKey, { fernetSecret: secretA, migrate: true, onAuditEvent: event => { received.push(event) }, ...options })
  app.get('/whoami', async request => ({ id: request.apiKey?.id }))
  await app.ready()
  t.teardown(() => app.close())
  const logged = () => lines.map(line => JSON.parse(line)).filter(entry => entry.audit !== undefined).map(entry => entry.audit as LoggedAudit)
  return { app, lines, received, logged }
}

/** The key and its per-key secret. */
function secretsOf (app: FastifyInstance, key: string): string[] {
  const payload = app.keyring.decrypt(key)
  return typeof payload._secret === 'string' ? [key, payload._secret] : [key]
}

const summary = (events: Array<{ type: string, actor: string, keyId?: number }>) => events.map(event => `${event.type} ${event.actor}${event.keyId === undefined ? '' : ` #${event.keyId}`}`)

async function until (check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

test('every change is logged and handed to onAuditEvent with its actor, and never with a key or a secret', async t => {
  const db = await createTestDatabase(t, 'audit')
  const { app, lines, received, logged } = await auditedApp(t, { knex: db.knex, rotationFernetSecret: secretB, rotationPeriod: '1s' })
  const secrets: string[] = [secretA, secretB]
  const keep = (key: string) => {
    secrets.push(...secretsOf(app, key))
    return key
  }

  const admin = await app.apiKeys.create({ name: 'console', entityId: 'ops', scopes: ADMIN })
  keep(admin.key)
  const direct = await app.apiKeys.create({ name: 'direct', entityId: 'svc' }, { actor: 'user:alice' })
  keep(direct.key)
  const adminActor = `api-key:${admin.record.id}`
  const headers = auth(admin.key)

  const created = await app.inject({ method: 'POST', url: '/apikeys/', headers, payload: { name: 'billing', entityId: 'customer-42', scopes: ['invoices:read'] } })
  const createdKey = keep(created.json().key)
  const createdId: number = created.json().record.id
  keep((await app.inject({ method: 'POST', url: `/apikeys/${createdId}/roll`, headers, payload: { gracePeriod: '1h' } })).json().key)
  t.equal((await app.inject({ method: 'POST', url: `/apikeys/${createdId}/revoke`, headers })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/apikeys/revoke', headers, payload: { ids: [direct.record.id] } })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/apikeys/rotation', headers })).statusCode, 200)
  t.equal((await app.inject({ method: 'DELETE', url: '/apikeys/rotation', headers })).statusCode, 200)

  const client = await app.apiKeys.create({ entityId: 'svc' })
  keep(client.key)
  keep((await app.inject({ method: 'POST', url: '/apikeys/reissue', headers: auth(client.key) })).json().key)
  keep((await app.apiKeys.roll(client.record.id)).key)
  keep((await app.apiKeys.reissue(admin.key)).key)
  await app.apiKeys.revoke(client.record.id)
  await app.keyring.rotate()
  await until(() => received.some(event => event.type === 'rotation.completed'), 'the rotation to complete by itself')
  t.equal(app.keyring.phase, 'completed')

  const expected = [
    `key.created app #${admin.record.id}`,
    `key.created user:alice #${direct.record.id}`,
    `key.created ${adminActor} #${createdId}`,
    `key.rolled ${adminActor} #${createdId}`,
    `key.revoked ${adminActor} #${createdId}`,
    `key.revoked ${adminActor} #${direct.record.id}`,
    `rotation.started ${adminActor}`,
    `rotation.stopped ${adminActor}`,
    `key.created app #${client.record.id}`,
    `key.reissued api-key:${client.record.id} #${client.record.id}`,
    `key.rolled app #${client.record.id}`,
    `key.reissued api-key:${admin.record.id} #${admin.record.id}`,
    `key.revoked app #${client.record.id}`,
    'rotation.started app',
    'rotation.completed system'
  ]
  t.same(summary(logged()), expected, 'the app\'s logger has every event, in order, with who did it')
  t.same(summary(received), expected, 'onAuditEvent receives the same events')

  const events = logged()
  t.same(JSON.parse(JSON.stringify(received)), events, 'the logged event is the one handed to onAuditEvent')
  t.ok(received.every(event => event.at instanceof Date && Math.abs(event.at.getTime() - Date.now()) < 60_000), 'each with its time')
  t.same(events[2].details, { name: 'billing', entityId: 'customer-42', scopes: ['invoices:read'] }, 'creation: name, entity and scopes')
  t.same(events[3].details, { gracePeriodMs: 3600_000 }, 'roll: the grace period')
  const started = events[6]
  t.same(started.details, { from: app.keyring.fingerprint(secretA), to: app.keyring.fingerprint(secretB), endsAt: started.details!.endsAt }, 'rotation: fingerprints, never secrets')
  t.equal(typeof started.rotationId, 'number')
  t.equal(events[7].rotationId, started.rotationId, 'the stop names the rotation it stopped')
  t.match(events[14], { rotationId: events[13].rotationId, details: { retired: app.keyring.fingerprint(secretA), encrypting: app.keyring.fingerprint(secretB) } })
  for (const line of lines.filter(line => line.includes('"audit"'))) t.match(JSON.parse(line), { level: 30, msg: /^fastify-simple-apikey: (key|rotation)\.[a-z]+$/ }, 'an info line')

  t.ok(secrets.length >= 16, 'the keys, per-key secrets and Fernet secrets to look for')
  const log = lines.join('\n')
  secrets.forEach((secret, i) => t.notOk(log.includes(secret), `no key or secret in the log (${i + 1} of ${secrets.length})`))
  t.notOk(JSON.stringify(received).includes(createdKey), 'nor in the events')
  for (const secret of secrets) t.notOk(JSON.stringify(received).includes(secret))
})

test('an onAuditEvent that throws or rejects does not undo the change; the failure is logged', async t => {
  const db = await createTestDatabase(t, 'audit_fail')
  let calls = 0
  const { app, logged, lines } = await auditedApp(t, {
    knex: db.knex,
    onAuditEvent: async event => {
      calls++
      if (event.type === 'key.created') throw new Error('audit store down')
      return Promise.reject(new Error('audit store still down'))
    }
  })
  const { key, record } = await app.apiKeys.create({ entityId: 'e' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200, 'the key exists and works')
  const revoked = await app.apiKeys.revoke(record.id)
  t.equal(revoked.revoked, true, 'the revoke happened')
  await until(() => lines.filter(line => line.includes('onAuditEvent failed')).length === 2, 'both failures to be logged')
  t.equal(calls, 2)
  t.same(summary(logged()), [`key.created app #${record.id}`, `key.revoked app #${record.id}`], 'the events are still in the log')
  const failures = lines.map(line => JSON.parse(line)).filter(entry => entry.msg === 'fastify-simple-apikey: onAuditEvent failed')
  t.same(failures.map(entry => [entry.level, entry.auditEvent, entry.err.message]), [[50, 'key.created', 'audit store down'], [50, 'key.revoked', 'audit store still down']])
})

test('routes guarded by the app\'s own preHandler record the actor as app', async t => {
  const db = await createTestDatabase(t, 'audit_guard')
  const { app, received } = await auditedApp(t, { knex: db.knex, routes: { async preHandler () {} } })
  const created = await app.inject({ method: 'POST', url: '/apikeys/', payload: { entityId: 'e' } })
  t.equal(created.statusCode, 201)
  await until(() => received.length === 1, 'the event')
  t.same(summary(received), [`key.created app #${created.json().record.id}`])
})

test('the CLI records its changes with actor cli, printed with --log-level info', async t => {
  const db = await createTestDatabase(t, 'audit_cli')
  const { app } = await auditedApp(t, { knex: db.knex })
  const cli = (args: string[]) => new Promise<{ stdout: string, stderr: string }>((resolve, reject) => {
    execFile(process.execPath, [join(__dirname, '..', 'dist', 'lib', 'cli.js'), ...args, '--log-level', 'info'], {
      env: { PATH: process.env.PATH, DATABASE_URL: db.url, FERNET_SECRET: secretA, ROTATION_FERNET_SECRET: secretB },
      timeout: 60_000
    }, (err, stdout, stderr) => err === null ? resolve({ stdout, stderr }) : reject(new Error(`${args.join(' ')}: ${stderr}`)))
  })
  const audits = (stderr: string) => stderr.split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line)).filter(entry => entry.audit !== undefined).map(entry => entry.audit as LoggedAudit)

  const created = await cli(['keys', 'create', '--entity', 'svc', '--name', 'from a shell'])
  const key = created.stdout.trim()
  const id = app.keyring.decrypt(key)._pk as number
  const rolled = await cli(['keys', 'roll', String(id), '--grace', '1d'])
  const revoked = await cli(['keys', 'revoke', String(id)])
  const started = await cli(['rotation'])
  const stopped = await cli(['rotation', '--stop'])
  t.same(summary([created, rolled, revoked, started, stopped].flatMap(run => audits(run.stderr))), [
    `key.created cli #${id}`, `key.rolled cli #${id}`, `key.revoked cli #${id}`, 'rotation.started cli', 'rotation.stopped cli'
  ])
  t.equal(created.stdout, `${key}\n`, 'the log goes to stderr: stdout is still the key alone')
  const everything = [created, rolled, revoked, started, stopped].map(run => run.stderr).join('\n')
  for (const secret of [key, rolled.stdout.trim(), ...secretsOf(app, key), secretA, secretB]) t.notOk(everything.includes(secret), 'no key or secret in the CLI\'s log')
})
