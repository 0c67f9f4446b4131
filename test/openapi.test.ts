import { test, type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import swagger from '@fastify/swagger'
import { createTestDatabase } from './helpers/database'
import { auth, secretA, secretB } from './helpers/app'
import simpleApiKey from '../index'
import { apiKeyRecordSchema } from '../lib/routes'

type Json = Record<string, any>

const operations = [
  ['get', '/'], ['post', '/'], ['post', '/revoke'], ['get', '/{id}'], ['get', '/{id}/usage'], ['post', '/{id}/revoke'], ['post', '/{id}/roll'],
  ['get', '/rotation'], ['post', '/rotation'], ['delete', '/rotation'], ['post', '/reissue']
] as const
const withBody = ['post /', 'post /revoke', 'post /{id}/roll']
const recordFields = ['id', 'name', 'entityId', 'scopes', 'expiresAt', 'metadata', 'revoked', 'createdAt', 'whitelistedIps', 'blacklistedIps', 'lastUsedAt']

/** Every `$ref` in the document, each resolved as a JSON pointer into the document; unresolved ones are reported. */
function unresolvedRefs (doc: Json): string[] {
  const missing: string[] = []
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit)
    if (node === null || typeof node !== 'object') return
    for (const [name, value] of Object.entries(node)) {
      if (name === '$ref') {
        if (typeof value !== 'string' || !value.startsWith('#/') || resolve(doc, value) === undefined) missing.push(String(value))
      } else {
        visit(value)
      }
    }
  }
  visit(doc)
  return missing
}

function resolve (doc: Json, ref: string): Json | undefined {
  return ref.slice(2).split('/').reduce<Json | undefined>((node, part) => node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], doc)
}

function schemaOf (doc: Json, schema: Json): Json {
  return typeof schema.$ref === 'string' ? resolve(doc, schema.$ref)! : schema
}

async function swaggerApp (t: Test, setup: (app: FastifyInstance) => Promise<void> | void, swaggerOptions: Json = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(swagger, { openapi: { info: { title: 'test', version: '1.0.0' } }, ...swaggerOptions })
  await setup(app)
  await app.ready()
  t.teardown(() => app.close())
  return app
}

function checkDocument (t: Test, doc: Json, prefix: string): void {
  t.equal(doc.openapi.startsWith('3.'), true, 'an OpenAPI 3 document')
  t.same(unresolvedRefs(doc), [], 'every $ref resolves inside the document')
  for (const [method, path] of operations) {
    const name = `${method.toUpperCase()} ${prefix}${path}`
    const operation = doc.paths[`${prefix}${path}`]?.[method]
    if (operation === undefined) {
      t.fail(`${name} is documented`)
      continue
    }
    t.ok(operation.summary, `${name}: a summary`)
    t.same(operation.tags, ['API keys'], `${name}: tagged`)
    const success = operation.responses['200'] ?? operation.responses['201']
    t.ok(success?.content?.['application/json']?.schema, `${name}: a success response schema`)
    const unauthorized = schemaOf(doc, operation.responses['401']?.content?.['application/json']?.schema ?? {})
    t.same(Object.keys(unauthorized.properties ?? {}).sort(), ['code', 'error', 'message', 'statusCode'], `${name}: the 401 error shape`)
    if (withBody.includes(`${method} ${path}`)) t.ok(operation.requestBody?.content?.['application/json']?.schema?.properties, `${name}: a request body schema`)
    if (path.includes('{id}')) {
      t.match(operation.parameters, [{ in: 'path', name: 'id', required: true, schema: { type: 'integer', minimum: 1 } }], `${name}: the id parameter`)
    }
  }
  t.notOk(doc.paths[`${prefix}/admin`], 'the admin page is not an API operation')
}

test('@fastify/swagger documents every route, request and response', async t => {
  const db = await createTestDatabase(t, 'openapi')
  const app = await swaggerApp(t, async app => {
    await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, rotationFernetSecret: secretB, migrate: true })
  })
  const doc = app.swagger() as Json
  checkDocument(t, doc, '/apikeys')

  const created = doc.paths['/apikeys/'].post
  const body = created.requestBody.content['application/json'].schema
  t.same(body.required, ['entityId'])
  t.same(Object.keys(body.properties), ['name', 'entityId', 'expiresAt', 'scopes', 'whitelistedIps', 'blacklistedIps', 'metadata'])
  const issued = created.responses['201'].content['application/json'].schema
  t.match(issued.description, /in this response only/)
  t.same(Object.keys(issued.properties), ['key', 'record'])
  const record = schemaOf(doc, issued.properties.record)
  t.equal(record.title, 'SimpleApiKeyRecord', 'the record is a shared component')
  t.same(Object.keys(record.properties), recordFields)
  t.same(record.properties.lastUsedAt, { type: 'string', format: 'date-time', nullable: true }, 'null types become OpenAPI 3.0 nullable')
  t.same(doc.paths['/apikeys/{id}'].get.responses['200'].content['application/json'].schema, issued.properties.record, 'GET /{id} answers the same component')
  t.equal(Object.values(doc.components.schemas).filter((schema: any) => schema.title === 'SimpleApiKeyRecord').length, 1, 'one record component')

  const listed = doc.paths['/apikeys/'].get
  t.same(listed.parameters.map((parameter: Json) => [parameter.in, parameter.name]).sort(),
    [['query', 'entityId'], ['query', 'expired'], ['query', 'limit'], ['query', 'offset'], ['query', 'revoked']])
  const page = listed.responses['200'].content['application/json'].schema
  t.same(schemaOf(doc, page.properties.items.items).title, 'SimpleApiKeyRecord')
  t.same(doc.paths['/apikeys/revoke'].post.requestBody.content['application/json'].schema.required, ['ids'])
  t.match(doc.paths['/apikeys/{id}/roll'].post.requestBody.content['application/json'].schema.properties, { gracePeriod: { anyOf: [{ type: 'integer' }, { type: 'string' }] } })
  const rotation = doc.paths['/apikeys/rotation']
  t.same(Object.keys(rotation.get.responses['200'].content['application/json'].schema.properties),
    ['phase', 'rotation', 'encryptingFingerprint', 'acceptedFingerprints', 'stagedFingerprint', 'retiringFingerprint', 'keysToRetire'])
  t.ok(rotation.post.responses['409'], 'starting a rotation documents its conflict')
  t.ok(rotation.delete.responses['409'])
  t.same(schemaOf(doc, doc.paths['/apikeys/{id}/usage'].get.responses['200'].content['application/json'].schema).properties.routes.type, 'array')

  // The document describes what the routes answer: a real answer has exactly the record's fields.
  const admin = await app.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })
  const res = await app.inject({ url: `/apikeys/${admin.record.id}`, headers: auth(admin.key) })
  t.same(Object.keys(res.json()), recordFields)
})

test('the component takes its $id as name with the usual buildLocalReference', async t => {
  const db = await createTestDatabase(t, 'openapi_named')
  const app = await swaggerApp(t, async app => {
    await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, migrate: true })
  }, { refResolver: { buildLocalReference: (json: Json, baseUri: unknown, fragment: unknown, i: number) => json.$id ?? `def-${i}` } })
  const doc = app.swagger() as Json
  t.same(doc.paths['/apikeys/{id}'].get.responses['200'].content['application/json'].schema, { $ref: '#/components/schemas/SimpleApiKeyRecord' })
  t.same(unresolvedRefs(doc), [])
})

test('registered in two encapsulation contexts: both documented, both serve records', async t => {
  const db = await createTestDatabase(t, 'openapi_twice')
  const app = await swaggerApp(t, async app => {
    app.register(async tenant => {
      await tenant.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, migrate: true, routes: { prefix: '/a/apikeys' } })
      tenant.get('/a/whoami', async request => request.apiKey)
    })
    app.register(async tenant => {
      await tenant.register(simpleApiKey, { knex: db.connect(), fernetSecret: secretB, routes: { prefix: '/b/apikeys' } })
      tenant.get('/b/whoami', async request => request.apiKey)
    })
  })
  const doc = app.swagger() as Json
  checkDocument(t, doc, '/a/apikeys')
  checkDocument(t, doc, '/b/apikeys')
  const a = await app.inject({ url: '/a/apikeys/rotation' })
  t.equal(a.statusCode, 401, 'each context guards its routes')
})

test('an app that already holds the $id SimpleApiKeyRecord', async t => {
  const db = await createTestDatabase(t, 'openapi_taken')

  const other = await swaggerApp(t, async app => {
    app.addSchema({ $id: 'SimpleApiKeyRecord', type: 'object', properties: { sku: { type: 'string' } } })
    await app.register(simpleApiKey, { knex: db.knex, fernetSecret: secretA, migrate: true })
  })
  const admin = await other.apiKeys.create({ entityId: 'ops', scopes: ['apikeys:admin'] })
  const res = await other.inject({ url: `/apikeys/${admin.record.id}`, headers: auth(admin.key) })
  t.equal(res.statusCode, 200, 'the plugin registers next to the app\'s own schema of that name')
  t.same(Object.keys(res.json()), recordFields, 'and answers its own record, not the app\'s shape')
  t.same(other.getSchema('SimpleApiKeyRecord'), { $id: 'SimpleApiKeyRecord', type: 'object', properties: { sku: { type: 'string' } } }, 'the app\'s schema is left alone')
  const doc = other.swagger() as Json
  t.same(unresolvedRefs(doc), [])
  t.same(Object.keys(schemaOf(doc, doc.paths['/apikeys/{id}'].get.responses['200'].content['application/json'].schema).properties), recordFields)

  const same = await swaggerApp(t, async app => {
    app.addSchema(apiKeyRecordSchema)
    app.get('/mine', { schema: { response: { 200: { $ref: 'SimpleApiKeyRecord#' } } } }, async () => ({ id: 1, name: 'n', entityId: 'e', revoked: false }))
    await app.register(simpleApiKey, { knex: db.connect(), fernetSecret: secretA })
  })
  const sameDoc = same.swagger() as Json
  t.same(unresolvedRefs(sameDoc), [])
  t.equal(Object.values(sameDoc.components.schemas).filter((schema: any) => schema.title === 'SimpleApiKeyRecord').length, 1, 'the plugin\'s own schema, added by the app for its routes, is shared')
})
