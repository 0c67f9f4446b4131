// Cross-instance notifications: PostgreSQL LISTEN/NOTIFY on a dedicated, self-reconnecting connection, and the periodic re-read behind it.
import { createHash } from 'node:crypto'
import { Client, type ClientConfig, type Notification } from 'pg'
import type { Knex } from 'knex'
import type { FastifyBaseLogger } from 'fastify'

export type SyncMessage = { kind: 'key', id: number } | { kind: 'rotation' } | { kind: 'resync' }

export interface SyncOptions {
  knex: Knex
  /** False on the embedded database, which no other process can share: messages stay in this process. */
  shared: boolean
  /** Settings for the dedicated LISTEN connection; null when they cannot be known, and then only the periodic re-read brings others' changes. */
  connectionConfig: string | Knex.PgConnectionConfig | null
  /** The keys table: the channel is named after it and its schema, so that apps on other schemas of one database never hear each other. */
  table: string
  /** Milliseconds between periodic re-reads. */
  interval: number
  log: FastifyBaseLogger
  onMessage: (message: SyncMessage) => void
}

const CHANNEL_PREFIX = 'simple_apikey:'
// PostgreSQL cuts identifiers at NAMEDATALEN - 1 bytes, and pg_notify refuses longer channel names.
const MAX_CHANNEL_BYTES = 63
const MAX_BACKOFF_MS = 5_000

export class Sync {
  readonly #options: SyncOptions
  #channel = ''
  #client: Client | null = null
  #closed = false
  #backoff = 100
  #retry: NodeJS.Timeout | null = null
  #tick: NodeJS.Timeout | null = null

  constructor (options: SyncOptions) {
    this.#options = options
  }

  get listening (): boolean {
    return this.#client !== null
  }

  /** The NOTIFY channel, `simple_apikey:<schema>.<keys table>`; empty on the embedded database. */
  get channel (): string {
    return this.#channel
  }

  async start (): Promise<void> {
    this.#tick = setInterval(() => {
      // Without a listener, a change made elsewhere (a revocation too) reaches this instance only through this re-read.
      this.#options.onMessage(this.#options.shared && this.#client === null ? { kind: 'resync' } : { kind: 'rotation' })
    }, this.#options.interval)
    this.#tick.unref()
    if (!this.#options.shared) return
    this.#channel = await channelOf(this.#options.knex, this.#options.table)
    if (this.#options.connectionConfig === null) {
      this.#options.log.warn('fastify-simple-apikey: the connection settings of the knex instance are not an object or URL, so there is no LISTEN connection: changes made by other instances arrive every syncInterval')
      return
    }
    try {
      await this.#connect()
    } catch (err) {
      this.#warnDown(err as Error)
      this.#scheduleReconnect()
      return
    }
    // A change published between the first read of the state and LISTEN would otherwise wait for the periodic re-read.
    this.#options.onMessage({ kind: 'rotation' })
  }

  /**
   * Tells every instance, this one included, through the database. Never rejects: the change it announces is
   * already done, and the other instances still see it by their periodic re-read or cache expiry.
   */
  async publish (message: SyncMessage): Promise<void> {
    if (!this.#options.shared) {
      this.#options.onMessage(message)
      return
    }
    try {
      await this.#options.knex.raw('select pg_notify(?, ?)', [this.#channel, JSON.stringify(message)])
    } catch (err) {
      this.#options.log.error({ err, kind: message.kind }, 'fastify-simple-apikey: could not notify the other instances; they follow within syncInterval or the cache TTL')
    }
  }

  async close (): Promise<void> {
    this.#closed = true
    if (this.#tick !== null) clearInterval(this.#tick)
    if (this.#retry !== null) clearTimeout(this.#retry)
    const client = this.#client
    this.#client = null
    if (client !== null) await client.end().catch(() => {})
  }

  async #connect (): Promise<void> {
    const config = this.#options.connectionConfig!
    const client = new Client({
      ...(typeof config === 'string' ? { connectionString: config } : config as ClientConfig),
      // A connection that dies without a word (a dropped route) is noticed by TCP keepalive rather than never.
      keepAlive: true,
      fallback_application_name: 'fastify-simple-apikey listener'
    })
    client.on('error', err => this.#lost(client, err))
    client.on('end', () => this.#lost(client, null))
    client.on('notification', notification => this.#receive(notification))
    try {
      await client.connect()
      await client.query(`LISTEN ${client.escapeIdentifier(this.#channel)}`)
    } catch (err) {
      client.removeAllListeners('end')
      client.end().catch(() => {})
      throw err
    }
    if (this.#closed) {
      await client.end().catch(() => {})
      return
    }
    this.#client = client
    this.#backoff = 100
  }

  #receive (notification: Notification): void {
    if (notification.channel !== this.#channel || notification.payload === undefined) return
    let message: unknown
    try {
      message = JSON.parse(notification.payload)
    } catch {
      return
    }
    if (isMessage(message)) this.#options.onMessage(message)
  }

  #lost (client: Client, err: Error | null): void {
    if (this.#client !== client || this.#closed) return
    this.#client = null
    this.#options.log.warn({ err: err === null ? undefined : { message: err.message, code: (err as { code?: string }).code } },
      'fastify-simple-apikey: lost the notification connection; reconnecting, meanwhile changes arrive every syncInterval')
    client.end().catch(() => {})
    this.#scheduleReconnect()
  }

  #warnDown (err: Error): void {
    this.#options.log.warn({ err: { message: err.message, code: (err as { code?: string }).code } },
      'fastify-simple-apikey: the notification connection is down; retrying, meanwhile changes arrive every syncInterval')
  }

  #scheduleReconnect (): void {
    if (this.#closed) return
    this.#retry = setTimeout(() => {
      this.#retry = null
      this.#connect().then(() => {
        if (this.#closed) return
        this.#options.log.info('fastify-simple-apikey: notification connection restored')
        // Whatever was published while we were away is lost: re-read everything.
        this.#options.onMessage({ kind: 'resync' })
      }, err => {
        if (this.#closed) return
        this.#warnDown(err)
        this.#scheduleReconnect()
      })
    }, this.#backoff)
    this.#retry.unref()
    this.#backoff = Math.min(this.#backoff * 2, MAX_BACKOFF_MS)
  }
}

async function channelOf (knex: Knex, table: string): Promise<string> {
  const result = await knex.raw(`select coalesce(
      (select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = to_regclass(quote_ident(?))),
      current_schema()) as schema`, [table])
  const qualified = `${result.rows[0].schema}.${table}`
  const name = CHANNEL_PREFIX + qualified
  return Buffer.byteLength(name) <= MAX_CHANNEL_BYTES ? name : CHANNEL_PREFIX + createHash('sha256').update(qualified).digest('hex').slice(0, 40)
}

function isMessage (value: unknown): value is SyncMessage {
  if (value === null || typeof value !== 'object') return false
  const { kind, id } = value as { kind?: unknown, id?: unknown }
  if (kind === 'key') return typeof id === 'number' && Number.isSafeInteger(id) && id > 0
  return kind === 'rotation' || kind === 'resync'
}
