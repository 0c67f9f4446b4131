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

type Pending = Map<number, Map<string, Map<string, Count>>>

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
  // Key id, then route, then method: lookups by strings Fastify already holds, so no string is built per request.
  #pending: Pending = new Map()
  #pendingRoutes = 0
  #writing: Promise<void> = Promise.resolve()
  #busy = false
  readonly #timer: NodeJS.Timeout

  constructor (deps: UsageCounterDeps, flushInterval: number) {
    this.#deps = deps
    this.#timer = setInterval(() => {
      if (this.#busy || this.#pendingRoutes === 0) return
      this.flush().catch(err => {
        this.#deps.log.error({ err, pendingRoutes: this.#pendingRoutes }, 'fastify-simple-apikey: could not write usage counts; they are kept for the next try')
      })
    }, flushInterval)
    this.#timer.unref()
  }

  /** Counts one accepted request. `route` is the matched route pattern, undefined when none matched. */
  record (keyId: number, method: string, route: string | undefined): void {
    const now = Date.now()
    const counted = this.#pending.get(keyId)?.get(route ?? UNMATCHED_ROUTE)?.get(method)
    if (counted === undefined) {
      this.#add({ keyId, method, route: route ?? UNMATCHED_ROUTE, count: 1, lastUsedAt: now })
    } else {
      counted.count++
      if (now > counted.lastUsedAt) counted.lastUsedAt = now
    }
  }

  /** Adds a count to the pending ones, merging it with the count for the same row if there is one. */
  #add (count: Count): void {
    let byRoute = this.#pending.get(count.keyId)
    if (byRoute === undefined) this.#pending.set(count.keyId, byRoute = new Map())
    let byMethod = byRoute.get(count.route)
    if (byMethod === undefined) byRoute.set(count.route, byMethod = new Map())
    const existing = byMethod.get(count.method)
    if (existing === undefined) {
      byMethod.set(count.method, count)
      this.#pendingRoutes++
    } else {
      existing.count += count.count
      existing.lastUsedAt = Math.max(existing.lastUsedAt, count.lastUsedAt)
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
      const lost = countsOf(this.#pending).reduce((sum, counted) => sum + counted.count, 0)
      this.#deps.log.error({ err, lostRequests: lost }, 'fastify-simple-apikey: could not write the last usage counts on close')
    }
  }

  async #write (): Promise<void> {
    if (this.#pendingRoutes === 0) return
    const taken = this.#pending
    this.#pending = new Map()
    this.#pendingRoutes = 0
    this.#busy = true
    // Sorted, so that instances writing the same rows lock them in the same order.
    const counts = rowsOf(taken).sort(byRow)
    let done = 0
    try {
      for (; done < counts.length; done += ROWS_PER_BATCH) {
        await this.#writeBatch(counts.slice(done, done + ROWS_PER_BATCH))
      }
    } catch (err) {
      for (const counted of counts.slice(done)) this.#add(counted)
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
}

function countsOf (pending: Pending): Count[] {
  const counts: Count[] = []
  for (const byRoute of pending.values()) {
    for (const byMethod of byRoute.values()) counts.push(...byMethod.values())
  }
  return counts
}

/** The counts as rows that fit the table's columns; cutting a too long route or method can make two counts one row. */
function rowsOf (pending: Pending): Count[] {
  const rows = new Map<string, Count>()
  for (const counted of countsOf(pending)) {
    const method = fit(counted.method, MAX_METHOD_LENGTH)
    const route = fit(counted.route, MAX_ROUTE_LENGTH)
    const id = `${counted.keyId} ${method} ${route}`
    const row = rows.get(id)
    if (row === undefined) rows.set(id, { ...counted, method, route })
    else {
      row.count += counted.count
      row.lastUsedAt = Math.max(row.lastUsedAt, counted.lastUsedAt)
    }
  }
  return [...rows.values()]
}

// By characters, as PostgreSQL counts them: a cut through a surrogate pair would make JSON that PostgreSQL refuses.
function fit (value: string, characters: number): string {
  return value.length <= characters ? value : Array.from(value).slice(0, characters).join('')
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
