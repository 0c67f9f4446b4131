import { test } from 'tap'
import { setTimeout as sleep, setImmediate as nextTurn } from 'node:timers/promises'
import { createTestDatabase } from './helpers/database'
import { connectThroughProxy } from './helpers/proxy'
import { buildApp, auth } from './helpers/app'

test('PostgreSQL lost mid-load: uncached keys get 503, cached ones work until their TTL, all recovers without a restart', async t => {
  const db = await createTestDatabase(t, 'faults')
  const { proxy, knex } = await connectThroughProxy(t, db.url, { max: 6, acquireConnectionTimeout: 800 })
  const cacheTtl = 2500
  const app = await buildApp(t, knex, { cache: { ttl: cacheTtl }, syncInterval: 60_000 })
  const warm = await app.apiKeys.create({ entityId: 'warm' })
  const cold = await app.apiKeys.create({ entityId: 'cold' })
  t.equal((await app.inject({ url: '/whoami', headers: auth(warm.key) })).statusCode, 200)

  const seen: Array<{ phase: string, key: string, status: number, code?: string }> = []
  let phase = 'before'
  const load = { running: true }
  const worker = async () => {
    while (load.running) {
      for (const [name, key] of [['warm', warm.key], ['cold', cold.key]]) {
        const at = phase
        // The cold key is first used once the database is gone, so that no cache holds it.
        if (name === 'cold' && at === 'before') continue
        const res = await app.inject({ url: '/whoami', headers: auth(key) })
        seen.push({ phase: at, key: name, status: res.statusCode, code: res.statusCode === 200 ? undefined : res.json().code })
      }
      // Cached answers settle without I/O; without a turn of the event loop the test's own timers would never fire.
      await nextTurn()
    }
  }
  const workers = Array.from({ length: 4 }, worker)
  await sleep(300)
  proxy.cut()
  const cutAt = Date.now()
  phase = 'cut'
  await sleep(cacheTtl - 800)
  phase = 'cut, after TTL'
  await sleep(1500)
  proxy.restore()
  phase = 'restoring'
  await sleep(1200)
  phase = 'restored'
  await sleep(800)
  load.running = false
  await Promise.all(workers)
  t.ok(Date.now() - cutAt > cacheTtl, 'the outage outlived the cache TTL')

  const count = (filter: (s: typeof seen[number]) => boolean) => seen.filter(filter).length
  t.ok(seen.length > 200, `${seen.length} requests`)
  t.equal(count(s => s.status >= 500 && s.status !== 503), 0, 'never a 500')
  t.equal(count(s => s.status !== 200 && s.status !== 503), 0, 'nothing but 200 and 503')
  t.equal(count(s => s.phase === 'before' && s.status !== 200), 0, 'before the outage: all 200')
  t.ok(count(s => s.phase === 'cut' && s.key === 'cold') > 0)
  t.equal(count(s => s.phase === 'cut' && s.key === 'cold' && s.status !== 503), 0, 'uncached key during the outage: 503, never let through')
  t.equal(count(s => s.phase === 'cut' && s.key === 'cold' && s.code !== 'FST_APIKEY_UNAVAILABLE'), 0, 'with FST_APIKEY_UNAVAILABLE')
  t.ok(count(s => s.phase === 'cut' && s.key === 'warm') > 0)
  t.equal(count(s => s.phase === 'cut' && s.key === 'warm' && s.status !== 200), 0, 'cached key during the outage, within its TTL: 200')
  t.ok(count(s => s.phase === 'cut, after TTL' && s.key === 'warm' && s.status === 503) > 0, 'cached key after its TTL: read again, so 503')
  t.equal(count(s => s.phase === 'restored' && s.status !== 200), 0, 'after the database returns: all 200, no restart')
})

test('the notification listener reconnects after the database comes back', async t => {
  const db = await createTestDatabase(t, 'relisten')
  const { proxy, knex } = await connectThroughProxy(t, db.url, { max: 4, acquireConnectionTimeout: 800 })
  // Periodic re-reads and cache expiry are both far away: only a notification can bring the revoke in time.
  const follower = await buildApp(t, knex, { cache: { ttl: 600_000 }, syncInterval: 600_000 })
  const leader = await buildApp(t, db.connect(), { migrate: false })
  const { key, record } = await leader.apiKeys.create({ entityId: 'e' })

  proxy.cut()
  await sleep(1500)
  proxy.restore()
  // The listener retries with a backoff of at most 5 s.
  await sleep(6000)
  t.equal((await follower.inject({ url: '/whoami', headers: auth(key) })).statusCode, 200, 'key verified and cached by the follower')
  await leader.apiKeys.revoke(record.id)
  const revokedAt = Date.now()
  let status = 200
  while (status === 200 && Date.now() - revokedAt < 3000) {
    await sleep(50)
    status = (await follower.inject({ url: '/whoami', headers: auth(key) })).statusCode
  }
  const lag = Date.now() - revokedAt
  t.equal(status, 401, 'the follower refuses the revoked key')
  t.ok(lag <= 1000, `within the 1 s bound after reconnecting (${lag} ms)`)
})
