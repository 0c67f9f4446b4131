import { test } from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
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

test('the packed tarball, installed in a scratch project, loads through require and import, runs its CLI and type-checks', async t => {
  const scratch = mkdtempSync(join(tmpdir(), 'simple-apikey-scratch-'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  // The build is fresh (npm test builds before tap), so packing skips the prepare script's rebuild.
  const packed = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', scratch], { cwd: root, encoding: 'utf8' })
  t.equal(packed.status, 0, packed.stderr)
  const tarball = join(scratch, JSON.parse(packed.stdout)[0].filename)

  // An install without the registry: the tarball unpacked into node_modules, its dependencies linked from this checkout's.
  const modules = join(scratch, 'node_modules')
  mkdirSync(modules)
  const unpacked = spawnSync('tar', ['-xzf', tarball, '-C', modules], { encoding: 'utf8' })
  t.equal(unpacked.status, 0, unpacked.stderr)
  renameSync(join(modules, 'package'), join(modules, 'fastify-simple-apikey'))
  for (const entry of readdirSync(join(root, 'node_modules'))) {
    if (entry !== '.bin' && entry !== 'fastify-simple-apikey' && !entry.startsWith('.')) symlinkSync(join(root, 'node_modules', entry), join(modules, entry))
  }
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true }))

  const run = (args: string[]) => {
    const result = spawnSync(process.execPath, args, { cwd: scratch, encoding: 'utf8' })
    return { status: result.status, out: result.stdout.trim(), err: result.stderr }
  }
  writeFileSync(join(scratch, 'check.cjs'), `
    const simpleApiKey = require('fastify-simple-apikey')
    const { Keyring, fernet } = require('fastify-simple-apikey')
    const keyring = new Keyring([fernet.generateSecret()])
    console.log(JSON.stringify({ plugin: typeof simpleApiKey, name: simpleApiKey[Symbol.for('plugin-meta')].name, roundTrip: keyring.decrypt(keyring.encrypt({ _pk: 1 }))._pk }))`)
  const required = run(['check.cjs'])
  t.equal(required.status, 0, required.err)
  t.same(JSON.parse(required.out), { plugin: 'function', name: 'fastify-simple-apikey', roundTrip: 1 }, 'require')

  writeFileSync(join(scratch, 'check.mjs'), `
    import simpleApiKey, { Keyring, fernet, migrationsTableName } from 'fastify-simple-apikey'
    const keyring = new Keyring([fernet.generateSecret()])
    console.log(JSON.stringify({ plugin: typeof simpleApiKey, table: migrationsTableName, roundTrip: keyring.decrypt(keyring.encrypt({ _pk: 2 }))._pk }))`)
  const imported = run(['check.mjs'])
  t.equal(imported.status, 0, imported.err)
  t.same(JSON.parse(imported.out), { plugin: 'function', table: 'simple_apikey_migrations', roundTrip: 2 }, 'import')

  const cli = run([join(modules, 'fastify-simple-apikey', 'dist', 'lib', 'cli.js'), 'generate-secret'])
  t.equal(cli.status, 0, cli.err)
  t.match(cli.out, /^[A-Za-z0-9_-]{43}=$/, 'the CLI prints a secret')

  writeFileSync(join(scratch, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { module: 'node16', moduleResolution: 'node16', target: 'es2022', strict: true, noEmit: true, types: ['node'] },
    files: ['app.ts']
  }))
  writeFileSync(join(scratch, 'app.ts'), `
    import Fastify from 'fastify'
    import simpleApiKey, { Keyring, type ApiKey } from 'fastify-simple-apikey'

    const app = Fastify()
    app.register(simpleApiKey, { fernetSecret: 'x', keyPrefix: 'sk_live_', cache: { max: 100 } })
    app.get('/fruits', { config: { apiKey: { scopes: ['fruits:read'] } } }, async request => {
      const key: ApiKey | null = request.apiKey
      return { owner: key?.entityId }
    })
    app.get('/health', { config: { apiKey: false } }, async () => ({ ok: true }))
    export const sealed: string = new Keyring(['x']).encrypt({ _pk: 1 })
    export const issued = app.apiKeys.create({ entityId: 'team-42' }).then(({ key }) => key.length)
    // @ts-expect-error: an unknown option is refused by the types
    app.register(simpleApiKey, { fernetSecrets: 'x' })
    // @ts-expect-error: request.apiKey is typed, entityId is a string
    export const wrong: (request: import('fastify').FastifyRequest) => number = request => request.apiKey!.entityId
  `)
  const typecheck = run([join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', scratch])
  t.equal(typecheck.status, 0, `tsc in the scratch project:\n${typecheck.out}${typecheck.err}`)
})
