// Per-key rate limits: options for @fastify/rate-limit that count per verified key and read the key's limit from its metadata.
import type { FastifyRequest } from 'fastify'
import { toMilliseconds, type Duration } from './duration'
import { InvalidOptionError } from './errors'

export interface RateLimitByKeyOptions {
  /** Requests per window for a key whose metadata sets no `rateLimit.max`, and for requests without a key (per IP). Default 1000. */
  defaultMax?: number
  /** The window when the key's metadata sets no `rateLimit.timeWindow`: ms or a duration such as '1 minute'. Default '1 minute'. */
  defaultTimeWindow?: Duration
  /** The hook the limiter runs in: 'onRequest' after the plugin's global hook, 'preHandler' after `@fastify/auth`. Default 'onRequest'. */
  hook?: 'onRequest' | 'preHandler'
}

/** Options to spread into `@fastify/rate-limit`'s registration. */
export interface RateLimitByKeyConfig {
  hook: 'onRequest' | 'preHandler'
  /** `apikey:<id>` for a verified key, so that a key's limit follows it across addresses; the IP otherwise. */
  keyGenerator: (request: FastifyRequest) => string
  max: (request: FastifyRequest, key: string) => number
  timeWindow: (request: FastifyRequest, key: string) => number
}

/** What a key's metadata may hold: `{ "rateLimit": { "max": 100, "timeWindow": "1 minute" } }`. */
export interface KeyRateLimit {
  max?: number
  timeWindow?: Duration
}

/**
 * Options for `@fastify/rate-limit` that limit each API key by the `rateLimit` in its metadata. The plugin's hook
 * verifies the key before the limiter runs, so a rejected key never reaches the limiter and uses no one's quota.
 * A value in the metadata that is not a valid limit is ignored in favour of the default, so a typo in one key's
 * metadata never fails its requests.
 */
export function rateLimitByKey (options: RateLimitByKeyOptions = {}): RateLimitByKeyConfig {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('rateLimitByKey', 'expected an object')
  const defaultMax = options.defaultMax ?? 1000
  if (!isMax(defaultMax)) throw new InvalidOptionError('rateLimitByKey.defaultMax', 'expected a whole number from 0')
  const defaultTimeWindow = toWindow(options.defaultTimeWindow ?? '1 minute')
  if (defaultTimeWindow === undefined) throw new InvalidOptionError('rateLimitByKey.defaultTimeWindow', 'expected milliseconds above 0 or a duration such as \'1 minute\'')
  const hook = options.hook ?? 'onRequest'
  if (hook !== 'onRequest' && hook !== 'preHandler') throw new InvalidOptionError('rateLimitByKey.hook', 'expected \'onRequest\' or \'preHandler\'')

  return {
    hook,
    keyGenerator: request => request.apiKey == null ? request.ip : `apikey:${request.apiKey.id}`,
    max: request => {
      const max = limitOf(request)?.max
      return isMax(max) ? max : defaultMax
    },
    timeWindow: request => toWindow(limitOf(request)?.timeWindow) ?? defaultTimeWindow
  }
}

function limitOf (request: FastifyRequest): KeyRateLimit | undefined {
  const limit = request.apiKey?.metadata.rateLimit
  return limit !== null && typeof limit === 'object' ? limit as KeyRateLimit : undefined
}

function isMax (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function toWindow (value: unknown): number | undefined {
  const ms = toMilliseconds(value)
  return ms !== undefined && ms >= 1 ? Math.trunc(ms) : undefined
}
