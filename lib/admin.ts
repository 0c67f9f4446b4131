// The admin page: a static page, script and stylesheet under {prefix}/admin, served with a strict Content-Security-Policy.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { FastifyInstance, FastifyReply, FastifySchema } from 'fastify'

export interface AdminPageOptions {
  /** Scheme of the Authorization header the page sends, the plugin's `keyword`. */
  keyword: string
  /** The app guards the management routes itself (`routes.preHandler`): the page asks for no key. */
  appGuard: boolean
}

// No inline script or style anywhere: the page loads its script and stylesheet from its own routes.
export const contentSecurityPolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'"
].join('; ')

const securityHeaders = {
  'content-security-policy': contentSecurityPolicy,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin'
}

// The build copies lib/admin next to the compiled file, so the same path works from lib/ and from dist/lib/.
const assetsDirectory = join(__dirname, 'admin')

function readAsset (name: string): string {
  return readFileSync(join(assetsDirectory, name), 'utf8')
}

function escapeHtml (text: string): string {
  return text.replace(/[&<>"']/g, char => `&#${char.charCodeAt(0)};`)
}

/** Registers the page on the routes' encapsulated instance, whose prefix is `prefix`. */
export function adminPage (options: AdminPageOptions): (fastify: FastifyInstance, prefix: string) => void {
  return (fastify, prefix) => {
    const api = prefix.replace(/\/+$/, '')
    const values: Record<string, string> = { api, assets: `${api}/admin`, keyword: options.keyword, auth: options.appGuard ? 'app' : 'key' }
    const page = readAsset('index.html').replace(/\{\{(\w+)\}\}/g, (_, name: string) => escapeHtml(values[name]))
    const script = readAsset('admin.js')
    const style = readAsset('admin.css')

    // Public: the page and its files hold no data; every call the page makes carries the admin key.
    const route = { config: { apiKey: false as const }, schema: { hide: true } as FastifySchema }
    const send = (reply: FastifyReply, type: string, content: string) => reply.headers(securityHeaders).type(type).send(content)
    fastify.get('/admin', route, async (request, reply) => send(reply, 'text/html; charset=utf-8', page))
    fastify.get('/admin/admin.js', route, async (request, reply) => send(reply, 'text/javascript; charset=utf-8', script))
    fastify.get('/admin/admin.css', route, async (request, reply) => send(reply, 'text/css; charset=utf-8', style))
  }
}
