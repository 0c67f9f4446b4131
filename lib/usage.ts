// Usage counting: accepted requests per key, route pattern and method, counted in memory and written in batched upserts.
import type { Knex } from 'knex'
import type { FastifyBaseLogger } from 'fastify'
import type { Tables } from './migrations'
import type { Duration } from './duration'

export interface UsageOptions {
  /** How often the counts in memory are written: ms or a duration such as '5s'. Default 5000. */
  flushInterval?: Duration
}

export interface RouteUsage {
  method: string
  /** The route pattern, e.g. `/orders/:id`, or `UNMATCHED_ROUTE` for requests that matched no route. */
  route: string
  count: number
  lastUsedAt: Date
}

export interface KeyUsage {
  /** Requests counted for the key, all routes together. */
  total: number
  /** The key's last counted request, or null if none was counted yet. */
  lastUsedAt: Date | null
  /** Per route and method, the most used first. */
  routes: RouteUsage[]
}

/** The route under which requests that matched no route are counted, so that unknown URLs add one row per key, not one per URL. */
export const UNMATCHED_ROUTE = '(unmatched)'

// The usage table's column widths: a longer value is cut so that it fits and still counts.
const MAX_METHOD_LENGTH = 16
const MAX_ROUTE_LENGTH = 512
// Rows per transaction, so that a flush after a long outage is many bounded statements, not one huge one.
const ROWS_PER_BATCH = 1000
const ATTEMPTS = 3
// A key deleted while its counts were written (foreign key) or two instances locking in turn (deadlock): the next try succeeds.
const RETRIED_CODES = new Set(['23503', '40P01', '40001'])

interface Count {
  keyId: number
  method: string
  route: string
  count: number
  lastUsedAt: number
}

export interface UsageCounterDeps {
  knex: Knex
  tables: Tables
  log: FastifyBaseLogger
}

/**
 * Counts into a Map on the request path and writes on a timer, so that no request waits on the database.
 * A write that fails puts its counts back: they merge into the entries that came in meanwhile, so memory stays
 * bounded by keys × routes × methods however long the database is away.
 */
export class UsageCounter {
  readonly #deps: UsageCounterDeps
  #pending = new Map<string, Count>()
  #writing: Promise<void> = Promise.resolve()
  #busy = false
  readonly #timer: NodeJS.Timeout

  constructor (deps: UsageCounterDeps, flushInterval: number) {
    this.#deps = deps
    this.#timer = setInterval(() => {
      if (this.#busy || this.#pending.size === 0) return
      this.flush().catch(err => {
        this.#deps.log.error({ err, pendingRoutes: this.#pending.size }, 'fastify-simple-apikey: could not write usage counts; they are kept for the next try')
      })
    }, flushInterval)
    this.#timer.unref()
  }

  /** Counts one accepted request. `route` is the matched route pattern, undefined when none matched. */
  record (keyId: number, method: string, route: string | undefined): void {
    const pattern = route === undefined ? UNMATCHED_ROUTE : route.length > MAX_ROUTE_LENGTH ? route.slice(0, MAX_ROUTE_LENGTH) : route
    const verb = method.length > MAX_METHOD_LENGTH ? method.slice(0, MAX_METHOD_LENGTH) : method
    const id = `${keyId} ${verb} ${pattern}`
    const now = Date.now()
    const counted = this.#pending.get(id)
    if (counted === undefined) {
      this.#pending.set(id, { keyId, method: verb, route: pattern, count: 1, lastUsedAt: now })
    } else {
      counted.count++
      if (now > counted.lastUsedAt) counted.lastUsedAt = now
    }
  }

  /** Writes the counts taken so far; a flush asked for during another waits for it, then writes what came in meanwhile. */
  flush (): Promise<void> {
    const written = this.#writing.then(() => this.#write())
    this.#writing = written.catch(() => {})
    return written
  }

  /** Stops the timer and writes what is left; a failure is logged, since closing must go on. */
  async close (): Promise<void> {
    clearInterval(this.#timer)
    try {
      await this.flush()
    } catch (err) {
      const lost = [...this.#pending.values()].reduce((sum, counted) => sum + counted.count, 0)
      this.#deps.log.error({ err, lostRequests: lost }, 'fastify-simple-apikey: could not write the last usage counts on close')
    }
  }

  async #write (): Promise<void> {
    if (this.#pending.size === 0) return
    const taken = this.#pending
    this.#pending = new Map()
    this.#busy = true
    // Sorted, so that instances writing the same rows lock them in the same order.
    const counts = [...taken.values()].sort(byRow)
    let done = 0
    try {
      for (; done < counts.length; done += ROWS_PER_BATCH) {
        await this.#writeBatch(counts.slice(done, done + ROWS_PER_BATCH))
      }
    } catch (err) {
      for (const counted of counts.slice(done)) this.#putBack(counted)
      throw err
    } finally {
      this.#busy = false
    }
  }

  async #writeBatch (counts: Count[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#upsert(counts)
        return
      } catch (err) {
        if (attempt >= ATTEMPTS || !RETRIED_CODES.has((err as { code?: string }).code ?? '')) throw err
      }
    }
  }

  async #upsert (counts: Count[]): Promise<void> {
    const { knex, tables } = this.#deps
    const rows = counts.map(counted => ({
      key_id: counted.keyId,
      method: counted.method,
      route: counted.route,
      count: counted.count,
      last_used_at: new Date(counted.lastUsedAt).toISOString()
    }))
    const lastUsed = new Map<number, number>()
    for (const counted of counts) lastUsed.set(counted.keyId, Math.max(lastUsed.get(counted.keyId) ?? 0, counted.lastUsedAt))
    const keys = [...lastUsed].sort((a, b) => a[0] - b[0]).map(([id, at]) => ({ key_id: id, last_used_at: new Date(at).toISOString() }))

    await knex.transaction(async trx => {
      // The join leaves out keys deleted since they were counted: their counts go with them.
      await trx.raw(`
        INSERT INTO ?? AS u (key_id, method, route, count, last_used_at)
        SELECT v.key_id, v.method, v.route, v.count, v.last_used_at
        FROM jsonb_to_recordset(?::jsonb) AS v(key_id bigint, method text, route text, count bigint, last_used_at timestamptz)
        JOIN ?? AS k ON k.id = v.key_id
        ORDER BY v.key_id, v.method, v.route
        ON CONFLICT (key_id, method, route) DO UPDATE
        SET count = u.count + excluded.count, last_used_at = greatest(u.last_used_at, excluded.last_used_at)`,
      [tables.usage, JSON.stringify(rows), tables.keys])
      await trx.raw(`
        WITH v AS (SELECT * FROM jsonb_to_recordset(?::jsonb) AS v(key_id bigint, last_used_at timestamptz)),
        locked AS (
          SELECT k.id, v.last_used_at FROM ?? AS k JOIN v ON k.id = v.key_id
          WHERE k.last_used_at IS NULL OR k.last_used_at < v.last_used_at
          ORDER BY k.id FOR NO KEY UPDATE OF k
        )
        UPDATE ?? AS k SET last_used_at = greatest(k.last_used_at, locked.last_used_at) FROM locked WHERE k.id = locked.id`,
      [JSON.stringify(keys), tables.keys, tables.keys])
    })
  }

  #putBack (counted: Count): void {
    const id = `${counted.keyId} ${counted.method} ${counted.route}`
    const newer = this.#pending.get(id)
    if (newer === undefined) {
      this.#pending.set(id, counted)
    } else {
      newer.count += counted.count
      newer.lastUsedAt = Math.max(newer.lastUsedAt, counted.lastUsedAt)
    }
  }
}

function byRow (a: Count, b: Count): number {
  return a.keyId - b.keyId || compare(a.method, b.method) || compare(a.route, b.route)
}

// Byte order, as PostgreSQL's "C" collation would; the exact order matters less than every instance using the same one.
function compare (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** The counts written so far for a key, or null when there is no such key. */
export async function readUsage (knex: Knex, tables: Tables, id: number): Promise<KeyUsage | null> {
  const [key, rows] = await Promise.all([
    knex(tables.keys).select('last_used_at').where({ id }).first(),
    knex(tables.usage).select('method', 'route', 'count', 'last_used_at').where({ key_id: id })
      .orderBy([{ column: 'count', order: 'desc' }, { column: 'method' }, { column: 'route' }])
  ])
  if (key === undefined) return null
  const routes: RouteUsage[] = rows.map((row: { method: string, route: string, count: string | number, last_used_at: Date | string }) => ({
    method: row.method,
    route: row.route,
    count: Number(row.count),
    lastUsedAt: new Date(row.last_used_at)
  }))
  return {
    total: routes.reduce((sum, route) => sum + route.count, 0),
    lastUsedAt: key.last_used_at == null ? null : new Date(key.last_used_at),
    routes
  }
}
