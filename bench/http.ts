// `npm run bench`: every row of bench/scenarios.ts driven by autocannon in interleaved rounds; prints the table and writes bench/results.json.
import { fork, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { cpus, totalmem, platform, release } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import autocannon from 'autocannon'
import knexFactory from 'knex'
import { fernet, migrate } from '../index'
import { scenarios, type Scenario } from './scenarios'
import type { ReadyMessage, StatsMessage } from './server'

const settings = {
  /** Seconds each row is driven per round. */
  duration: Number(process.env.BENCH_DURATION ?? 2),
  rounds: Number(process.env.BENCH_ROUNDS ?? 10),
  /** Seconds each row is driven once before the measured rounds: JIT, pools, and the cache of the warm row. */
  warmup: Number(process.env.BENCH_WARMUP ?? 2),
  connections: Number(process.env.BENCH_CONNECTIONS ?? 100),
  pipelining: Number(process.env.BENCH_PIPELINING ?? 10)
}
const databaseUrl = process.env.BENCH_DATABASE_URL ?? process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const only = process.env.BENCH_ONLY?.split(',')
// A folder to write each server's V8 CPU profile to, for finding where a row spends its time.
const profileDir = process.env.BENCH_CPU_PROF
// With V8's default 16 MB young generation, the 1000 requests in flight outlive a scavenge in a server near saturation:
// a process then falls, at random, into a state where they are promoted and mark-compacted, costing about half more CPU
// per request for the rest of the run (seen in about half the plugin rows). A production-sized young generation, the same
// for every row, keeps each row in the state its own cost puts it in.
const SERVER_NODE_FLAGS = ['--max-semi-space-size=64']
// On two CPUs or more, the load generator keeps CPU 0 and every server runs on CPU 1: each row gets a core of its own,
// instead of sharing both with autocannon as the scheduler sees fit, which moved a row's req/s by a fifth from one run to the next.
const pinned = cpus().length >= 2 && spawnSync('taskset', ['-a', '-p', '-c', '0', String(process.pid)], { stdio: 'ignore' }).status === 0

interface Server {
  scenario: Scenario
  child: ChildProcess
  ready: ReadyMessage
}

interface Sample {
  requestsPerSecond: number
  p50: number
  p99: number
  queriesPerRequest: number
  serverCpuMicrosPerRequest: number
}

interface Row {
  id: string
  title: string
  requestsPerSecond: number
  latencyMs: { p50: number, p99: number }
  /** PostgreSQL queries the server sent per request answered, over the measured rounds. */
  queriesPerRequest: number
  /** CPU the server process spent per request it received (median of the rounds): its own cost, whatever else the machine runs. */
  serverCpuMicrosPerRequest: number
  baseline: string
  ratio: number
  targets: Array<{ label: string, of: string, atLeast?: number, ratio: number, met: boolean | null }>
  samples: Sample[]
}

async function main (): Promise<void> {
  const chosen = scenarios.filter(scenario => only === undefined || only.includes(scenario.id))
  const schema = `bench_${randomBytes(4).toString('hex')}`
  const admin = knexFactory({ client: 'pg', connection: databaseUrl })
  await admin.raw('CREATE SCHEMA ??', [schema])
  const servers: Server[] = []
  try {
    const url = new URL(databaseUrl)
    url.searchParams.set('options', `-c search_path=${schema}`)
    const inSchema = knexFactory({ client: 'pg', connection: url.toString() })
    await migrate(inSchema, {})
    await inSchema.destroy()

    const env = { ...process.env, BENCH_DATABASE_URL: url.toString(), FERNET_SECRET: fernet.generateSecret() }
    // Each server in its own process, as in production: no row shares a heap, a JIT profile or an event loop with another.
    const startedAt = Date.now()
    servers.push(...await Promise.all(chosen.map(scenario => startServer(scenario, env))))
    console.log(`servers ready in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`)

    const total = chosen.length * (settings.warmup + settings.rounds * settings.duration)
    console.log(`${chosen.length} rows, ${settings.rounds} rounds of ${settings.duration} s each after ${settings.warmup} s of warm-up: about ${Math.ceil(total)} s\n`)
    for (const server of servers) await drive(server, settings.warmup)

    const samples = new Map<string, Sample[]>(servers.map(server => [server.scenario.id, []]))
    for (let round = 0; round < settings.rounds; round++) {
      // Each round starts with a different row, so that no row always follows the same neighbour.
      for (let i = 0; i < servers.length; i++) {
        const server = servers[(i + round) % servers.length]
        const sample = await drive(server, settings.duration)
        samples.get(server.scenario.id)!.push(sample)
        process.stdout.write(`round ${round + 1} ${server.scenario.id}: ${Math.round(sample.requestsPerSecond)} req/s\n`)
      }
    }
    report(chosen, samples)
  } finally {
    for (const server of servers) server.child.disconnect()
    await Promise.all(servers.map(server => new Promise(resolve => server.child.exitCode !== null ? resolve(null) : server.child.once('exit', resolve))))
    await admin.raw('DROP SCHEMA ?? CASCADE', [schema])
    await admin.destroy()
  }
}

function startServer (scenario: Scenario, env: NodeJS.ProcessEnv): Promise<Server> {
  const profile = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', join(profileDir, scenario.id)]
  const nodeArgs = ['--import', 'tsx', ...SERVER_NODE_FLAGS, ...profile]
  const launch = pinned ? { execPath: 'taskset', execArgv: ['-c', '1', process.execPath, ...nodeArgs] } : { execArgv: nodeArgs }
  const child = fork(join(__dirname, 'server.ts'), [scenario.id], { env, ...launch })
  return new Promise((resolve, reject) => {
    child.once('message', (message: ReadyMessage) => resolve({ scenario, child, ready: message }))
    child.once('exit', code => reject(new Error(`the server of row ${scenario.id} exited with ${code}`)))
  })
}

function stats (server: Server): Promise<StatsMessage> {
  return new Promise(resolve => {
    server.child.once('message', resolve)
    server.child.send({ type: 'stats' })
  })
}

async function drive (server: Server, seconds: number): Promise<Sample> {
  const before = await stats(server)
  const requests = server.ready.requests
  let clients = 0
  const result = await autocannon({
    url: `http://127.0.0.1:${server.ready.port}/`,
    connections: settings.connections,
    pipelining: settings.pipelining,
    duration: seconds,
    // Every client builds each request of this list before setupClient runs: the first one only, so that thousands of keys cost no setup.
    requests: requests.slice(0, 1),
    // Each connection cycles through a slice of the keys of its own, so that no two connections send the same key
    // (many-valid: 100 connections x 10 pipelined = 1000 keys, each in flight once; invalid: one key per connection, retried).
    // Client.setRequests refuses when pipelining; at setup nothing is in flight yet, so the iterator can be set directly.
    setupClient (client) {
      const per = Math.max(1, Math.floor(requests.length / settings.connections))
      const start = (clients++ * per) % requests.length
      client.requestIterator.setRequests(Array.from({ length: per }, (_, index) => requests[(start + index) % requests.length]))
    }
  })
  // Requests left in flight when autocannon stopped finish before the next row starts, so that they do not load its run.
  let after = await stats(server)
  for (const deadline = Date.now() + 10_000; after.busy && Date.now() < deadline; after = await stats(server)) await sleep(20)
  const expected = server.scenario.credentials === 'invalid' || server.scenario.credentials === 'many-invalid' ? 401 : 200
  const answered = Object.values(result.statusCodeStats).reduce((sum, { count }) => sum + count, 0)
  const right = result.statusCodeStats[String(expected)]?.count ?? 0
  // A row that answers anything but its expected status measures the wrong thing: stop rather than print it.
  if (result.errors > 0 || result.timeouts > 0 || answered === 0 || right !== answered) {
    throw new Error(`row ${server.scenario.id}: expected only ${expected}, got ${JSON.stringify(result.statusCodeStats)}, ${result.errors} errors, ${result.timeouts} timeouts`)
  }
  return {
    requestsPerSecond: answered / seconds,
    p50: result.latency.p50,
    p99: result.latency.p99,
    // Per request the server received in the run, counted by the server: autocannon's count leaves out the requests still in flight at the end.
    queriesPerRequest: (after.queries - before.queries) / (after.requests - before.requests),
    serverCpuMicrosPerRequest: (after.cpuMicros - before.cpuMicros) / (after.requests - before.requests)
  }
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

function report (chosen: Scenario[], samples: Map<string, Sample[]>): void {
  const rps = (id: string) => median(samples.get(id)!.map(sample => sample.requestsPerSecond))
  // A ratio is taken within each round, between runs seconds apart that shared the machine's load of the moment, then the median of those.
  const ratioOf = (id: string, of: string) => median(samples.get(id)!.map((sample, round) => sample.requestsPerSecond / samples.get(of)![round].requestsPerSecond))
  const rows: Row[] = chosen.map(scenario => {
    const own = samples.get(scenario.id)!
    const baseline = scenario.baseline ?? 'a'
    const requestsPerSecond = rps(scenario.id)
    const queries = own.reduce((sum, sample) => sum + sample.queriesPerRequest, 0) / own.length
    return {
      id: scenario.id,
      title: scenario.title,
      requestsPerSecond,
      latencyMs: { p50: median(own.map(sample => sample.p50)), p99: median(own.map(sample => sample.p99)) },
      queriesPerRequest: queries,
      serverCpuMicrosPerRequest: median(own.map(sample => sample.serverCpuMicrosPerRequest)),
      baseline,
      ratio: samples.has(baseline) ? ratioOf(scenario.id, baseline) : NaN,
      targets: (scenario.targets ?? []).filter(target => samples.has(target.of)).map(target => {
        const ratio = ratioOf(scenario.id, target.of)
        return { ...target, ratio, met: target.atLeast === undefined ? null : ratio >= target.atLeast }
      }),
      samples: own
    }
  })

  console.log('\n| row | scenario | req/s | p50 ms | p99 ms | server CPU µs/req | db queries/req | vs bare | targets |')
  console.log('|---|---|---:|---:|---:|---:|---:|---:|---|')
  for (const row of rows) {
    const targets = row.targets.map(target => `${target.ratio.toFixed(2)} of ${target.of} (${target.label})${target.met === null ? '' : target.met ? ': met' : ': MISSED'}`).join('; ')
    console.log(`| ${row.id} | ${row.title} | ${Math.round(row.requestsPerSecond).toLocaleString('en-US')} | ${row.latencyMs.p50} | ${row.latencyMs.p99} | ` +
      `${row.serverCpuMicrosPerRequest.toFixed(1)} | ${row.queriesPerRequest.toFixed(3)} | ${row.ratio.toFixed(2)} | ${targets} |`)
  }

  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    platform: `${platform()} ${release()}`,
    node: process.version,
    serverNodeFlags: SERVER_NODE_FLAGS,
    pinned: pinned ? 'load generator on CPU 0, servers on CPU 1' : 'no',
    date: new Date().toISOString()
  }
  console.log(`\n${machine.cpus} x ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.platform}, node ${machine.node} ${SERVER_NODE_FLAGS.join(' ')}${pinned ? ', load generator and servers on CPUs of their own' : ''}; ` +
    `${settings.connections} connections, pipelining ${settings.pipelining}, ${settings.rounds} interleaved rounds of ${settings.duration} s; ` +
    'req/s and latencies: median of the rounds; ratios: median of the ratios within each round')
  const file = join(__dirname, 'results.json')
  writeFileSync(file, JSON.stringify({ machine, settings, rows }, null, 2) + '\n')
  console.log(`written to ${file}`)
}

main().catch(err => {
  console.error(err)
  process.exitCode = 1
})
