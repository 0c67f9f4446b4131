// The key rows in PostgreSQL: reads and writes of the keys table, mapped to records.
import type { Knex } from 'knex'
import type { Tables } from './migrations'

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

interface Row {
  id: string | number
  name: string
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

export class KeyStore {
  readonly knex: Knex
  readonly table: string

  constructor (knex: Knex, tables: Tables) {
    this.knex = knex
    this.table = tables.keys
  }

  async insert (row: NewKeyRow): Promise<StoredKey> {
    const [inserted] = await this.knex(this.table).insert({
      name: row.name,
      entity_id: row.entityId,
      expiry_date: row.expiresAt,
      scopes: JSON.stringify(row.scopes),
      whitelisted_ips: JSON.stringify(row.whitelistedIps),
      blacklisted_ips: JSON.stringify(row.blacklistedIps),
      metadata: JSON.stringify(row.metadata),
      hashed_secret: row.hashedSecret,
      secret_fingerprint: row.secretFingerprint
    }).returning(VERIFY_COLUMNS)
    return toStoredKey(inserted)
  }

  /** At start: fails with PostgreSQL's error when the table or one of the columns the plugin reads is missing. */
  async checkColumns (): Promise<void> {
    await this.knex(this.table).select(VERIFY_COLUMNS).limit(0)
  }

  async find (id: number): Promise<StoredKey | null> {
    const row = await this.knex(this.table).select(VERIFY_COLUMNS).where({ id }).first()
    return row === undefined ? null : toStoredKey(row)
  }

  async list (filter: ListFilter = {}): Promise<KeyPage> {
    const query = this.knex(this.table).where(builder => {
      if (filter.entityId !== undefined) builder.where('entity_id', filter.entityId)
      if (filter.revoked !== undefined) builder.where('revoked', filter.revoked)
      if (filter.expired === true) builder.where('expiry_date', '<=', this.knex.fn.now())
      if (filter.expired === false) builder.where('expiry_date', '>', this.knex.fn.now())
    })
    const [rows, counted] = await Promise.all([
      query.clone().select(VERIFY_COLUMNS).orderBy('id', 'desc').limit(filter.limit ?? 100).offset(filter.offset ?? 0),
      query.clone().count<Array<{ count: string | number }>>({ count: '*' })
    ])
    return { items: rows.map((row: Row) => toRecord(toStoredKey(row))), total: Number(counted[0].count) }
  }

  /** Marks keys revoked; resolves the ids that exist. */
  async revoke (ids: number[]): Promise<number[]> {
    const rows = await this.knex(this.table).whereIn('id', ids).update({ revoked: true }).returning('id')
    return rows.map((row: { id: string | number }) => Number(row.id))
  }

  /** A new per-key secret; the previous one stays valid until `previousExpires` (null: not at all). */
  async roll (id: number, hashedSecret: string, previousExpires: Date | null, secretFingerprint: string): Promise<StoredKey | null> {
    const rows = await this.knex(this.table).where({ id }).update({
      previous_hashed_secret: previousExpires === null ? null : this.knex.ref('hashed_secret'),
      previous_secret_expires: previousExpires,
      hashed_secret: hashedSecret,
      secret_fingerprint: secretFingerprint
    }).returning(VERIFY_COLUMNS)
    return rows.length === 0 ? null : toStoredKey(rows[0])
  }

  async setSecretFingerprint (id: number, secretFingerprint: string): Promise<void> {
    await this.knex(this.table).where({ id }).update({ secret_fingerprint: secretFingerprint })
  }
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
