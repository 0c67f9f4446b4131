// The rows of `npm run bench`: what each server runs, which credentials it is driven with, and the targets its ratio must meet.

export type ServerKind = 'bare' | 'bearer-auth' | 'plugin'

/**
 * What the load generator sends: one valid key; many valid keys, each connection its own (so that no read is shared);
 * invalid keys, each connection retrying its own; or a stream of forged tokens too many for the plugin to remember any.
 */
export type Credentials = 'none' | 'valid' | 'many-valid' | 'invalid' | 'many-invalid'

export interface Target {
  /** Id of the row this one is compared with. */
  of: string
  /** Lowest acceptable ratio of this row's req/s to that row's; absent, the ratio is shown for reference only. */
  atLeast?: number
  label: string
}

export interface Scenario {
  /** Letter shown in the table, also the row's key in bench/results.json. */
  id: string
  title: string
  server: ServerKind
  credentials: Credentials
  /** Plugin options on top of the bench's own (database, secret); e.g. `{ cache: false }`. */
  pluginOptions?: Record<string, unknown>
  /** The row the ratio column is against; the bare route unless said otherwise. */
  baseline?: string
  targets?: Target[]
}

/** Valid keys of the 'many-valid' rows: 100 connections x 10 pipelined requests, each request in flight with a key of its own. */
export const MANY_KEYS = 1000
/** Invalid keys of the 'invalid' rows. */
export const INVALID_KEYS = 100
/** Forged tokens of the 'many-invalid' rows: four times the 1000 refusals the plugin remembers, so that every one costs a Fernet check. */
export const MANY_INVALID_KEYS = 4000

// Usage counting is off in the plugin rows that do not measure it, so that each row costs only what its title says.
export const scenarios: Scenario[] = [
  { id: 'a', title: 'bare route', server: 'bare', credentials: 'none' },
  { id: 'b', title: '@fastify/bearer-auth, valid key', server: 'bearer-auth', credentials: 'valid' },
  {
    id: 'c',
    title: 'plugin, valid key, warm cache',
    server: 'plugin',
    credentials: 'valid',
    pluginOptions: { usage: false },
    targets: [{ of: 'a', atLeast: 0.90, label: '>= 0.90 of bare' }, { of: 'b', atLeast: 0.95, label: 'within 5% of bearer-auth' }]
  },
  {
    id: 'd',
    title: 'plugin, valid keys, cache: false (every request reads its key; reads of one event-loop turn share a query)',
    server: 'plugin',
    credentials: 'many-valid',
    pluginOptions: { usage: false, cache: false },
    targets: [{ of: 'a', atLeast: 0.15, label: '>= 0.15 of bare' }]
  },
  {
    id: 'e',
    title: 'plugin, invalid keys (forged, each client retrying its own)',
    server: 'plugin',
    credentials: 'invalid',
    pluginOptions: { usage: false },
    targets: [{ of: 'f', atLeast: 0.90, label: '>= 0.90 of bearer-auth invalid' }]
  },
  {
    id: 'e2',
    title: 'plugin, forged tokens never seen recently (each costs a Fernet HMAC)',
    server: 'plugin',
    credentials: 'many-invalid',
    pluginOptions: { usage: false },
    targets: [{ of: 'f', label: 'bearer-auth invalid, for reference' }]
  },
  { id: 'f', title: '@fastify/bearer-auth, invalid key', server: 'bearer-auth', credentials: 'invalid' },
  {
    id: 'g',
    title: 'plugin, valid key, usage counting on',
    server: 'plugin',
    credentials: 'valid',
    pluginOptions: { usage: { flushInterval: 5000 } },
    targets: [{ of: 'c', atLeast: 0.95, label: 'within 5% of the same with usage: false' }]
  }
]

export function scenarioById (id: string): Scenario {
  const scenario = scenarios.find(candidate => candidate.id === id)
  if (scenario === undefined) throw new Error(`no bench scenario '${id}'`)
  return scenario
}
