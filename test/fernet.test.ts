import { test } from 'tap'
import { readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { fernet, Keyring } from '../index'

const specDir = join(__dirname, '..', '..', 'shared', 'fernet-spec')
const spec = (name: string) => JSON.parse(readFileSync(join(specDir, name), 'utf8'))

test('generate.json: every vector yields the exact token', async t => {
  const vectors = spec('generate.json')
  t.ok(vectors.length > 0)
  for (const v of vectors) {
    const token = fernet.encrypt(v.secret, v.src, { now: new Date(v.now), iv: Buffer.from(v.iv) })
    t.equal(token, v.token)
  }
})

test('verify.json: every vector opens to its message at its time and ttl', async t => {
  const vectors = spec('verify.json')
  t.ok(vectors.length > 0)
  for (const v of vectors) {
    const message = fernet.decrypt(v.secret, v.token, { ttl: v.ttl_sec, now: new Date(v.now) })
    t.equal(message.toString('utf8'), v.src)
  }
})

test('invalid.json: every vector is refused with FST_APIKEY_INVALID_TOKEN', async t => {
  const vectors = spec('invalid.json')
  t.ok(vectors.length > 0)
  for (const v of vectors) {
    t.throws(() => fernet.decrypt(v.secret, v.token, { ttl: v.ttl_sec, now: new Date(v.now) }),
      { code: 'FST_APIKEY_INVALID_TOKEN' }, v.desc)
  }
})

test('tokens round-trip and accept input with or without padding', async t => {
  const secret = fernet.generateSecret()
  for (const message of ['', 'a', 'ab', 'abc', 'x'.repeat(1000)]) {
    const token = fernet.encrypt(secret, message)
    t.equal(fernet.decrypt(secret, token).toString(), message)
    t.equal(fernet.decrypt(secret, token.replace(/=+$/, '')).toString(), message, 'unpadded')
  }
})

test('bad tokens are refused with one error type, never a crash', async t => {
  const secret = fernet.generateSecret()
  const token = fernet.encrypt(secret, 'hello')
  const raw = Buffer.from(token, 'base64url')
  const wrongVersion = Buffer.from(raw)
  wrongVersion[0] = 0x81
  const flipped = Buffer.from(raw)
  flipped[30] ^= 1
  const future = fernet.encrypt(secret, 'hello', { now: new Date(Date.now() + 120_000) })
  const cases: Record<string, unknown> = {
    empty: '',
    truncated: token.slice(0, 40),
    'not base64': token.replace(/[A-Z]/, '*'),
    'wrong version byte': wrongVersion.toString('base64url'),
    'bad padding': token.replace(/=*$/, '') + '===',
    'one padding char too few': token.length % 4 === 0 && token.endsWith('==') ? token.slice(0, -1) : 'A' + token,
    'bad HMAC': flipped.toString('base64url'),
    'far-future timestamp': future,
    'megabytes long': 'A'.repeat(4 * 1024 * 1024),
    'not a string': 12345,
    'another secret': fernet.encrypt(fernet.generateSecret(), 'hello')
  }
  for (const [name, bad] of Object.entries(cases)) {
    t.throws(() => fernet.decrypt(secret, bad as string), { code: 'FST_APIKEY_INVALID_TOKEN' }, name)
  }
})

test('ttl: a token older than its ttl is refused', async t => {
  const secret = fernet.generateSecret()
  const token = fernet.encrypt(secret, 'hi', { now: new Date('2020-01-01T00:00:00Z') })
  t.equal(fernet.decrypt(secret, token, { ttl: 60, now: new Date('2020-01-01T00:01:00Z') }).toString(), 'hi')
  t.throws(() => fernet.decrypt(secret, token, { ttl: 60, now: new Date('2020-01-01T00:01:01Z') }), { code: 'FST_APIKEY_INVALID_TOKEN' })
})

test('secrets of the wrong length or alphabet are refused without echoing them', async t => {
  const good = fernet.generateSecret()
  t.equal(Buffer.from(good, 'base64url').length, 32)
  t.match(good, /^[A-Za-z0-9_-]{43}=$/)
  for (const bad of ['', 'short', good.slice(0, -2), good.replace(/^./, '+'), Buffer.alloc(16).toString('base64url'), good + 'AAAA']) {
    const err = t.throws(() => fernet.encrypt(bad, 'x'), { code: 'FST_APIKEY_INVALID_SECRET' }) as Error
    if (bad.length > 4) t.notMatch(err.message, bad)
  }
  t.throws(() => fernet.encrypt(Buffer.alloc(31), 'x'), { code: 'FST_APIKEY_INVALID_SECRET' })
})

const pythonFixture = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'python-fernet', 'tokens.json'), 'utf8'))

test('Python cryptography.fernet tokens open here, and fixed-IV tokens made here are byte-identical', async t => {
  t.ok(pythonFixture.tokens.length > 50)
  for (const entry of pythonFixture.tokens) {
    const message = Buffer.from(entry.message_b64, 'base64')
    // Python checks the clock skew only with a ttl; the spec checks it always, so read each token at its own time.
    t.same(fernet.decrypt(entry.secret, entry.token, { now: new Date(entry.time * 1000) }), message, `${entry.name}: opens`)
    if (entry.iv_hex !== null) {
      const token = fernet.encrypt(entry.secret, message, { now: new Date(entry.time * 1000), iv: Buffer.from(entry.iv_hex, 'hex') })
      t.equal(token, entry.token, `${entry.name}: same token`)
    }
  }
  for (const entry of pythonFixture.invalid_tokens) {
    t.throws(() => fernet.decrypt(entry.secret, entry.token), { code: 'FST_APIKEY_INVALID_TOKEN' }, entry.reason)
  }
})

test('MultiFernet.rotate and Keyring.reencrypt agree: new secret, same timestamp', async t => {
  const { old_secret: oldSecret, new_secret: newSecret, old_token: oldToken, rotated_token: rotated, old_token_time: time, message_b64: message } = pythonFixture.multifernet_rotate
  const resealed = new Keyring([newSecret, oldSecret]).reencrypt(oldToken)
  for (const token of [resealed, rotated]) {
    t.same(fernet.decrypt(newSecret, token), Buffer.from(message, 'base64'))
    t.equal(fernet.open(fernet.importSecret(newSecret), token).timestamp, time)
    t.throws(() => fernet.decrypt(oldSecret, token), { code: 'FST_APIKEY_INVALID_TOKEN' })
  }
})

test('tokens made here open in Python cryptography.fernet', async t => {
  const python = spawnSync('python3', ['-c', 'import cryptography.fernet'])
  if (python.status !== 0) {
    t.pass('skipped: python3 with the cryptography package is not installed')
    return
  }
  const secret = fernet.generateSecret()
  const messages = [Buffer.alloc(0), Buffer.from('hello'), Buffer.from('{"_pk": 1, "_exp": 4102444800.0}'), Buffer.from([0, 255, 128, 7])]
  const tokens = messages.map(message => ({ secret, token: fernet.encrypt(secret, message), message_b64: message.toString('base64') }))
  const unpadded = { ...tokens[1], token: tokens[1].token.replace(/=+$/, '') }
  const result = spawnSync('python3', [join(__dirname, 'fixtures', 'python-fernet', 'verify_tokens.py')], { input: JSON.stringify(tokens) })
  t.equal(result.status, 0, result.status === 0 ? 'Python opened every token' : result.stderr.toString())
  t.match(result.stdout.toString(), new RegExp(`\\b${tokens.length} passed, 0 failed\\b`))
  const bad = spawnSync('python3', [join(__dirname, 'fixtures', 'python-fernet', 'verify_tokens.py')], { input: JSON.stringify([{ ...tokens[1], secret: fernet.generateSecret() }]) })
  t.equal(bad.status, 1, 'the checker does fail on a wrong secret')
  t.ok(unpadded.token.length < tokens[1].token.length)
})
