'use strict'
// The example server: the plugin on the embedded database (or DATABASE_URL), a demo key, and a curl line that works.
const { existsSync, readFileSync, writeFileSync, mkdirSync } = require('node:fs')
const { join } = require('node:path')
const Fastify = require('fastify')
const simpleApiKey = require('..')

const dataDir = process.env.SIMPLE_APIKEY_DATA_DIR ?? join(__dirname, '..', '.data')
const port = Number(process.env.PORT ?? 3000)

// A fresh clone has no secret yet: make one for this demo and keep it beside the embedded data.
function demoSecret () {
  if (process.env.FERNET_SECRET) return process.env.FERNET_SECRET
  const file = join(dataDir, 'demo-fernet-secret')
  if (!existsSync(file)) {
    mkdirSync(dataDir, { recursive: true })
    writeFileSync(file, simpleApiKey.fernet.generateSecret() + '\n', { mode: 0o600 })
  }
  return readFileSync(file, 'utf8').trim()
}

async function start () {
  const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' } })
  await app.register(simpleApiKey, {
    fernetSecret: demoSecret(),
    dataDir: join(dataDir, 'pglite'),
    keyPrefix: 'sk_demo_',
    migrate: true
  })

  app.get('/fruits', { config: { apiKey: { scopes: ['fruits:read'] } } }, async request => ({
    entity: request.apiKey.entityId,
    fruits: ['apple', 'pear', 'quince']
  }))
  app.get('/health', { config: { apiKey: false } }, async () => ({ ok: true }))

  // Ctrl-C closes the app, so that the embedded database and the last usage counts are written before the process ends.
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => app.close().then(() => process.exit(0), () => process.exit(1)))
  }

  await app.listen({ port, host: '127.0.0.1' })

  const { total } = await app.apiKeys.list({ limit: 0 })
  const adminFile = join(dataDir, 'demo-admin-key')
  if (total === 0) {
    const demo = await app.apiKeys.create({ name: 'demo', entityId: 'demo-user', scopes: ['fruits:read'] })
    const admin = await app.apiKeys.create({ name: 'demo admin', entityId: 'demo-admin', scopes: ['apikeys:admin'] })
    writeFileSync(join(dataDir, 'demo-key'), demo.key + '\n', { mode: 0o600 })
    writeFileSync(adminFile, admin.key + '\n', { mode: 0o600 })
  }
  const demoKey = readFileSync(join(dataDir, 'demo-key'), 'utf8').trim()
  process.stdout.write([
    '',
    'fastify-simple-apikey example is running. Try it:',
    '',
    `  curl -H "Authorization: Api-Key ${demoKey}" http://127.0.0.1:${port}/fruits`,
    '',
    `Admin page: http://127.0.0.1:${port}/apikeys/admin (sign in with the key in ${adminFile})`,
    `The demo keys are in ${dataDir} (demo-key, demo-admin-key); delete that folder to start over.`,
    ''
  ].join('\n'))
}

start().catch(err => {
  process.stderr.write(`example failed to start: ${err.message}\n`)
  process.exit(1)
})
