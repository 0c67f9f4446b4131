import { test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = join(__dirname, '..')

function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    }).on('error', reject)
  })
}

interface Started {
  child: ChildProcess
  output: string
  curl: string
}

/** Runs `npm start`'s command as a newcomer would: no DATABASE_URL, no FERNET_SECRET, so the embedded database. */
function startExample (dataDir: string, port: number): Promise<Started> {
  const env: NodeJS.ProcessEnv = { ...process.env, SIMPLE_APIKEY_DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: 'warn' }
  delete env.DATABASE_URL
  delete env.FERNET_SECRET
  delete env.ROTATION_FERNET_SECRET
  const child = spawn(process.execPath, [join(root, 'example', 'server.js')], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  return new Promise((resolve, reject) => {
    let output = ''
    const timer = setTimeout(() => reject(new Error(`the example printed no curl line in 60 s:\n${output}`)), 60_000)
    const read = (chunk: Buffer) => {
      output += chunk.toString()
      const curl = /^\s*(curl -H .+)$/m.exec(output)
      if (curl !== null && output.includes('delete that folder to start over')) {
        clearTimeout(timer)
        resolve({ child, output, curl: curl[1] })
      }
    }
    child.stdout!.on('data', read)
    child.stderr!.on('data', read)
    child.once('exit', code => {
      clearTimeout(timer)
      reject(new Error(`the example exited with ${code}:\n${output}`))
    })
  })
}

/** Sends SIGTERM, as a service manager would, and gives the exit code. */
function stop (child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise(resolve => {
    child.once('exit', code => resolve(code))
    child.kill('SIGTERM')
  })
}

function shell (command: string) {
  const result = spawnSync('sh', ['-c', `${command} -s -w '\\n%{http_code}'`], { encoding: 'utf8' })
  const lines = result.stdout.trimEnd().split('\n')
  return { status: Number(lines.pop()), body: lines.join('\n') }
}

test('the example server starts on the embedded database and the curl line it prints works', async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'simple-apikey-example-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const port = await freePort()

  const first = await startExample(dataDir, port)
  t.teardown(() => stop(first.child))
  t.match(first.curl, new RegExp(`^curl -H "Authorization: Api-Key sk_demo_gAAAAA[A-Za-z0-9_=-]+" http://127\\.0\\.0\\.1:${port}/fruits$`), 'a curl line with the demo key')
  const answer = shell(first.curl)
  t.equal(answer.status, 200, 'the printed curl is accepted')
  t.same(JSON.parse(answer.body), { entity: 'demo-user', fruits: ['apple', 'pear', 'quince'] })
  const withoutKey = shell(`curl http://127.0.0.1:${port}/fruits`)
  t.equal(withoutKey.status, 401, 'the same route without the key is refused')
  t.equal(JSON.parse(withoutKey.body).code, 'FST_APIKEY_MISSING')
  t.equal(shell(`curl http://127.0.0.1:${port}/health`).status, 200, 'the public route needs no key')
  t.match(first.output, /Admin page: http:\/\/127\.0\.0\.1:\d+\/apikeys\/admin/, 'points to the admin page')
  t.notMatch(first.output, /"level":\s*(40|50|60)/, 'no warning or error logged')
  t.equal(await stop(first.child), 0, 'SIGTERM closes the app and exits cleanly')

  const second = await startExample(dataDir, port)
  t.teardown(() => stop(second.child))
  t.equal(second.curl, first.curl, 'a restart keeps the data, the secret and the demo key')
  t.equal(shell(second.curl).status, 200, 'and the key still works')
  t.equal(await stop(second.child), 0)
})
