import { test } from 'tap'
import { fernet, Keyring, fingerprint } from '../index'

test('the first secret encrypts, every secret decrypts', async t => {
  const [a, b] = [fernet.generateSecret(), fernet.generateSecret()]
  const old = new Keyring([a])
  const rotating = new Keyring([b, a])
  const underA = old.encrypt({ _pk: 1, _exp: 2 })
  const underB = rotating.encrypt({ _pk: 3, _exp: 4 })
  t.same(rotating.decrypt(underA), { _pk: 1, _exp: 2 }, 'old tokens still open')
  t.same(rotating.decrypt(underB), { _pk: 3, _exp: 4 })
  t.same(new Keyring([b]).decrypt(underB), { _pk: 3, _exp: 4 }, 'new tokens are under the first secret')
  t.throws(() => old.decrypt(underB), { code: 'FST_APIKEY_INVALID_TOKEN' })
  t.equal(rotating.open(underA).fingerprint, fingerprint(a), 'open says which secret opened it')
  t.same(rotating.fingerprints, [fingerprint(b), fingerprint(a)])
  t.equal(rotating.encryptingFingerprint, fingerprint(b))
})

test('reencrypt re-seals under the first secret and keeps the timestamp', async t => {
  const [a, b] = [fernet.generateSecret(), fernet.generateSecret()]
  const issued = new Date('2024-05-01T10:00:00Z')
  const token = new Keyring([a]).encrypt({ _pk: 9 }, { now: issued })
  const resealed = new Keyring([b, a]).reencrypt(token)
  t.not(resealed, token)
  const opened = new Keyring([b]).open(resealed)
  t.same(opened.payload, { _pk: 9 })
  t.equal(opened.timestamp, issued.getTime() / 1000)
  t.throws(() => new Keyring([b]).reencrypt(token), { code: 'FST_APIKEY_INVALID_TOKEN' })
})

test('payloads that are not JSON objects are refused', async t => {
  const secret = fernet.generateSecret()
  const keyring = new Keyring([secret])
  for (const body of ['[1,2]', '"text"', 'null', '42', 'not json', '']) {
    t.throws(() => keyring.decrypt(fernet.encrypt(secret, body)), { code: 'FST_APIKEY_INVALID_PAYLOAD' }, body)
  }
  t.equal(keyring.tryOpen('garbage'), null, 'tryOpen gives null, not an exception')
})

test('fingerprints are short, stable, distinct and reveal nothing of the secret', async t => {
  const secret = fernet.generateSecret()
  const id = fingerprint(secret)
  t.match(id, /^[0-9a-f]{16}$/)
  t.equal(fingerprint(secret), id)
  t.equal(new Keyring([secret]).fingerprint(Buffer.from(secret, 'base64url')), id, 'same id from raw bytes')
  t.not(fingerprint(fernet.generateSecret()), id)
  t.notOk(secret.includes(id))
})

test('a keyring needs at least one valid secret', async t => {
  t.throws(() => new Keyring([]), { code: 'FST_APIKEY_INVALID_OPTION' })
  t.throws(() => new Keyring(['nope']), { code: 'FST_APIKEY_INVALID_SECRET', message: /secret #1/ })
})
