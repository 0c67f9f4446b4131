import { test } from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import Fastify from 'fastify'
import { chromium, type Browser } from 'playwright-core'
import { createTestDatabase } from './helpers/database'
import { buildApp, auth, secretA, secretB } from './helpers/app'
import simpleApiKey from '../index'

// Globals of the page, for the functions page.evaluate runs there; the tests compile without the DOM library.
declare const sessionStorage: { length: number, getItem: (name: string) => string | null }
declare const navigator: { clipboard: { readText: () => Promise<string> } }
declare const document: { createElement: (tag: string) => { textContent: string }, body: { append: (node: unknown) => void, dataset: Record<string, string | undefined> } }

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ADMIN = ['apikeys:admin']
const XSS_NAME = '<img src=x onerror=alert(1)>'
const WARNING = 'Store it somewhere safe: you will not be able to see it again.'
const expectedPolicy = {
  'default-src': "'none'",
  'script-src': "'self'",
  'style-src': "'self'",
  'connect-src': "'self'",
  'frame-ancestors': "'none'",
  'base-uri': "'none'",
  'form-action': "'none'"
}

function directivesOf (policy: string | undefined): Record<string, string> {
  return Object.fromEntries((policy ?? '').split(';').map(part => part.trim().split(/\s+/)).filter(([name]) => name !== '').map(([name, ...values]) => [name, values.join(' ')]))
}

test('the page, its script and stylesheet: public, strict headers, no inline code', async t => {
  const db = await createTestDatabase(t, 'admin_headers')
  const app = await buildApp(t, db.knex)

  const page = await app.inject({ url: '/apikeys/admin' })
  t.equal(page.statusCode, 200, 'the page needs no key: it holds no data')
  t.match(page.headers['content-type'], /^text\/html; charset=utf-8/)
  for (const [url, type] of [['/apikeys/admin', /^text\/html/], ['/apikeys/admin/admin.js', /^text\/javascript/], ['/apikeys/admin/admin.css', /^text\/css/]] as const) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 200, url)
    t.match(res.headers['content-type'], type)
    t.same(directivesOf(res.headers['content-security-policy'] as string), expectedPolicy, `${url}: the strict policy, nothing more`)
    t.equal(res.headers['x-content-type-options'], 'nosniff')
    t.equal(res.headers['referrer-policy'], 'no-referrer')
    t.equal(res.headers['cache-control'], 'no-store')
    t.equal(res.headers['x-frame-options'], 'DENY')
  }
  const html = page.body
  t.same([...html.matchAll(/<script\b[^>]*>/g)].map(match => match[0]), ['<script src="/apikeys/admin/admin.js" defer>'], 'one script, loaded from its route')
  t.notMatch(html, /<script[^>]*>[^<]+<\/script>/, 'no inline script')
  t.notMatch(html, /<style\b|\sstyle=|\son[a-z]+=/i, 'no inline style, no inline handler')
  t.match(html, /<link rel="stylesheet" href="\/apikeys\/admin\/admin.css">/)
  t.match(html, /data-api="\/apikeys" data-keyword="Api-Key" data-auth="key"/)
  const script = (await app.inject({ url: '/apikeys/admin/admin.js' })).body
  t.notMatch(script, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/, 'the script never writes HTML')
  t.notMatch(script, /document\.cookie|localStorage/, 'the key lives in sessionStorage only')

  const moved = await buildApp(t, db.connect(), { migrate: false, keyword: 'Token', routes: { prefix: '/internal/keys' } })
  const movedPage = await moved.inject({ url: '/internal/keys/admin' })
  t.equal(movedPage.statusCode, 200)
  t.match(movedPage.body, /data-api="\/internal\/keys" data-keyword="Token" data-auth="key"/, 'the page calls the routes where they are, with the keyword')
  t.match(movedPage.body, /src="\/internal\/keys\/admin\/admin.js"/)

  const off = await buildApp(t, db.connect(), { migrate: false, routes: { admin: false } })
  const admin = await off.apiKeys.create({ entityId: 'ops', scopes: ADMIN })
  t.notOk(off.hasRoute({ method: 'GET', url: '/apikeys/admin' }), 'routes.admin: false: no page')
  t.equal((await off.inject({ url: '/apikeys/admin', headers: auth(admin.key) })).statusCode, 400, 'the path reads as a key id')
  t.equal((await off.inject({ url: '/apikeys/admin/admin.js', headers: auth(admin.key) })).statusCode, 404)
  t.equal((await off.inject({ url: '/apikeys/', headers: auth(admin.key) })).statusCode, 200, 'the routes stay')

  const guarded = await buildApp(t, db.connect(), { migrate: false, routes: { async preHandler () {} } })
  t.match((await guarded.inject({ url: '/apikeys/admin' })).body, /data-auth="app"/, 'with the app\'s own guard the page asks for no key')

  const unhooked = Fastify()
  await unhooked.register(simpleApiKey, { knex: db.connect(), fernetSecret: secretA, hook: false })
  t.teardown(() => unhooked.close())
  t.equal((await unhooked.inject({ url: '/apikeys/admin' })).statusCode, 200, 'hook: false: the page is served')
  t.equal((await unhooked.inject({ url: '/apikeys/' })).statusCode, 401, 'and the routes it calls still need a key')
})

test('the package ships the page\'s files next to the compiled plugin', async t => {
  const packed = await new Promise<string>((resolve, reject) => {
    execFile('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], { cwd: join(__dirname, '..'), timeout: 60_000 }, (err, stdout) => err === null ? resolve(stdout) : reject(err))
  })
  const files = (JSON.parse(packed)[0].files as Array<{ path: string }>).map(file => file.path)
  for (const name of ['index.html', 'admin.js', 'admin.css']) {
    t.ok(files.includes(`dist/lib/admin/${name}`), `dist/lib/admin/${name} is in the package (the build copies lib/admin)`)
    t.equal(readFileSync(join(__dirname, '..', 'dist', 'lib', 'admin', name), 'utf8'), readFileSync(join(__dirname, '..', 'lib', 'admin', name), 'utf8'), `and is the current ${name}`)
  }
})

test('the admin page in Chromium: sign in, create, use, revoke, rotate', async t => {
  if (!existsSync(CHROMIUM)) {
    t.fail(`Chromium is missing at ${CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM_PATH. The admin page's browser test cannot run without it.`)
    return
  }
  const db = await createTestDatabase(t, 'admin_browser')
  const app = await buildApp(t, db.knex, { rotationFernetSecret: secretB, rotationPeriod: '1h' })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const admin = await app.apiKeys.create({ name: 'console', entityId: 'ops', scopes: ADMIN })
  const reader = await app.apiKeys.create({ name: 'reader', entityId: 'svc', scopes: ['fruits:read'] })
  await app.apiKeys.create({ name: 'retired', entityId: 'svc', expiresAt: new Date(Date.now() - 60_000) })

  const browser: Browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: address })
  const page = await context.newPage()
  page.setDefaultTimeout(10_000)
  const problems: string[] = []
  const dialogs: string[] = []
  page.on('pageerror', err => problems.push(`page error: ${err.message}`))
  // The refused sign-in and the key revoked mid-session answer 403 and 401 on purpose; anything else is a problem.
  page.on('console', message => {
    if (message.type() === 'error' && !/^Failed to load resource: the server responded with a status of 40[13] /.test(message.text())) problems.push(`console: ${message.text()}`)
  })
  page.on('dialog', dialog => {
    dialogs.push(dialog.message())
    dialog.dismiss().catch(() => {})
  })

  const response = await page.goto(`${address}/apikeys/admin`)
  t.equal(response?.status(), 200)
  t.same(directivesOf(response?.headers()['content-security-policy']), expectedPolicy, 'the browser got the strict policy')
  await page.locator('#sign-in').waitFor()
  t.equal(await page.isVisible('#console'), false, 'nothing but the sign-in before a key')

  await page.fill('#admin-key', reader.key)
  await page.click('#sign-in-form button[type=submit]')
  await page.locator('#sign-in-error', { hasText: 'This key cannot manage keys: This API key does not have the required scope(s) for this action.' }).waitFor()
  t.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused key is not kept')

  await page.fill('#admin-key', admin.key)
  await page.click('#sign-in-form button[type=submit]')
  await page.locator(`#key-rows tr[data-key-id="${admin.record.id}"]`).waitFor()
  t.equal(await page.evaluate(() => sessionStorage.length), 1)
  t.equal(await page.evaluate(() => sessionStorage.getItem('fastify-simple-apikey:admin-key')), admin.key, 'the admin key is in this tab\'s session storage')
  t.same(await context.cookies(), [], 'no cookie')
  t.notOk(page.url().includes(admin.key), 'not in the URL')
  t.equal(await page.inputValue('#admin-key'), '', 'the sign-in field is emptied')
  t.equal(await page.locator('#key-rows tr[data-key-id]').count(), 3)
  const statusOf = (id: number) => page.locator(`#key-rows tr[data-key-id="${id}"] .status-badge`).textContent()
  t.equal(await statusOf(reader.record.id), 'active')
  t.equal(await page.locator('#key-rows tr.status-expired .status-badge').textContent(), 'expired')
  t.equal(await page.locator('#phase').textContent(), 'staged')
  t.match(await page.locator('#rotation-impact').textContent(), /^2 live keys would stop working when a rotation started now completes/,
    'how many keys a completed rotation would break: the two live keys under FERNET_SECRET, not the expired one')

  await page.fill('#create-form input[name=name]', XSS_NAME)
  await page.fill('#create-form input[name=entityId]', 'customer-42')
  await page.fill('#create-form input[name=scopes]', 'fruits:read, fruits:write')
  await page.fill('#create-form input[name=whitelistedIps]', '127.0.0.1, ::1')
  await page.fill('#create-form input[name=blacklistedIps]', '10.0.0.0/8')
  await page.click('#create-form button[type=submit]')
  await page.locator('#new-key').waitFor()
  t.equal((await page.locator('#new-key .warning').textContent())?.trim(), WARNING)
  const key = await page.inputValue('#new-key-value')
  const { record } = (await app.apiKeys.list({ entityId: 'customer-42' })).items.map(item => ({ record: item }))[0]
  t.equal(app.keyring.decrypt(key)._pk, record.id, 'the page shows the new key')
  t.same(record.scopes, ['fruits:read', 'fruits:write'])
  t.same(record.whitelistedIps, ['127.0.0.1', '::1'])
  t.same(record.blacklistedIps, ['10.0.0.0/8'])

  await page.click('#copy-key')
  await page.locator('#copy-key', { hasText: 'Copied' }).waitFor()
  t.equal(await page.evaluate(() => navigator.clipboard.readText()), key, 'the copy button copies the key')

  const row = page.locator(`#key-rows tr[data-key-id="${record.id}"]`)
  await row.waitFor()
  t.equal(await row.locator('td.name').textContent(), XSS_NAME, 'markup in a name is shown as text')
  t.equal(await page.locator('#key-rows img').count(), 0, 'and never becomes an element')
  t.equal(await row.locator('.status-badge').textContent(), 'active')
  t.same(await row.locator('.chip').allTextContents(), ['fruits:read', 'fruits:write'])
  t.match(await row.locator('td.ips').textContent(), /allow\s*127\.0\.0\.1, ::1\s*deny\s*10\.0\.0\.0\/8/)

  const used = await fetch(`${address}/fruits`, { headers: auth(key) })
  t.equal(used.status, 200, 'the created key works against a protected route')
  t.equal(((await used.json()) as { apiKey: { id: number } }).apiKey.id, record.id)

  await app.apiKeys.flushUsage()
  await row.locator('button[data-action=usage]').click()
  const usage = page.locator('tr.usage-row')
  await usage.locator('td.route', { hasText: '/fruits' }).waitFor()
  t.match(await usage.textContent(), /^1 request counted; last use: .+\.MethodRouteRequestsLast usedGET\/fruits1/, 'the usage of the key, per route')

  await page.click('#dismiss-key')
  t.equal(await page.isVisible('#new-key'), false)
  t.notOk((await page.content()).includes(key), 'once dismissed, the key is gone from the page')

  await row.locator('button[data-action=revoke]').click()
  await page.locator('#confirm[open]').waitFor()
  t.equal(await page.locator('#confirm-title').textContent(), `Revoke key ${record.id}?`)
  t.equal(await page.locator('#confirm-text').textContent(), `"${XSS_NAME}" of customer-42 stops working at once, on every instance. This cannot be undone.`)
  await page.click('#confirm-ok')
  await page.locator(`#key-rows tr[data-key-id="${record.id}"] .status-badge`, { hasText: 'revoked' }).waitFor()
  t.equal(await page.locator('#notice').textContent(), `Key ${record.id} revoked.`)
  const refused = await fetch(`${address}/fruits`, { headers: auth(key) })
  t.equal(refused.status, 401, 'revoked in the page: refused at once')
  t.equal(((await refused.json()) as { code: string }).code, 'FST_APIKEY_REVOKED')
  t.ok(await page.locator(`#key-rows tr[data-key-id="${record.id}"] button[data-action=revoke]`).isDisabled(), 'a revoked key offers no revoke')

  const readerRow = page.locator(`#key-rows tr[data-key-id="${reader.record.id}"]`)
  await readerRow.locator('button[data-action=roll]').click()
  await page.locator('#confirm[open]').waitFor()
  await page.fill('#grace-period', '1h')
  await page.click('#confirm-ok')
  await page.locator('#new-key-title', { hasText: `New value of key ${reader.record.id}` }).waitFor()
  const rolled = await page.inputValue('#new-key-value')
  t.not(rolled, reader.key)
  t.equal((await fetch(`${address}/fruits`, { headers: auth(rolled) })).status, 200, 'the rolled value works')
  t.equal((await fetch(`${address}/fruits`, { headers: auth(reader.key) })).status, 200, 'the old value works for the grace period')
  await page.click('#dismiss-key')

  await page.click('#start-rotation')
  await page.locator('#confirm[open]').waitFor()
  await page.click('#confirm-ok')
  await page.locator('#phase', { hasText: 'transition' }).waitFor()
  t.equal(app.keyring.phase, 'transition', 'the page started the rotation')
  t.match(await page.locator('#rotation-text').textContent(), /^Rotation in progress: /)
  t.match(await page.locator('#rotation-impact').textContent(), /live keys? would stop working when this rotation completes/)
  t.ok(await page.isVisible('#stop-rotation'))
  t.notOk(await page.isVisible('#start-rotation'))

  const screenshot = join(tmpdir(), `fastify-simple-apikey-admin-${randomBytes(4).toString('hex')}.png`)
  await page.screenshot({ path: screenshot, fullPage: true })
  t.comment(`admin page screenshot: ${screenshot}`)

  await page.click('#stop-rotation')
  await page.locator('#confirm[open]').waitFor()
  await page.click('#confirm-ok')
  await page.locator('#phase', { hasText: 'staged' }).waitFor()
  t.equal(app.keyring.phase, 'staged', 'the page stopped the rotation')

  const otherTab = await context.newPage()
  await otherTab.goto(`${address}/apikeys/admin`)
  await otherTab.locator('#sign-in').waitFor()
  t.equal(await otherTab.isVisible('#console'), false, 'another tab is not signed in: the key stays in its tab')
  await otherTab.close()

  await app.apiKeys.revoke(admin.record.id)
  await page.locator('#filter-form button[type=submit]').click()
  await page.locator('#sign-in-error', { hasText: 'Signed out: This API Key has been revoked.' }).waitFor()
  t.equal(await page.evaluate(() => sessionStorage.length), 0, 'a key refused mid-session is forgotten')

  t.same(dialogs, [], 'no script ever ran an alert')
  t.same(problems, [], 'no script error and no Content-Security-Policy violation')

  const ran = await page.evaluate(() => {
    const script = document.createElement('script')
    script.textContent = 'document.body.dataset.injected = "yes"'
    document.body.append(script)
    return document.body.dataset.injected ?? 'no'
  })
  t.equal(ran, 'no', 'the policy is in force: an injected inline script does not run')
  t.match(problems, [/Content Security Policy/], 'and the browser reports the violation')
})
