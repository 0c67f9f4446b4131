// Audit events: who created, revoked, rolled or reissued a key and who started, stopped or completed a rotation.
import type { FastifyBaseLogger } from 'fastify'

export type AuditEventType =
  | 'key.created' | 'key.revoked' | 'key.rolled' | 'key.reissued'
  | 'rotation.started' | 'rotation.stopped' | 'rotation.completed'

export interface AuditEvent {
  type: AuditEventType
  /** Who did it: `api-key:<id>` for an admin key, `cli`, `system` for automatic completion, or what the app passed. */
  actor: string
  at: Date
  keyId?: number
  rotationId?: number
  /** Non-secret details: names, fingerprints, grace periods. */
  details?: Record<string, unknown>
}

/** Who acts, passed to the decorators' write methods; the routes pass the admin key. */
export interface ActionContext {
  actor?: string
}

export type OnAuditEvent = (event: AuditEvent) => void | Promise<void>

export class Audit {
  readonly #log: FastifyBaseLogger
  readonly #onAuditEvent: OnAuditEvent | undefined

  constructor (log: FastifyBaseLogger, onAuditEvent?: OnAuditEvent) {
    this.#log = log
    this.#onAuditEvent = onAuditEvent
  }

  record (type: AuditEventType, context: ActionContext | undefined, fields: Omit<AuditEvent, 'type' | 'actor' | 'at'> = {}): void {
    const event: AuditEvent = { type, actor: context?.actor ?? 'app', at: new Date(), ...fields }
    this.#log.info({ audit: event }, `fastify-simple-apikey: ${type}`)
    if (this.#onAuditEvent === undefined) return
    // The app's store of events must not turn a done revoke into a failed one.
    Promise.resolve().then(() => this.#onAuditEvent!(event)).catch(err => {
      this.#log.error({ err, auditEvent: type }, 'fastify-simple-apikey: onAuditEvent failed')
    })
  }
}
