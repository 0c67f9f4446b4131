import { test } from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createTestDatabase } from './helpers/database'
import { secretA } from './helpers/app'

test('close() releases the pool, the LISTEN connection and every timer: the process exits by itself', async t => {
  const db = await createTestDatabase(t, 'shutdown')
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fixtures', 'apps', 'close-and-exit.ts')], {
    env: { ...process.env, DATABASE_URL: db.url, FERNET_SECRET: secretA },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', chunk => { stdout += chunk })
  child.stderr.on('data', chunk => { stderr += chunk })
  const started = Date.now()
  const outcome = await new Promise<{ code: number | null, hung: boolean }>(resolve => {
    // Generous: a hang shows as the 20 s timer, a clean exit takes well under it.
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      resolve({ code: null, hung: true })
    }, 20_000)
    child.on('exit', code => {
      clearTimeout(timer)
      resolve({ code, hung: false })
    })
  })
  t.equal(outcome.hung, false, `the process exited by itself (${Date.now() - started} ms)`)
  t.equal(outcome.code, 0, stderr)
  t.match(stdout, /closed after 20 requests/)
})
