// A TCP proxy in front of PostgreSQL that a test can cut and restore, to make the database unreachable for real.
import { createServer, connect, type Server, type Socket } from 'node:net'
import type { AddressInfo } from 'node:net'
import knexFactory, { type Knex } from 'knex'
import type { Teardown } from './database'

export interface DatabaseProxy {
  port: number
  /** Drops every connection and refuses new ones. */
  cut: () => void
  restore: () => void
  close: () => Promise<void>
}

export async function startDatabaseProxy (target = { host: '127.0.0.1', port: 5432 }): Promise<DatabaseProxy> {
  let up = true
  const sockets = new Set<Socket>()
  const server: Server = createServer(client => {
    if (!up) {
      client.destroy()
      return
    }
    const upstream = connect(target)
    sockets.add(client)
    sockets.add(upstream)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    cut () {
      up = false
      for (const socket of sockets) socket.destroy()
      sockets.clear()
    },
    restore () {
      up = true
    },
    close: () => new Promise<void>(resolve => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  }
}

/** A proxy in front of the test database and a Knex that reaches the test's schema only through it. */
export async function connectThroughProxy (t: Teardown, databaseUrl: string, pool = { max: 4, acquireConnectionTimeout: 1000 }): Promise<{ proxy: DatabaseProxy, knex: Knex }> {
  const proxy = await startDatabaseProxy()
  t.teardown(() => proxy.close())
  const url = new URL(databaseUrl)
  url.port = String(proxy.port)
  const knex = knexFactory({ client: 'pg', connection: url.toString(), pool: { min: 0, max: pool.max }, acquireConnectionTimeout: pool.acquireConnectionTimeout })
  t.teardown(() => knex.destroy())
  return { proxy, knex }
}
