// How long a rotation start, a stop and a revocation on one instance take to show on another: `npx tsx bench/rotation-latency.ts`.
// Two instances (two Knex pools, two LISTEN connections) in this process, against the PostgreSQL of the tests.
import { Client } from 'pg'
import { cpus, loadavg } from 'node:os'
import { createTestDatabase, serverUrl } from '../test/helpers/database'
import { buildApp, auth, secretA, secretB } from '../test/helpers/app'
import { fingerprint } from '../index'

const ROUNDS = Number(process.env.ROUNDS ?? 50)

async function until (check: () => boolean | Promise<boolean>): Promise<number> {
  for (;;) {
    if (await check()) return performance.now()
    await new Promise(resolve => setImmediate(resolve))
  }
}

function describe (samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))].toFixed(1)
  return `median ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms`
}

async function main (): Promise<void> {
  const teardowns: Array<() => Promise<void> | void> = []
  const t = { teardown: (fn: () => Promise<void> | void) => { teardowns.push(fn) } }
  try {
    const db = await createTestDatabase(t, 'bench_latency')
    const one = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h', syncInterval: 60_000 })
    const two = await buildApp(t, db.connect(), { rotationFernetSecret: secretB, rotationPeriod: '1h', syncInterval: 60_000, migrate: false })
    // A bare listener on the plugin's channel stamps when each notification arrives.
    const observer = new Client({ connectionString: serverUrl })
    await observer.connect()
    t.teardown(() => observer.end())
    let notifiedAt = 0
    observer.on('notification', () => { notifiedAt = performance.now() })
    await observer.query(`LISTEN ${observer.escapeIdentifier(`simple_apikey:${db.schema}.api_keys`)}`)

    const endToEnd = { start: [] as number[], stop: [] as number[], revoke: [] as number[] }
    const afterNotify: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      let called = performance.now()
      const started = one.keyring.rotate()
      let followed = await until(() => two.keyring.current.encryptingFingerprint === fingerprint(secretB))
      await started
      endToEnd.start.push(followed - called)
      afterNotify.push(followed - notifiedAt)

      called = performance.now()
      const stopped = one.keyring.stopRotation()
      followed = await until(() => two.keyring.current.encryptingFingerprint === fingerprint(secretA))
      await stopped
      endToEnd.stop.push(followed - called)

      const { key, record } = await one.apiKeys.create({ entityId: 'bench' })
      await two.inject({ url: '/whoami', headers: auth(key) })
      called = performance.now()
      const revoked = one.apiKeys.revoke(record.id)
      followed = await until(async () => (await two.inject({ url: '/whoami', headers: auth(key) })).statusCode === 401)
      await revoked
      endToEnd.revoke.push(followed - called)
    }
    console.log(`${ROUNDS} rounds, load average ${loadavg()[0].toFixed(1)} on ${cpus().length} CPUs`)
    console.log(`start:  call on instance 1 -> instance 2 encrypts under B: ${describe(endToEnd.start)}`)
    console.log(`        notification seen by a bare listener -> instance 2 encrypts under B: ${describe(afterNotify)}`)
    console.log(`stop:   call on instance 1 -> instance 2 encrypts under A: ${describe(endToEnd.stop)}`)
    console.log(`revoke: call on instance 1 -> instance 2 refuses the cached key: ${describe(endToEnd.revoke)}`)
  } finally {
    for (const teardown of teardowns.reverse()) await teardown()
  }
}

main().catch(err => {
  console.error(err)
  process.exitCode = 1
})
