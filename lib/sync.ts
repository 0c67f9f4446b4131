// Cross-instance notifications: PostgreSQL LISTEN/NOTIFY on a dedicated, self-reconnecting connection.
import { Client, type ClientConfig } from 'pg'
import type { Knex } from 'knex'
import type { FastifyBaseLogger } from 'fastify'

export type SyncMessage = { kind: 'key', id: number } | { kind: 'rotation' } | { kind: 'resync' }

export interface SyncOptions {
  knex: Knex
  /** Settings for the dedicated LISTEN connection; null on the embedded database, where only this process exists. */
  connectionConfig: string | Knex.PgConnectionConfig | null
  channel: string
  log: FastifyBaseLogger
  onMessage: (message: SyncMessage) => void
}

const MAX_BACKOFF_MS = 5_000

export class Sync {
  readonly #options: SyncOptions
  #client: Client | null = null
  #closed = false
  #backoff = 100
  #retry: NodeJS.Timeout | null = null

  constructor (options: SyncOptions) {
    this.#options = options
  }

  get listening (): boolean {
    return this.#client !== null
  }

  async start (): Promise<void> {
    if (this.#options.connectionConfig === null) return
    await this.#connect()
  }

  /** Tells every instance, this one included, through the database. */
  async publish (message: SyncMessage): Promise<void> {
    if (this.#options.connectionConfig === null) {
      this.#options.onMessage(message)
      return
    }
    await this.#options.knex.raw('select pg_notify(?, ?)', [this.#options.channel, JSON.stringify(message)])
  }

  async close (): Promise<void> {
    this.#closed = true
    if (this.#retry !== null) clearTimeout(this.#retry)
    const client = this.#client
    this.#client = null
    if (client !== null) await client.end().catch(() => {})
  }

  async #connect (): Promise<void> {
    const config = this.#options.connectionConfig!
    const client = new Client(typeof config === 'string' ? { connectionString: config } : config as ClientConfig)
    client.on('error', err => this.#lost(client, err))
    client.on('end', () => this.#lost(client, null))
    client.on('notification', notification => {
      if (notification.channel !== this.#options.channel || notification.payload === undefined) return
      let message: SyncMessage
      try {
        message = JSON.parse(notification.payload)
      } catch {
        return
      }
      this.#options.onMessage(message)
    })
    try {
      await client.connect()
      await client.query(`LISTEN ${client.escapeIdentifier(this.#options.channel)}`)
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

  #lost (client: Client, err: Error | null): void {
    if (this.#client !== client || this.#closed) return
    this.#client = null
    this.#options.log.warn({ err }, 'fastify-simple-apikey: lost the notification connection; reconnecting')
    client.end().catch(() => {})
    this.#scheduleReconnect()
  }

  #scheduleReconnect (): void {
    this.#retry = setTimeout(() => {
      this.#retry = null
      this.#connect().then(() => {
        this.#options.log.info('fastify-simple-apikey: notification connection restored')
        // Whatever was published while we were away is lost: re-read everything.
        this.#options.onMessage({ kind: 'resync' })
      }, err => {
        if (this.#closed) return
        this.#options.log.warn({ err: { message: err.message, code: err.code } }, 'fastify-simple-apikey: notification connection still down')
        this.#scheduleReconnect()
      })
    }, this.#backoff)
    this.#retry.unref()
    this.#backoff = Math.min(this.#backoff * 2, MAX_BACKOFF_MS)
  }
}
