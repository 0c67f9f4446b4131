// The key rows in PostgreSQL: reads and writes of the keys table, mapped to records.
import { createHash } from 'node:crypto'
import type { Knex } from 'knex'
import type { Tables } from './migrations'
import { InvalidInputError } from './errors'

/** What `request.apiKey` holds once a key is verified. */
export interface ApiKey {
  id: number
  name: string
  entityId: string
  scopes: string[]
  expiresAt: Date
  metadata: Record<string, unknown>
}

/** A key's row, as the management API returns it. Never holds the key or its secret. */
export interface ApiKeyRecord extends ApiKey {
  revoked: boolean
  createdAt: Date
  whitelistedIps: string[]
  blacklistedIps: string[]
  lastUsedAt: Date | null
}

/** The row with what verification needs beyond the record. */
export interface StoredKey extends ApiKeyRecord {
  hashedSecret: string
  previousHashedSecret: string | null
  previousSecretExpires: Date | null
  secretFingerprint: string | null
}

export interface NewKeyRow {
  name: string
  entityId: string
  expiresAt: Date
  scopes: string[]
  whitelistedIps: string[]
  blacklistedIps: string[]
  metadata: Record<string, unknown>
  hashedSecret: string
  secretFingerprint: string
}

export interface ListFilter {
  entityId?: string
  revoked?: boolean
  /** true: only keys past their expiry; false: only keys not yet expired. */
  expired?: boolean
  limit?: number
  offset?: number
}

export interface KeyPage {
  items: ApiKeyRecord[]
  total: number
}

// On an adopted drf-simple-apikey table: name may be NULL, id is integer or bigint (a string from node-pg), entity_id an integer.
interface Row {
  id: string | number
  name: string | null
  entity_id: string | number
  expiry_date: Date | string
  revoked: boolean
  created: Date | string
  whitelisted_ips: unknown
  blacklisted_ips: unknown
  scopes: unknown
  hashed_secret: string | null
  previous_hashed_secret?: string | null
  previous_secret_expires?: Date | string | null
  metadata?: unknown
  last_used_at?: Date | string | null
  secret_fingerprint?: string | null
}

const VERIFY_COLUMNS = ['id', 'name', 'entity_id', 'expiry_date', 'revoked', 'created', 'whitelisted_ips', 'blacklisted_ips', 'scopes',
  'hashed_secret', 'previous_hashed_secret', 'previous_secret_expires', 'metadata', 'last_used_at', 'secret_fingerprint']

export interface KeyStoreOptions {
  /**
   * Read keys for verification in batches, with a named prepared statement on Knex's pooled connections:
   * for a PostgreSQL server through `pg`, not PGlite.
   */
  preparedReads?: boolean
}

// Ids read in one query at most; more wait for the next.
const MAX_BATCH = 500

interface Waiter {
  resolve: (row: Row | undefined) => void
  reject: (err: unknown) => void
}

/** The verification read, compiled once: Knex's query object with its statement name. */
interface PreparedFind {
  method: string
  sql: string
  options: { name: string }
}

export class KeyStore {
  readonly knex: Knex
  readonly table: string
  #prepared: PreparedFind | null
  // Ids asked for in this turn of the event loop, with who waits for each.
  #batch: Map<number, Waiter[]> | null = null

  constructor (knex: Knex, tables: Tables, options: KeyStoreOptions = {}) {
    this.knex = knex
    this.table = tables.keys
    this.#prepared = options.preparedReads === true && knex.client.driverName === 'pg' ? this.#compileFind() : null
  }

  async insert (row: NewKeyRow): Promise<StoredKey> {
    let inserted: Row
    try {
      [inserted] = await this.knex(this.table).insert({
        name: row.name,
        entity_id: row.entityId,
        expiry_date: row.expiresAt,
        // drf-simple-apikey's table has no database defaults: Django fills these in, so must we.
        revoked: false,
        created: this.knex.fn.now(),
        scopes: JSON.stringify(row.scopes),
        whitelisted_ips: JSON.stringify(row.whitelistedIps),
        blacklisted_ips: JSON.stringify(row.blacklistedIps),
        metadata: JSON.stringify(row.metadata),
        hashed_secret: row.hashedSecret,
        secret_fingerprint: row.secretFingerprint
      }).returning(VERIFY_COLUMNS)
    } catch (err) {
      throw entityError(err) ?? err
    }
    return toStoredKey(inserted)
  }

  /** At start: fails with PostgreSQL's error when the table or one of the columns the plugin reads is missing. */
  async checkColumns (): Promise<void> {
    await this.knex(this.table).select(VERIFY_COLUMNS).limit(0)
  }

  async find (id: number): Promise<StoredKey | null> {
    const row = this.#prepared === null ? await this.#findOne(id) : await this.#findBatched(id)
    return row === undefined ? null : toStoredKey(row)
  }

  async #findOne (id: number): Promise<Row | undefined> {
    try {
      return await this.knex(this.table).select(VERIFY_COLUMNS).where({ id }).first()
    } catch (err) {
      if (isOutOfRange(err)) return undefined
      throw err
    }
  }

  // With the cache off this read is on every request, and on a small machine the round trip to PostgreSQL is most of a request's cost.
  // Reads asked for in one turn of the event loop go out together, as one indexed `id = ANY(...)` query: each request still reads
  // after it arrived, and under load one round trip serves many.
  #findBatched (id: number): Promise<Row | undefined> {
    let batch = this.#batch
    if (batch === null) {
      batch = this.#batch = new Map()
      setImmediate(() => this.#flush())
    }
    let waiters = batch.get(id)
    if (waiters === undefined) batch.set(id, waiters = [])
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }))
  }

  #flush (): void {
    const batch = this.#batch!
    this.#batch = null
    const ids = [...batch.keys()]
    for (let start = 0; start < ids.length; start += MAX_BATCH) {
      const chunk = ids.slice(start, start + MAX_BATCH)
      this.#readRows(chunk).then(rows => {
        const byId = new Map(rows.map(row => [Number(row.id), row]))
        for (const id of chunk) for (const waiter of batch.get(id)!) waiter.resolve(byId.get(id))
      }, err => {
        for (const id of chunk) for (const waiter of batch.get(id)!) waiter.reject(err)
      })
    }
  }

  // Compiled once, and parsed once per pooled connection. Through Knex's own pool and `client.query`, so that the app's pool size,
  // search path, timeouts and `query` events apply as to any other query.
  async #readRows (ids: number[]): Promise<Row[]> {
    if (this.#prepared === null) return this.knex(this.table).select(VERIFY_COLUMNS).whereRaw('?? = any(?::bigint[])', ['id', ids])
    const client = this.knex.client
    const connection = await client.acquireConnection()
    try {
      const { response } = await client.query(connection, { ...this.#prepared, bindings: [ids] })
      return response.rows
    } catch (err) {
      if (!isLostStatement(err)) throw err
      // A pooler that hands each statement to any server connection (PgBouncer's transaction mode before 1.21) loses named statements.
      this.#prepared = null
    } finally {
      await client.releaseConnection(connection)
    }
    return this.#readRows(ids)
  }

  #compileFind (): PreparedFind {
    // bigint[]: an id out of range of an integer column (drf-simple-apikey's) matches nothing instead of failing the whole batch.
    const { method, sql } = this.knex(this.table).select(VERIFY_COLUMNS).whereRaw('?? = any(?::bigint[])', ['id', [0]]).toSQL()
    return { method, sql, options: { name: `simple_apikey_find_${createHash('sha256').update(sql).digest('hex').slice(0, 16)}` } }
  }

  async list (filter: ListFilter = {}): Promise<KeyPage> {
    const query = this.knex(this.table).where(builder => {
      if (filter.entityId !== undefined) builder.where('entity_id', filter.entityId)
      if (filter.revoked !== undefined) builder.where('revoked', filter.revoked)
      if (filter.expired === true) builder.where('expiry_date', '<=', this.knex.fn.now())
      if (filter.expired === false) builder.where('expiry_date', '>', this.knex.fn.now())
    })
    let rows: Row[]
    let counted: Array<{ count: string | number }>
    try {
      [rows, counted] = await Promise.all([
        query.clone().select(VERIFY_COLUMNS).orderBy('id', 'desc').limit(filter.limit ?? 100).offset(filter.offset ?? 0),
        query.clone().count<Array<{ count: string | number }>>({ count: '*' })
      ])
    } catch (err) {
      // An entity id that the column's type cannot hold (a name on drf's integer entity_id) owns no keys.
      if (filter.entityId !== undefined && (isInvalidText(err) || isOutOfRange(err))) return { items: [], total: 0 }
      throw err
    }
    return { items: rows.map(row => toRecord(toStoredKey(row))), total: Number(counted[0].count) }
  }

  /** Marks keys revoked; resolves the ids that exist. */
  async revoke (ids: number[]): Promise<number[]> {
    try {
      const rows = await this.knex(this.table).whereIn('id', ids).update({ revoked: true }).returning('id')
      return rows.map((row: { id: string | number }) => Number(row.id))
    } catch (err) {
      // An id beyond the integer id column of drf-simple-apikey's older tables cannot exist.
      if (isOutOfRange(err) && ids.some(id => id > MAX_INTEGER_ID)) return this.revoke(ids.filter(id => id <= MAX_INTEGER_ID))
      throw err
    }
  }

  /** A new per-key secret; the previous one stays valid until `previousExpires` (null: not at all). */
  async roll (id: number, hashedSecret: string, previousExpires: Date | null, secretFingerprint: string): Promise<StoredKey | null> {
    let rows: Row[]
    try {
      rows = await this.knex(this.table).where({ id }).update({
        previous_hashed_secret: previousExpires === null ? null : this.knex.ref('hashed_secret'),
        previous_secret_expires: previousExpires,
        hashed_secret: hashedSecret,
        secret_fingerprint: secretFingerprint
      }).returning(VERIFY_COLUMNS)
    } catch (err) {
      if (isOutOfRange(err)) return null
      throw err
    }
    return rows.length === 0 ? null : toStoredKey(rows[0])
  }

  async setSecretFingerprint (id: number, secretFingerprint: string): Promise<void> {
    await this.knex(this.table).where({ id }).update({ secret_fingerprint: secretFingerprint })
  }
}

// The largest id of an integer column: drf-simple-apikey's keys table before its 0003_alter_apikey_id migration.
const MAX_INTEGER_ID = 2 ** 31 - 1

function pgCode (err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code
}

/** 26000 or 42P05: a named prepared statement that the server connection does not have, or already has. */
function isLostStatement (err: unknown): boolean {
  const code = pgCode(err)
  return code === '26000' || code === '42P05'
}

/** 22003: a value out of the column type's range, such as an id above 2^31-1 on an integer column. */
function isOutOfRange (err: unknown): boolean {
  return pgCode(err) === '22003'
}

/** 22P02: text that the column's type cannot parse, such as 'alice' for an integer column. */
function isInvalidText (err: unknown): boolean {
  return pgCode(err) === '22P02'
}

// drf-simple-apikey's entity_id is an integer referencing auth_user: a name, or an id no user has, is the caller's mistake.
function entityError (err: unknown): Error | null {
  if (isInvalidText(err) || isOutOfRange(err)) return new InvalidInputError('entityId', 'a value of the keys table\'s entity_id column type (a Django user id on drf-simple-apikey\'s table)')
  if (pgCode(err) === '23503') return new InvalidInputError('entityId', 'the id of an existing entity (the keys table\'s entity_id references another table, auth_user on drf-simple-apikey\'s)')
  return null
}

export function toRecord (key: StoredKey): ApiKeyRecord {
  return {
    id: key.id,
    name: key.name,
    entityId: key.entityId,
    scopes: key.scopes,
    expiresAt: key.expiresAt,
    metadata: key.metadata,
    revoked: key.revoked,
    createdAt: key.createdAt,
    whitelistedIps: key.whitelistedIps,
    blacklistedIps: key.blacklistedIps,
    lastUsedAt: key.lastUsedAt
  }
}

function toStoredKey (row: Row): StoredKey {
  return {
    id: Number(row.id),
    name: row.name ?? '',
    entityId: String(row.entity_id),
    scopes: stringList(row.scopes),
    expiresAt: new Date(row.expiry_date),
    metadata: objectOf(row.metadata),
    revoked: row.revoked === true,
    createdAt: new Date(row.created),
    whitelistedIps: stringList(row.whitelisted_ips),
    blacklistedIps: stringList(row.blacklisted_ips),
    lastUsedAt: row.last_used_at == null ? null : new Date(row.last_used_at),
    hashedSecret: row.hashed_secret ?? '',
    previousHashedSecret: row.previous_hashed_secret ?? null,
    previousSecretExpires: row.previous_secret_expires == null ? null : new Date(row.previous_secret_expires),
    secretFingerprint: row.secret_fingerprint ?? null
  }
}

// JSON columns may come back parsed (jsonb) or as text (Django's JSONField on older schemas).
function parseJson (value: unknown): unknown {
  if (typeof value !== 'string') return value
  try {
    return JSON.parse(value)
  } catch {
    return null
  }
}

function stringList (value: unknown): string[] {
  const parsed = parseJson(value)
  return Array.isArray(parsed) ? parsed.filter((item): item is string => typeof item === 'string') : []
}

function objectOf (value: unknown): Record<string, unknown> {
  const parsed = parseJson(value)
  return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Record<string, unknown> : {}
}
