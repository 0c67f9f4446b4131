// The HTTP routes: rotation, key management and reissue under one prefix, with JSON schemas for OpenAPI.
import { isDeepStrictEqual } from 'node:util'
import type { FastifyInstance, FastifyRequest, preHandlerHookHandler, preValidationHookHandler, onRequestHookHandler } from 'fastify'
import type { ActionContext } from './audit'
import { InvalidInputError, UnknownKeyError } from './errors'

export interface RoutesOptions {
  /** Where the routes live. Default `/apikeys`. */
  prefix?: string
  /** Serve the admin page at `{prefix}/admin`. Default true. */
  admin?: boolean
  /** The app's own guard for the management routes, instead of an API key with the `apikeys:admin` scope. */
  preHandler?: preHandlerHookHandler
}

export const ADMIN_SCOPE = 'apikeys:admin'

const errorResponse = {
  type: 'object',
  properties: { statusCode: { type: 'integer' }, code: { type: 'string' }, error: { type: 'string' }, message: { type: 'string' } }
} as const

const stringList = { type: 'array', items: { type: 'string' } } as const

export const apiKeyRecordSchema = {
  $id: 'SimpleApiKeyRecord',
  type: 'object',
  properties: {
    id: { type: 'integer' },
    name: { type: 'string' },
    entityId: { type: 'string' },
    scopes: stringList,
    expiresAt: { type: 'string', format: 'date-time' },
    metadata: { type: 'object', additionalProperties: true },
    revoked: { type: 'boolean' },
    createdAt: { type: 'string', format: 'date-time' },
    whitelistedIps: stringList,
    blacklistedIps: stringList,
    lastUsedAt: { type: ['string', 'null'], format: 'date-time' }
  }
} as const

const { $id: recordSchemaId, ...inlineRecordSchema } = apiKeyRecordSchema

/**
 * The record schema as the routes refer to it. The app may hold the $id already: the plugin's own schema (from a
 * registration in a parent context, or added by the app for its routes) is shared; a different one is left alone
 * and the routes inline theirs.
 */
function recordSchemaOf (fastify: FastifyInstance): object {
  const existing = fastify.getSchema(recordSchemaId)
  if (existing === undefined) fastify.addSchema(apiKeyRecordSchema)
  else if (!isDeepStrictEqual(existing, apiKeyRecordSchema)) return inlineRecordSchema
  return { $ref: `${recordSchemaId}#` }
}

const issuedKeyOf = (record: object) => ({
  type: 'object',
  description: 'The key is in this response only: it is never stored and cannot be shown again.',
  properties: { key: { type: 'string' }, record }
})

// Fastify's default Ajv drops unknown fields silently; a typo such as `expires_at` must not create a key that lives a year.
function rejectUnknownFields (part: 'body' | 'query', schema: { properties: Record<string, unknown> }): preValidationHookHandler {
  const known = Object.keys(schema.properties)
  return async request => {
    const value: unknown = request[part]
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return
    const unknown = Object.keys(value).find(name => !known.includes(name))
    if (unknown !== undefined) {
      throw new InvalidInputError(part, `unknown field ${JSON.stringify(unknown.slice(0, 64))}; expected ${known.join(', ')}`)
    }
  }
}

const rotationStatus = {
  type: 'object',
  properties: {
    phase: { type: 'string', enum: ['idle', 'staged', 'transition', 'completed'] },
    rotation: {
      type: ['object', 'null'],
      properties: {
        id: { type: 'integer' },
        startedAt: { type: 'string', format: 'date-time' },
        endsAt: { type: ['string', 'null'], format: 'date-time' },
        fromFingerprint: { type: ['string', 'null'] },
        toFingerprint: { type: ['string', 'null'] }
      }
    },
    encryptingFingerprint: { type: 'string' },
    acceptedFingerprints: stringList,
    stagedFingerprint: { type: ['string', 'null'] },
    retiringFingerprint: { type: ['string', 'null'] },
    keysToRetire: { type: 'integer' }
  }
} as const

const keyUsage = {
  type: 'object',
  description: 'Counts written so far: each instance writes its counts every usage.flushInterval.',
  properties: {
    total: { type: 'integer' },
    lastUsedAt: { type: ['string', 'null'], format: 'date-time' },
    routes: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          method: { type: 'string' },
          route: { type: 'string' },
          count: { type: 'integer' },
          lastUsedAt: { type: 'string', format: 'date-time' }
        }
      }
    }
  }
} as const

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'integer', minimum: 1 } } } as const

const createBody = {
  type: 'object',
  required: ['entityId'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', maxLength: 255 },
    entityId: { type: 'string', minLength: 1 },
    expiresAt: { type: 'string', format: 'date-time' },
    scopes: stringList,
    whitelistedIps: stringList,
    blacklistedIps: stringList,
    metadata: { type: 'object', additionalProperties: true }
  }
} as const

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    entityId: { type: 'string' },
    revoked: { type: 'boolean' },
    expired: { type: 'boolean' },
    limit: { type: 'integer', minimum: 0, maximum: 1000, default: 100 },
    offset: { type: 'integer', minimum: 0, default: 0 }
  }
} as const

const revokeManyBody = {
  type: 'object',
  required: ['ids'],
  additionalProperties: false,
  properties: { ids: { type: 'array', minItems: 1, maxItems: 1000, items: { type: 'integer', minimum: 1 } } }
} as const

const rollBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { gracePeriod: { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'string', minLength: 1 }] } }
} as const

const errors = (...codes: number[]) => Object.fromEntries(codes.map(code => [code, errorResponse]))

export interface RoutesDeps {
  verifyApiKey: onRequestHookHandler
  /** Whether the plugin's global hook runs; when it does not, the routes verify keys themselves. */
  globalHook: boolean
  adminPage?: (fastify: FastifyInstance, prefix: string) => void
}

export function registerRoutes (fastify: FastifyInstance, options: RoutesOptions, deps: RoutesDeps): void {
  const prefix = options.prefix ?? '/apikeys'
  const record = recordSchemaOf(fastify)
  const issuedKey = issuedKeyOf(record)
  fastify.register(async routes => {
    // Answers carry keys (create, roll, reissue) and key lists: no cache may keep them.
    routes.addHook('onSend', async (request, reply) => {
      reply.header('cache-control', 'no-store')
    })
    const guard = options.preHandler
    // An unscoped key is unrestricted elsewhere, as in drf-simple-apikey, but managing keys needs the scope itself.
    const adminConfig = guard === undefined ? { apiKey: { scopes: [ADMIN_SCOPE], allowUnscoped: false } } : { apiKey: false as const }
    const admin = {
      config: adminConfig,
      ...(guard !== undefined ? { preHandler: guard } : deps.globalHook ? {} : { onRequest: deps.verifyApiKey })
    }
    const keyHolder = { config: { apiKey: {} }, ...(deps.globalHook ? {} : { onRequest: deps.verifyApiKey }) }
    const tags = ['API keys']

    routes.get('/rotation', {
      ...admin,
      schema: { tags, summary: 'Rotation status', response: { 200: rotationStatus, ...errors(401, 403) } }
    }, async () => routes.keyring.status())

    routes.post('/rotation', {
      ...admin,
      schema: { tags, summary: 'Start a rotation from FERNET_SECRET to ROTATION_FERNET_SECRET', response: { 200: rotationStatus, ...errors(401, 403, 409) } }
    }, async request => routes.keyring.rotate(actorOf(request)))

    routes.delete('/rotation', {
      ...admin,
      schema: { tags, summary: 'Stop the rotation in progress', response: { 200: rotationStatus, ...errors(401, 403, 409) } }
    }, async request => routes.keyring.stopRotation(actorOf(request)))

    routes.post('/reissue', {
      ...keyHolder,
      schema: {
        tags,
        summary: 'The calling key, re-issued under the current encrypting secret',
        response: { 200: issuedKey, ...errors(401, 403) }
      }
    }, async request => {
      const key = request.headers.authorization!.trim().split(/\s+/)[1]
      return routes.apiKeys.reissue(key, actorOf(request))
    })

    routes.post('/', {
      ...admin,
      preValidation: rejectUnknownFields('body', createBody),
      schema: {
        tags,
        summary: 'Create a key; the response is the only time it is shown',
        body: createBody,
        response: { 201: issuedKey, ...errors(400, 401, 403) }
      }
    }, async (request, reply) => {
      reply.code(201)
      return routes.apiKeys.create(request.body as Parameters<typeof routes.apiKeys.create>[0], actorOf(request))
    })

    routes.get('/', {
      ...admin,
      preValidation: rejectUnknownFields('query', listQuery),
      schema: {
        tags,
        summary: 'List keys',
        querystring: listQuery,
        response: { 200: { type: 'object', properties: { items: { type: 'array', items: record }, total: { type: 'integer' } } }, ...errors(400, 401, 403) }
      }
    }, async request => routes.apiKeys.list(request.query as Parameters<typeof routes.apiKeys.list>[0]))

    routes.post('/revoke', {
      ...admin,
      preValidation: rejectUnknownFields('body', revokeManyBody),
      schema: {
        tags,
        summary: 'Revoke many keys',
        body: revokeManyBody,
        response: { 200: { type: 'object', properties: { revoked: { type: 'array', items: { type: 'integer' } } } }, ...errors(400, 401, 403) }
      }
    }, async request => ({ revoked: await routes.apiKeys.revokeMany((request.body as { ids: number[] }).ids, actorOf(request)) }))

    routes.get('/:id', {
      ...admin,
      schema: { tags, summary: 'One key', params: idParams, response: { 200: record, ...errors(401, 403, 404) } }
    }, async request => {
      const { id } = request.params as { id: number }
      const found = await routes.apiKeys.get(id)
      if (found === null) throw new UnknownKeyError(id)
      return found
    })

    routes.get('/:id/usage', {
      ...admin,
      schema: { tags, summary: 'Requests per route and method, and the last use', params: idParams, response: { 200: keyUsage, ...errors(400, 401, 403, 404) } }
    }, async request => routes.apiKeys.usage((request.params as { id: number }).id))

    routes.post('/:id/revoke', {
      ...admin,
      schema: { tags, summary: 'Revoke a key', params: idParams, response: { 200: record, ...errors(401, 403, 404) } }
    }, async request => routes.apiKeys.revoke((request.params as { id: number }).id, actorOf(request)))

    routes.post('/:id/roll', {
      ...admin,
      preValidation: rejectUnknownFields('body', rollBody),
      schema: {
        tags,
        summary: 'A new value for a key; the old one works for the grace period',
        params: idParams,
        body: rollBody,
        response: { 200: issuedKey, ...errors(400, 401, 403, 404, 409) }
      }
    }, async request => {
      const body = (request.body ?? {}) as { gracePeriod?: number | string }
      return routes.apiKeys.roll((request.params as { id: number }).id, { gracePeriod: body.gracePeriod }, actorOf(request))
    })

    if (options.admin !== false) deps.adminPage?.(routes, prefix)
  }, { prefix })
}

function actorOf (request: FastifyRequest): ActionContext {
  return { actor: request.apiKey === null ? 'app' : `api-key:${request.apiKey.id}` }
}
