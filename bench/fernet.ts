// Fernet decrypt+verify throughput of lib/fernet against the npm packages `fernet` and `fernet-nodejs`, interleaved in one run.
import { cpus } from 'node:os'
import { performance } from 'node:perf_hooks'
import * as ours from '../lib/fernet'
import { Fernet as FernetNodejs } from 'fernet-nodejs'
import fernetCryptoJs = require('fernet')

interface Contender {
  name: string
  decrypt: (token: string) => string
}

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7)
const ROUND_MS = Number(process.env.BENCH_ROUND_MS ?? 300)

// The token an API key carries: the payload lib/keys.ts seals, under one secret shared by every contender.
const secret = ours.generateSecret()
const message = JSON.stringify({ _pk: 12345, _exp: 1_900_000_000, _secret: 'Jb0vQ2mXoR7cN3tLkW8yHfP5sAeZ1uGiV6dTqBjC4nE' })
const token = ours.encrypt(secret, message)

const imported = ours.importSecret(secret)
const cryptoJsSecret = new fernetCryptoJs.Secret(secret)
const nodejsFernet = new FernetNodejs(secret)

// Each contender through its own public API, with the secret prepared once where the API allows it.
const contenders: Contender[] = [
  { name: 'lib/fernet (imported key)', decrypt: t => ours.decrypt(imported, t).toString('utf8') },
  { name: 'lib/fernet (secret string)', decrypt: t => ours.decrypt(secret, t).toString('utf8') },
  { name: 'fernet-nodejs', decrypt: t => nodejsFernet.decrypt(t) },
  { name: 'fernet (crypto-js)', decrypt: t => new fernetCryptoJs.Token({ secret: cryptoJsSecret, token: t, ttl: 0 }).decode() }
]

for (const contender of contenders) {
  const opened = contender.decrypt(token)
  if (opened !== message) throw new Error(`${contender.name} opened the token to something else: ${opened}`)
}
// A token with one flipped HMAC byte must be refused by each, so that nobody is measured skipping the check.
const tampered = flipLastByte(token)
for (const contender of contenders) {
  let refused = false
  try {
    contender.decrypt(tampered)
  } catch {
    refused = true
  }
  if (!refused) throw new Error(`${contender.name} accepted a tampered token`)
}

function flipLastByte (value: string): string {
  const bytes = Buffer.from(value, 'base64url')
  bytes[bytes.length - 1] ^= 1
  return bytes.toString('base64url')
}

/** Runs one contender for about `ms` and gives its ops/s. */
function measure (contender: Contender, ms: number): number {
  let ops = 0
  let sink = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < ms) {
    for (let i = 0; i < 100; i++) sink += contender.decrypt(token).length
    ops += 100
    elapsed = performance.now() - start
  }
  if (sink === 0) throw new Error('nothing decrypted')
  return ops / (elapsed / 1000)
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

// Warm up every contender before the measured rounds, so that the JIT does not favour the first.
for (const contender of contenders) measure(contender, 200)

const samples = new Map<string, number[]>(contenders.map(contender => [contender.name, []]))
for (let round = 0; round < ROUNDS; round++) {
  // Rotate the order each round so that no contender always runs right after the same neighbour.
  for (let i = 0; i < contenders.length; i++) {
    const contender = contenders[(i + round) % contenders.length]
    samples.get(contender.name)!.push(measure(contender, ROUND_MS))
  }
}

const results = contenders.map(contender => ({ name: contender.name, opsPerSecond: median(samples.get(contender.name)!) }))
const byName = (name: string) => results.find(result => result.name === name)!.opsPerSecond
const cryptoJs = byName('fernet (crypto-js)')
const nodejs = byName('fernet-nodejs')

console.log(`Fernet decrypt+verify of one ${token.length}-character token (${Buffer.byteLength(message)}-byte message)`)
console.log(`${cpus().length} x ${cpus()[0]?.model ?? 'unknown cpu'}, node ${process.version}; median of ${ROUNDS} interleaved rounds of ${ROUND_MS} ms\n`)
console.log('| implementation | ops/s | vs fernet (crypto-js) | vs fernet-nodejs |')
console.log('|---|---:|---:|---:|')
for (const result of results) {
  console.log(`| ${result.name} | ${Math.round(result.opsPerSecond).toLocaleString('en-US')} | ${(result.opsPerSecond / cryptoJs).toFixed(2)}x | ${(result.opsPerSecond / nodejs).toFixed(2)}x |`)
}
const ourBest = byName('lib/fernet (imported key)')
const goal = ourBest >= 3 * cryptoJs && ourBest >= nodejs
console.log(`\ngoal (>= 3x fernet, >= 1x fernet-nodejs): ${goal ? 'met' : 'MISSED'}`)
