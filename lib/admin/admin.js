/* global document, sessionStorage, fetch, navigator */
// The admin page's script: signs in with an admin key kept in sessionStorage and drives the management routes.
// Every value from the server reaches the page through textContent, never as HTML.
'use strict'

;(function () {
  const body = document.body
  const api = body.dataset.api
  const keyword = body.dataset.keyword
  const usesKey = body.dataset.auth === 'key'
  const STORAGE_KEY = 'fastify-simple-apikey:admin-key'
  const PAGE_SIZE = 20
  const state = { offset: 0, total: 0, filter: { entityId: '', status: '' } }

  const byId = id => document.getElementById(id)

  /** An element with text children only: strings become text nodes. */
  function el (tag, attributes, ...children) {
    const node = document.createElement(tag)
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue
      if (name === 'class') node.className = value
      else if (name === 'text') node.textContent = value
      else node.setAttribute(name, value === true ? '' : String(value))
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child)
    return node
  }

  function show (node, visible) {
    node.hidden = !visible
  }

  function say (node, message) {
    node.textContent = message || ''
    show(node, Boolean(message))
  }

  class ApiError extends Error {
    constructor (status, answer) {
      super(answer && typeof answer.message === 'string' ? answer.message : `The server answered ${status}.`)
      this.status = status
      this.code = answer && answer.code
    }
  }

  async function call (method, path, payload) {
    const headers = { accept: 'application/json' }
    if (usesKey) headers.authorization = `${keyword} ${sessionStorage.getItem(STORAGE_KEY) || ''}`
    if (payload !== undefined) headers['content-type'] = 'application/json'
    const response = await fetch(api + path, {
      method,
      headers,
      body: payload === undefined ? undefined : JSON.stringify(payload),
      credentials: 'same-origin',
      cache: 'no-store'
    })
    const text = await response.text()
    let answer = null
    try {
      answer = text === '' ? null : JSON.parse(text)
    } catch {
      answer = null
    }
    if (!response.ok) throw new ApiError(response.status, answer)
    return answer
  }

  // A refused admin key ends the session: the page asks for a key again and says why.
  function handle (err, errorNode) {
    if (usesKey && (err.status === 401 || err.status === 403)) {
      signOut(`Signed out: ${err.message}`)
      return
    }
    say(errorNode, err.message)
  }

  function formatDate (value) {
    if (!value) return ''
    const date = new Date(value)
    return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
  }

  function dateCell (value, empty) {
    return value ? el('time', { datetime: value, title: value, text: formatDate(value) }) : el('span', { class: 'muted', text: empty })
  }

  function statusOf (record) {
    if (record.revoked) return 'revoked'
    return Date.parse(record.expiresAt) <= Date.now() ? 'expired' : 'active'
  }

  function listOf (text) {
    return text.split(',').map(item => item.trim()).filter(item => item !== '')
  }

  function plural (count, word) {
    return `${count} ${word}${count === 1 ? '' : 's'}`
  }

  // Session

  function signedIn () {
    return !usesKey || Boolean(sessionStorage.getItem(STORAGE_KEY))
  }

  function signOut (message) {
    sessionStorage.removeItem(STORAGE_KEY)
    hideNewKey()
    byId('key-rows').replaceChildren()
    render()
    say(byId('sign-in-error'), message)
  }

  function render () {
    const inside = signedIn()
    show(byId('sign-in'), !inside)
    show(byId('console'), inside)
    show(byId('session'), inside && usesKey)
    if (inside && usesKey) byId('session-label').textContent = 'Signed in with an admin key (this tab only)'
    if (!inside) byId('admin-key').focus()
  }

  byId('sign-in-form').addEventListener('submit', async event => {
    event.preventDefault()
    const input = byId('admin-key')
    const key = input.value.trim()
    input.value = ''
    if (key === '') return
    sessionStorage.setItem(STORAGE_KEY, key)
    say(byId('sign-in-error'), '')
    try {
      await call('GET', '/rotation')
    } catch (err) {
      signOut(err.status === 401 || err.status === 403 ? `This key cannot manage keys: ${err.message}` : err.message)
      return
    }
    render()
    await refreshAll()
  })

  byId('sign-out').addEventListener('click', () => signOut(''))

  // Confirmation dialog: resolves the grace period (roll), true (other actions) or null (cancelled).

  function confirmAction ({ title, text, action, grace }) {
    const dialog = byId('confirm')
    byId('confirm-title').textContent = title
    byId('confirm-text').textContent = text
    byId('confirm-ok').textContent = action
    show(byId('grace-field'), Boolean(grace))
    byId('grace-period').value = '0'
    return new Promise(resolve => {
      const finish = value => {
        byId('confirm-ok').removeEventListener('click', ok)
        byId('confirm-cancel').removeEventListener('click', cancel)
        dialog.removeEventListener('cancel', cancel)
        if (dialog.open) dialog.close()
        resolve(value)
      }
      const ok = () => finish(grace ? byId('grace-period').value.trim() || '0' : true)
      const cancel = () => finish(null)
      byId('confirm-ok').addEventListener('click', ok)
      byId('confirm-cancel').addEventListener('click', cancel)
      dialog.addEventListener('cancel', cancel)
      dialog.showModal()
    })
  }

  // Rotation

  const phaseText = {
    idle: () => 'No second secret is configured. To rotate, set ROTATION_FERNET_SECRET (simple-apikey generate-secret) on every instance and restart.',
    staged: () => 'ROTATION_FERNET_SECRET is set. Starting a rotation makes new keys use it; keys under the current secret keep working until the transition ends.',
    transition: status => `Rotation in progress: new keys use the new secret, keys under the old secret work until ${formatDate(status.rotation && status.rotation.endsAt)}.`,
    completed: status => `The last rotation completed on ${formatDate(status.rotation && status.rotation.endsAt)}.`
  }

  function renderRotation (status) {
    const phase = byId('phase')
    phase.textContent = status.phase
    phase.className = `badge phase-${status.phase}`
    byId('rotation-text').textContent = (phaseText[status.phase] || (() => ''))(status)
    const impact = byId('rotation-impact')
    if (status.retiringFingerprint) {
      const when = status.phase === 'transition' ? 'when this rotation completes' : 'when a rotation started now completes'
      impact.textContent = `${plural(status.keysToRetire, 'live key')} would stop working ${when}, unless reissued (POST ${api}/reissue).`
      impact.classList.toggle('impact-none', status.keysToRetire === 0)
      show(impact, true)
    } else {
      show(impact, false)
    }
    const facts = [['Encrypting secret', status.encryptingFingerprint], ['Accepted secrets', status.acceptedFingerprints.join(', ')]]
    if (status.stagedFingerprint) facts.push(['Staged secret', status.stagedFingerprint])
    if (status.retiringFingerprint) facts.push(['Secret to retire', status.retiringFingerprint])
    if (status.rotation) facts.push(['Started', formatDate(status.rotation.startedAt)], ['Ends', formatDate(status.rotation.endsAt)])
    byId('rotation-facts').replaceChildren(...facts.flatMap(([term, value]) => [el('dt', { text: term }), el('dd', { text: value })]))
    show(byId('start-rotation'), status.phase === 'staged')
    show(byId('stop-rotation'), status.phase === 'transition')
  }

  async function loadRotation () {
    try {
      renderRotation(await call('GET', '/rotation'))
      say(byId('rotation-error'), '')
    } catch (err) {
      handle(err, byId('rotation-error'))
    }
  }

  async function changeRotation (method, dialog) {
    if (await confirmAction(dialog) === null) return
    try {
      renderRotation(await call(method, '/rotation'))
      say(byId('rotation-error'), '')
      await loadKeys()
    } catch (err) {
      handle(err, byId('rotation-error'))
    }
  }

  byId('start-rotation').addEventListener('click', () => changeRotation('POST', {
    title: 'Start a rotation?',
    text: 'New keys will use ROTATION_FERNET_SECRET. Keys under the current secret work until the transition ends; clients should reissue them before then.',
    action: 'Start rotation'
  }))
  byId('stop-rotation').addEventListener('click', () => changeRotation('DELETE', {
    title: 'Stop the rotation?',
    text: 'The current secret encrypts again. Keys issued under the new secret during the transition keep working while it stays configured.',
    action: 'Stop rotation'
  }))

  // Keys

  function ipRules (record) {
    const rules = []
    if (record.whitelistedIps.length > 0) rules.push(el('div', {}, el('span', { class: 'rule-label', text: 'allow' }), ' ', record.whitelistedIps.join(', ')))
    if (record.blacklistedIps.length > 0) rules.push(el('div', {}, el('span', { class: 'rule-label', text: 'deny' }), ' ', record.blacklistedIps.join(', ')))
    return rules.length === 0 ? [el('span', { class: 'muted', text: 'any' })] : rules
  }

  function scopeChips (scopes) {
    if (scopes.length === 0) return [el('span', { class: 'muted', title: 'A key without scopes passes every scope check except the admin routes\'', text: 'unrestricted' })]
    return scopes.map(scope => el('span', { class: 'chip', text: scope }))
  }

  function keyRow (record) {
    const status = statusOf(record)
    const actions = el('td', { class: 'row-actions' },
      el('button', { type: 'button', class: 'quiet', 'data-action': 'usage', 'aria-expanded': 'false', text: 'Usage' }),
      el('button', { type: 'button', 'data-action': 'roll', disabled: record.revoked, text: 'Roll' }),
      el('button', { type: 'button', class: 'danger', 'data-action': 'revoke', disabled: record.revoked, text: 'Revoke' }))
    const row = el('tr', { 'data-key-id': record.id, class: `status-${status}` },
      el('td', { class: 'num', text: String(record.id) }),
      el('td', { class: 'name' }, record.name === '' ? el('span', { class: 'muted', text: 'unnamed' }) : record.name),
      el('td', { class: 'entity', text: record.entityId }),
      el('td', {}, el('span', { class: `badge status-badge ${status}`, text: status })),
      el('td', {}, ...scopeChips(record.scopes)),
      el('td', { class: 'ips' }, ...ipRules(record)),
      el('td', {}, dateCell(record.expiresAt, '')),
      el('td', {}, dateCell(record.lastUsedAt, 'never')),
      actions)
    actions.querySelector('[data-action="revoke"]').addEventListener('click', () => revokeKey(record))
    actions.querySelector('[data-action="roll"]').addEventListener('click', () => rollKey(record))
    actions.querySelector('[data-action="usage"]').addEventListener('click', event => toggleUsage(record, row, event.currentTarget))
    return row
  }

  function listQuery () {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(state.offset) })
    if (state.filter.entityId !== '') query.set('entityId', state.filter.entityId)
    if (state.filter.status === 'active') query.set('revoked', 'false')
    if (state.filter.status === 'active') query.set('expired', 'false')
    if (state.filter.status === 'expired') query.set('expired', 'true')
    if (state.filter.status === 'expired') query.set('revoked', 'false')
    if (state.filter.status === 'revoked') query.set('revoked', 'true')
    return query
  }

  async function loadKeys () {
    try {
      const page = await call('GET', `/?${listQuery()}`)
      state.total = page.total
      if (page.items.length === 0 && state.offset > 0 && state.total > 0) {
        state.offset = Math.max(0, Math.floor((state.total - 1) / PAGE_SIZE) * PAGE_SIZE)
        return loadKeys()
      }
      const rows = page.items.map(keyRow)
      byId('key-rows').replaceChildren(...(rows.length > 0 ? rows : [el('tr', {}, el('td', { colspan: '9', class: 'empty', text: 'No keys match.' }))]))
      const first = page.items.length === 0 ? 0 : state.offset + 1
      byId('page-info').textContent = `${first}–${state.offset + page.items.length} of ${state.total}`
      byId('prev-page').disabled = state.offset === 0
      byId('next-page').disabled = state.offset + PAGE_SIZE >= state.total
      say(byId('keys-error'), '')
    } catch (err) {
      handle(err, byId('keys-error'))
    }
  }

  byId('filter-form').addEventListener('submit', event => {
    event.preventDefault()
    const form = event.currentTarget
    state.filter = { entityId: form.elements.entityId.value.trim(), status: form.elements.status.value }
    state.offset = 0
    loadKeys()
  })
  byId('prev-page').addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE)
    loadKeys()
  })
  byId('next-page').addEventListener('click', () => {
    state.offset += PAGE_SIZE
    loadKeys()
  })

  async function revokeKey (record) {
    const answer = await confirmAction({
      title: `Revoke key ${record.id}?`,
      text: `"${record.name || 'unnamed'}" of ${record.entityId} stops working at once, on every instance. This cannot be undone.`,
      action: 'Revoke'
    })
    if (answer === null) return
    try {
      await call('POST', `/${record.id}/revoke`)
      showNotice(`Key ${record.id} revoked.`)
      await refreshAll()
    } catch (err) {
      handle(err, byId('keys-error'))
    }
  }

  async function rollKey (record) {
    const gracePeriod = await confirmAction({
      title: `Roll key ${record.id}?`,
      text: `"${record.name || 'unnamed'}" gets a new value, shown once. The current value works for the grace period.`,
      action: 'Roll',
      grace: true
    })
    if (gracePeriod === null) return
    try {
      const issued = await call('POST', `/${record.id}/roll`, { gracePeriod: /^\d+$/.test(gracePeriod) ? Number(gracePeriod) : gracePeriod })
      showNewKey(issued, `New value of key ${issued.record.id}`)
      await refreshAll()
    } catch (err) {
      handle(err, byId('keys-error'))
    }
  }

  // Usage: the requests a key made per route, from GET {prefix}/:id/usage.

  function renderUsage (container, usage) {
    const summary = el('p', {}, `${plural(usage.total, 'request')} counted; last use: `, usage.lastUsedAt ? dateCell(usage.lastUsedAt, '') : 'never', '.')
    if (!Array.isArray(usage.routes) || usage.routes.length === 0) {
      container.replaceChildren(summary)
      return
    }
    const rows = usage.routes.map(route => el('tr', {},
      el('td', { class: 'method', text: route.method }),
      el('td', { class: 'route', text: route.route }),
      el('td', { class: 'num', text: String(route.count) }),
      el('td', {}, dateCell(route.lastUsedAt, ''))))
    container.replaceChildren(summary, el('table', { class: 'usage-table' },
      el('thead', {}, el('tr', {}, el('th', { text: 'Method' }), el('th', { text: 'Route' }), el('th', { text: 'Requests' }), el('th', { text: 'Last used' }))),
      el('tbody', {}, ...rows)))
  }

  async function toggleUsage (record, row, button) {
    const next = row.nextElementSibling
    if (next !== null && next.classList.contains('usage-row')) {
      next.remove()
      button.setAttribute('aria-expanded', 'false')
      return
    }
    const container = el('div', { class: 'usage', text: 'Loading usage…' })
    row.after(el('tr', { class: 'usage-row' }, el('td', { colspan: '9' }, container)))
    button.setAttribute('aria-expanded', 'true')
    try {
      renderUsage(container, await call('GET', `/${record.id}/usage`))
    } catch (err) {
      if (usesKey && (err.status === 401 || err.status === 403)) return handle(err, byId('keys-error'))
      container.textContent = err.status === 404 && err.code !== 'FST_APIKEY_UNKNOWN_KEY' ? 'This server does not count usage.' : err.message
    }
  }

  // Creating a key, shown once

  function showNewKey (issued, title) {
    byId('new-key-title').textContent = title
    byId('new-key-value').value = issued.key
    byId('copy-key').textContent = 'Copy'
    show(byId('new-key'), true)
    byId('new-key').scrollIntoView({ block: 'nearest' })
    byId('new-key-value').select()
  }

  function hideNewKey () {
    byId('new-key-value').value = ''
    show(byId('new-key'), false)
  }

  byId('dismiss-key').addEventListener('click', hideNewKey)

  byId('copy-key').addEventListener('click', async () => {
    const input = byId('new-key-value')
    try {
      await navigator.clipboard.writeText(input.value)
    } catch {
      // Without the asynchronous clipboard (plain HTTP off localhost), the selected text is copied the old way.
      input.select()
      document.execCommand('copy')
    }
    byId('copy-key').textContent = 'Copied'
  })

  byId('create-form').addEventListener('submit', async event => {
    event.preventDefault()
    const form = event.currentTarget
    const fields = form.elements
    const payload = { name: fields.name.value.trim(), entityId: fields.entityId.value.trim() }
    const scopes = listOf(fields.scopes.value)
    const allowed = listOf(fields.whitelistedIps.value)
    const denied = listOf(fields.blacklistedIps.value)
    if (scopes.length > 0) payload.scopes = scopes
    if (allowed.length > 0) payload.whitelistedIps = allowed
    if (denied.length > 0) payload.blacklistedIps = denied
    if (fields.expiresAt.value !== '') {
      const expires = new Date(fields.expiresAt.value)
      if (Number.isNaN(expires.getTime())) return say(byId('create-error'), 'Expires: not a date.')
      payload.expiresAt = expires.toISOString()
    }
    try {
      const issued = await call('POST', '/', payload)
      say(byId('create-error'), '')
      form.reset()
      showNewKey(issued, `Key ${issued.record.id} for ${issued.record.entityId}`)
      state.offset = 0
      await refreshAll()
    } catch (err) {
      handle(err, byId('create-error'))
    }
  })

  function showNotice (message) {
    say(byId('notice'), message)
  }

  async function refreshAll () {
    await Promise.all([loadRotation(), loadKeys()])
  }

  render()
  if (signedIn()) refreshAll()
})()
