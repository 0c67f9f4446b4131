#!/usr/bin/env node
// The `simple-apikey` command: secrets, migrations, rotation and keys from a shell, against DATABASE_URL.
import { Command, InvalidArgumentError, Option } from 'commander'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import simpleApiKey from '../index'
import { generateSecret } from './fernet'
import { openDatabase } from './database'
import { defaultTables, migrate, rollbackAdoption, type Tables } from './migrations'
import { drfTables } from './adopt'
import { toMilliseconds } from './duration'
import type { ApiKeyRecord } from './store'

const actor = { actor: 'cli' }

interface DatabaseFlags {
  databaseUrl?: string
  dataDir?: string
  logLevel: string
  keysTable?: string
  rotationsTable?: string
  usageTable?: string
}

function tableName (value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(value)) throw new InvalidArgumentError('expected a table name')
  return value
}

function withDatabaseFlags (command: Command): Command {
  return command
    .option('--database-url <url>', 'PostgreSQL URL (default: $DATABASE_URL; without one, the embedded database in --data-dir)')
    .option('--data-dir <dir>', 'folder of the embedded database')
    .option('--keys-table <name>', 'table of the keys (default: api_keys; drf_simple_apikey_apikey with --adopt-drf)', tableName)
    .option('--rotations-table <name>', 'table of the rotations (default: api_key_rotations; drf_simple_apikey_rotation_rotation with --adopt-drf)', tableName)
    .option('--usage-table <name>', 'table of the usage counts (default: api_key_usage)', tableName)
    .addOption(new Option('--log-level <level>', 'write the plugin\'s log, audit events included, to stderr as JSON lines')
      .choices(['silent', 'error', 'warn', 'info', 'debug']).default('silent'))
}

// Audit events are info lines with actor 'cli': `--log-level info` hands them to whatever collects stderr.
function loggerOf (flags: DatabaseFlags): FastifyServerOptions['logger'] {
  return flags.logLevel === 'silent' ? false : { level: flags.logLevel, stream: process.stderr }
}

function tablesOf (flags: DatabaseFlags): Partial<Tables> {
  return {
    ...(flags.keysTable === undefined ? {} : { keys: flags.keysTable }),
    ...(flags.rotationsTable === undefined ? {} : { rotations: flags.rotationsTable }),
    ...(flags.usageTable === undefined ? {} : { usage: flags.usageTable })
  }
}

// The URL may hold a password: the message names the setting, never its value.
function checkDatabaseUrl (flags: DatabaseFlags): void {
  const url = flags.databaseUrl ?? process.env.DATABASE_URL
  if (url === undefined || url === '') return
  let protocol: string | null = null
  try {
    protocol = new URL(url).protocol
  } catch {}
  if (protocol !== 'postgres:' && protocol !== 'postgresql:') {
    throw new Error(`${flags.databaseUrl === undefined ? 'DATABASE_URL' : '--database-url'} is not a postgres:// URL`)
  }
}

async function withApp<T> (flags: DatabaseFlags, run: (app: FastifyInstance) => Promise<T>, options: { rotationPeriod?: number } = {}): Promise<T> {
  checkDatabaseUrl(flags)
  const app = Fastify({ logger: loggerOf(flags) })
  let result: T
  try {
    await app.register(simpleApiKey, {
      connection: flags.databaseUrl,
      dataDir: flags.dataDir,
      tables: tablesOf(flags),
      hook: false,
      cache: false,
      ...options
    })
    result = await run(app)
  } catch (err) {
    // A registration that failed (tables missing, database down) leaves a pool open that would hold the process for its idle timeout.
    await app.close().catch(() => {})
    throw err
  }
  await app.close()
  return result
}

function list (value: string, previous: string[] = []): string[] {
  return previous.concat(value.split(',').map(item => item.trim()).filter(item => item !== ''))
}

function duration (value: string): number {
  const ms = toMilliseconds(value)
  if (ms === undefined) throw new InvalidArgumentError('expected milliseconds or a duration such as 7d')
  return ms
}

// The value is not echoed: a key pasted where its id belongs must not land in a terminal's scrollback or a CI log.
function keyId (value: string): number {
  if (!/^\d{1,15}$/.test(value) || Number(value) <= 0) throw new InvalidArgumentError('invalid key id: expected a positive whole number, such as the id column of `keys list`')
  return Number(value)
}

function count (value: string): number {
  if (!/^\d{1,4}$/.test(value) || Number(value) < 1 || Number(value) > 1000) throw new InvalidArgumentError('expected a whole number from 1 to 1000')
  return Number(value)
}

function describe (record: ApiKeyRecord): Record<string, string> {
  const status = record.revoked ? 'revoked' : record.expiresAt.getTime() <= Date.now() ? 'expired' : 'active'
  return {
    id: String(record.id),
    name: record.name,
    entity: record.entityId,
    status,
    expires: record.expiresAt.toISOString(),
    scopes: record.scopes.join(',') || '*',
    'last used': record.lastUsedAt?.toISOString() ?? '-'
  }
}

function table (rows: Array<Record<string, string>>): string {
  if (rows.length === 0) return 'No API keys.'
  const columns = Object.keys(rows[0])
  const widths = columns.map(column => Math.max(column.length, ...rows.map(row => row[column].length)))
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()
  return [line(columns), ...rows.map(row => line(columns.map(column => row[column])))].join('\n')
}

export function buildProgram (): Command {
  const program = new Command('simple-apikey')
    .description('API keys for Fastify: secrets, migrations, rotation and keys')

  program.command('generate-secret')
    .description('print a new Fernet secret for FERNET_SECRET or ROTATION_FERNET_SECRET')
    .action(() => {
      process.stdout.write(generateSecret() + '\n')
    })

  withDatabaseFlags(program.command('migrate'))
    .description('create or update the plugin\'s tables')
    .option('--adopt-drf', 'instead, add the plugin\'s columns to the tables of drf-simple-apikey, which Django keeps using')
    .option('--rollback', 'with --adopt-drf: undo the adoption, dropping only what it added')
    .action(async (flags: DatabaseFlags & { adoptDrf?: boolean, rollback?: boolean }) => {
      if (flags.rollback === true && flags.adoptDrf !== true) throw new InvalidArgumentError('--rollback undoes an adoption: use it with --adopt-drf')
      const tables = { ...(flags.adoptDrf === true ? drfTables : defaultTables), ...tablesOf(flags) }
      checkDatabaseUrl(flags)
      const database = openDatabase({ connection: flags.databaseUrl, dataDir: flags.dataDir }, Fastify({ logger: loggerOf(flags) }).log)
      try {
        if (flags.rollback === true) await rollbackAdoption(database.knex, tables)
        else await migrate(database.knex, tables, { adoptDrf: flags.adoptDrf === true })
      } finally {
        await database.knex.destroy()
      }
      if (flags.adoptDrf !== true) process.stdout.write('Migrations are up to date.\n')
      else if (flags.rollback === true) process.stdout.write(`Adoption undone: the plugin's columns are gone from ${tables.keys} and ${tables.rotations}, and ${tables.usage} is dropped.\n`)
      else process.stdout.write(`Adopted ${tables.keys} and ${tables.rotations}; usage goes to ${tables.usage}. Register the plugin with tables: ${JSON.stringify(tables)}.\n`)
    })

  withDatabaseFlags(program.command('rotation'))
    .description('start a rotation from FERNET_SECRET to ROTATION_FERNET_SECRET, or stop it, or show its status')
    .addOption(new Option('--stop', 'stop the rotation in progress').conflicts(['status', 'period']))
    .addOption(new Option('--status', 'print the rotation status as JSON').conflicts('period'))
    // The rotation's end is written into its row when it starts: the apps' own rotationPeriod does not change it.
    .option('--period <duration>', 'length of the transition, e.g. 7d or 12h (default: 7d); use the apps\' rotationPeriod', duration)
    .action(async (flags: DatabaseFlags & { stop?: boolean, status?: boolean, period?: number }) => {
      await withApp(flags, async app => {
        if (flags.status === true) {
          process.stdout.write(JSON.stringify(await app.keyring.status(), null, 2) + '\n')
        } else if (flags.stop === true) {
          await app.keyring.stopRotation(actor)
          process.stdout.write('Successfully stopped rotation\n')
        } else {
          const status = await app.keyring.rotate(actor)
          process.stdout.write(`Successfully started rotation ending at ${status.rotation!.endsAt!.toISOString()}\n`)
        }
      }, { rotationPeriod: flags.period })
    })

  const keys = program.command('keys').description('create, list, revoke and roll API keys')

  withDatabaseFlags(keys.command('create'))
    .description('create a key and print it once')
    .requiredOption('--entity <id>', 'who the key belongs to')
    .option('--name <name>', 'a label for people', '')
    .option('--scopes <scopes>', 'comma-separated scopes (none: unrestricted)', list)
    .option('--expires <date>', 'expiry date (ISO 8601)')
    .option('--allow-ip <rules>', 'comma-separated addresses or CIDR ranges the key may be used from', list)
    .option('--deny-ip <rules>', 'comma-separated addresses or CIDR ranges the key may never be used from', list)
    .option('--json', 'print the key and its record as JSON')
    .action(async (flags: DatabaseFlags & { entity: string, name: string, scopes?: string[], expires?: string, allowIp?: string[], denyIp?: string[], json?: boolean }) => {
      await withApp(flags, async app => {
        const { key, record } = await app.apiKeys.create({
          name: flags.name,
          entityId: flags.entity,
          scopes: flags.scopes,
          expiresAt: flags.expires,
          whitelistedIps: flags.allowIp,
          blacklistedIps: flags.denyIp
        }, actor)
        if (flags.json === true) {
          process.stdout.write(JSON.stringify({ key, record }, null, 2) + '\n')
        } else {
          process.stdout.write(`${key}\n`)
          process.stderr.write(`Created key ${record.id}. Store it somewhere safe: it cannot be shown again.\n`)
        }
      })
    })

  withDatabaseFlags(keys.command('list'))
    .description('list keys')
    .option('--entity <id>', 'only this entity\'s keys')
    .option('--revoked', 'only revoked keys')
    .option('--active', 'only keys neither revoked nor expired')
    .option('--limit <n>', 'at most this many (1 to 1000)', count, 100)
    .option('--json', 'print JSON')
    .action(async (flags: DatabaseFlags & { entity?: string, revoked?: boolean, active?: boolean, limit: number, json?: boolean }) => {
      await withApp(flags, async app => {
        const page = await app.apiKeys.list({
          entityId: flags.entity,
          revoked: flags.revoked === true ? true : flags.active === true ? false : undefined,
          expired: flags.active === true ? false : undefined,
          limit: flags.limit
        })
        process.stdout.write((flags.json === true ? JSON.stringify(page, null, 2) : table(page.items.map(describe))) + '\n')
      })
    })

  withDatabaseFlags(keys.command('revoke'))
    .description('revoke keys')
    .argument('<ids...>', 'key ids')
    .action(async (ids: string[], flags: DatabaseFlags) => {
      const parsed = ids.map(keyId)
      await withApp(flags, async app => {
        const revoked = await app.apiKeys.revokeMany(parsed, actor)
        const missing = parsed.filter(id => !revoked.includes(id))
        if (revoked.length > 0) process.stdout.write(`Revoked ${parsed.filter(id => revoked.includes(id)).join(', ')}\n`)
        if (missing.length > 0) throw new Error(`no API key with id ${missing.join(', ')}`)
      })
    })

  withDatabaseFlags(keys.command('roll'))
    .description('give a key a new value and print it once; the old value works for the grace period')
    .argument('<id>', 'key id')
    .option('--grace <duration>', 'how long the old value keeps working, e.g. 7d (default: 0, at once invalid)', duration, 0)
    .action(async (value: string, flags: DatabaseFlags & { grace: number }) => {
      const id = keyId(value)
      await withApp(flags, async app => {
        const { key } = await app.apiKeys.roll(id, { gracePeriod: flags.grace }, actor)
        process.stdout.write(`${key}\n`)
        process.stderr.write(`Rolled key ${id}. Store it somewhere safe: it cannot be shown again.\n`)
      })
    })

  return program
}

export async function main (argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv)
    return 0
  } catch (err) {
    process.stderr.write(`simple-apikey: ${oneLine(err)}\n`)
    return 1
  }
}

const unreachable = ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EAI_AGAIN']

function oneLine (err: unknown): string {
  const error = err as { message?: string, code?: string, name?: string }
  if (error.code !== undefined && unreachable.includes(error.code)) return `cannot reach the database (${error.code})`
  if (error.name === 'KnexTimeoutError') return 'cannot reach the database (no connection within the timeout)'
  if (error.code === 'FST_APIKEY_ROTATION_NOT_RUNNING') return 'No active rotation found to stop'
  return String(error.message ?? err).split('\n')[0]
}

if (require.main === module) {
  main(process.argv).then(code => { process.exitCode = code })
}
