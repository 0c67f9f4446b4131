import { test } from 'tap'
import { setTimeout as sleep, setImmediate as nextTurn } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretB } from './helpers/app'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

function heapAfterGc (): number {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

test('sustained mixed load across a rotation start and completion and a revoke: zero wrong answers, flat memory', async t => {
  const db = await createTestDatabase(t, 'load')
  const rotationPeriod = 2500
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod, syncInterval: 60_000 })
  const underA = await app.apiKeys.create({ entityId: 'a' })
  const revoked = await app.apiKeys.create({ entityId: 'r' })
  await app.apiKeys.revoke(revoked.record.id)

  interface Sample { key: string, started: number, ended: number, status: number, code?: string }
  const samples: Sample[] = []
  const keys: Record<string, string> = {
    underA: underA.key,
    revoked: revoked.key,
    invalid: 'gAAAAABnot-a-real-token-at-all-but-long-enough-to-look-like-one-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'
  }
  const load = { running: true }
  const worker = async () => {
    while (load.running) {
      for (const [name, key] of Object.entries(keys)) {
        const started = performance.now()
        const res = await app.inject({ url: '/whoami', headers: auth(key) })
        samples.push({ key: name, started, ended: performance.now(), status: res.statusCode, code: res.statusCode === 200 ? undefined : res.json().code })
      }
      await nextTurn()
    }
  }
  const workers = Array.from({ length: 8 }, worker)

  await sleep(700)
  const heapWarm = heapAfterGc()
  const status = await app.keyring.rotate()
  t.equal(status.phase, 'transition')
  const completesAt = performance.now() + (status.rotation!.endsAt!.getTime() - Date.now())
  keys.underB = (await app.apiKeys.create({ entityId: 'b' })).key
  keys.reissued = (await app.apiKeys.reissue(underA.key)).key
  // Made under the new secret, so that only its revocation decides its answers.
  const racing = await app.apiKeys.create({ entityId: 'race' })
  keys.racing = racing.key
  await sleep(600)
  await app.apiKeys.revoke(racing.record.id)
  const revokeReturned = performance.now()
  await sleep(rotationPeriod)
  t.equal(app.keyring.phase, 'completed', 'the rotation completed by the clock during the load')
  await sleep(600)
  load.running = false
  await Promise.all(workers)
  const heapEnd = heapAfterGc()

  // Requests in flight at the completion instant may see either secret set; everything else has one right answer.
  const slack = 100
  // A key under the old secret gets its usual answer until the completion, and FST_APIKEY_INVALID after it.
  const answeredAsRetired = (s: Sample, before: number | string) => {
    const usual = before === 200 ? s.status === 200 : s.code === before
    if (s.ended < completesAt - slack) return usual
    if (s.started > completesAt + slack) return s.code === 'FST_APIKEY_INVALID'
    return usual || s.code === 'FST_APIKEY_INVALID'
  }
  const wrong = samples.filter(s => {
    switch (s.key) {
      case 'underA':
        return !answeredAsRetired(s, 200)
      case 'underB':
      case 'reissued':
        return s.status !== 200
      case 'revoked':
        return !answeredAsRetired(s, 'FST_APIKEY_REVOKED')
      case 'invalid':
        return s.code !== 'FST_APIKEY_INVALID'
      case 'racing':
        if (s.started > revokeReturned) return s.code !== 'FST_APIKEY_REVOKED'
        return s.status !== 200 && s.code !== 'FST_APIKEY_REVOKED'
      default:
        return true
    }
  })
  t.ok(samples.length > 1000, `${samples.length} requests`)
  t.ok(samples.some(s => s.key === 'racing' && s.started > revokeReturned), 'requests raced the revoke')
  t.ok(samples.some(s => s.key === 'underA' && s.started > completesAt + slack), 'requests came after the completion')
  const firstRefused = samples.find(s => s.key === 'underA' && s.status === 401)
  t.comment(`underA first refused ${firstRefused === undefined ? 'never' : (firstRefused.started - completesAt).toFixed(0) + ' ms'} after the planned completion`)
  t.same(wrong.slice(0, 5), [], `zero wrong answers out of ${samples.length}`)
  const growth = (heapEnd - heapWarm) / 1024 / 1024
  t.ok(growth < 16, `heap after warm-up grew ${growth.toFixed(1)} MiB`)
})
