import { test } from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'

const root = join(__dirname, '..')
const built = join(root, 'dist', 'index.js')

function node (args: string[]) {
  const result = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8' })
  return { status: result.status, out: result.stdout.trim(), err: result.stderr }
}

test('the built package loads through require and ESM import, with the plugin as the module itself', async t => {
  t.ok(existsSync(built), 'dist/index.js exists (npm test builds it; alone, run `npm run build` first)')
  const required = node(['-e', `
    const m = require(${JSON.stringify(built)})
    const meta = m[Symbol.for('plugin-meta')]
    console.log(JSON.stringify({ type: typeof m, self: m.default === m && m.fastifySimpleApiKey === m, name: meta.name, fastify: meta.fastify,
      named: ['Keyring', 'fernet', 'envSchema', 'migrate', 'migrationSource', 'keyPattern', 'errors', 'rateLimitByKey'].every(n => m[n] !== undefined) }))`])
  t.equal(required.status, 0, required.err)
  t.same(JSON.parse(required.out), { type: 'function', self: true, name: 'fastify-simple-apikey', fastify: '5.x', named: true })

  const imported = node(['--input-type=module', '-e', `
    import plugin, { default as viaDefault, fastifySimpleApiKey, Keyring, fernet, envSchema, migrate, migrationSource, migrationsTableName, keyPattern, errors, rateLimitByKey } from ${JSON.stringify(built)}
    const secret = fernet.generateSecret()
    const keyring = new Keyring([secret])
    console.log(JSON.stringify({ same: plugin === viaDefault && plugin === fastifySimpleApiKey, roundTrip: keyring.decrypt(keyring.encrypt({ a: 1 })).a,
      table: migrationsTableName, others: [envSchema, migrate, migrationSource, keyPattern, errors, rateLimitByKey].every(x => x !== undefined) }))`])
  t.equal(imported.status, 0, imported.err)
  t.same(JSON.parse(imported.out), { same: true, roundTrip: 1, table: 'simple_apikey_migrations', others: true })
})

test('npm pack ships the build, the migrations, the admin page and the CLI, and no tests', async t => {
  const packed = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })
  t.equal(packed.status, 0, packed.stderr)
  const files: string[] = JSON.parse(packed.stdout)[0].files.map((file: { path: string }) => file.path)
  for (const expected of ['dist/index.js', 'dist/index.d.ts', 'dist/lib/cli.js', 'dist/lib/admin/index.html', 'migrations/20261203000001_api_keys.js', 'README.md', 'SECURITY.md']) {
    t.ok(files.includes(expected), expected)
  }
  t.notOk(files.some(file => file.startsWith('test/') || file.startsWith('bench/') || file.startsWith('.data')), 'no tests, benchmarks or data')
})
