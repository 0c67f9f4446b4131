// Test databases: each test file gets its own schema in the real PostgreSQL server, dropped when it ends.
import { randomBytes } from 'node:crypto'
import knexFactory, { type Knex } from 'knex'

export const serverUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

export interface TestDatabase {
  schema: string
  /** A Knex instance whose search_path is the test's schema. */
  knex: Knex
  /** Opens another Knex on the same schema, as a second instance of an app would. */
  connect: () => Knex
  /** A connection URL that lands in the test's schema, for the CLI and `connection`. */
  url: string
}

/** What the helpers need of a tap test: a place to register cleanup. */
export interface Teardown {
  teardown: (fn: () => Promise<void> | void) => void
}

export async function createTestDatabase (t: Teardown, name = 't'): Promise<TestDatabase> {
  const schema = `${name.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`
  const admin = knexFactory({ client: 'pg', connection: serverUrl })
  await admin.raw('CREATE SCHEMA ??', [schema])
  await admin.destroy()
  const opened: Knex[] = []
  const connect = () => {
    const knex = knexFactory({ client: 'pg', connection: serverUrl, searchPath: [schema], pool: { min: 0, max: 10 } })
    opened.push(knex)
    return knex
  }
  const knex = connect()
  t.teardown(async () => {
    await Promise.all(opened.map(instance => instance.destroy()))
    const cleanup = knexFactory({ client: 'pg', connection: serverUrl })
    await cleanup.raw('DROP SCHEMA ?? CASCADE', [schema])
    await cleanup.destroy()
  })
  const url = new URL(serverUrl)
  url.searchParams.set('options', `-c search_path=${schema}`)
  return { schema, knex, connect, url: url.toString() }
}
