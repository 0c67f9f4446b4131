// Secret rotation: which configured secret encrypts and which decrypt, from the rotations table and the clock.
import type { Knex } from 'knex'
import type { FastifyBaseLogger } from 'fastify'
import { Keyring, fingerprint } from './keyring'
import type { Secrets } from './env'
import type { DecryptOptions, Secret } from './fernet'
import type { ActionContext, Audit } from './audit'
import { NoUsableSecretError, RotationInProgressError, RotationNotRunningError, RotationSecretMissingError } from './errors'

export type RotationPhase = 'idle' | 'staged' | 'transition' | 'completed'

export interface RotationStatus {
  phase: RotationPhase
  /** The rotation in progress or last completed, if any. */
  rotation: { id: number, startedAt: Date, endsAt: Date, fromFingerprint: string | null, toFingerprint: string | null } | null
  encryptingFingerprint: string
  acceptedFingerprints: string[]
  /** The configured secret a rotation would move to, if any. */
  stagedFingerprint: string | null
  /** Fingerprint of the secret the next completion retires, if any. */
  retiringFingerprint: string | null
  /** Live keys (not revoked, not expired) last issued under the secret the next completion retires. */
  keysToRetire: number
}

interface RotationRow {
  id: number
  started: Date
  ended: Date
  from_fingerprint: string | null
  to_fingerprint: string | null
  outcome: string
}

interface ConfiguredSecret {
  secret: string
  fingerprint: string
}

interface Plan {
  phase: RotationPhase
  rotation: RotationRow | null
  encrypting: ConfiguredSecret
  accepted: ConfiguredSecret[]
  staged: ConfiguredSecret | null
  retiring: ConfiguredSecret | null
  /** Configured secrets a completed rotation retired: never accepted again. */
  retiredConfigured: ConfiguredSecret[]
  /** Epoch ms at which the plan changes by itself (a transition's end), if any. */
  changesAt: number | null
}

export interface RotatingKeyringOptions {
  secrets: Secrets
  knex: Knex
  tables: { keys: string, rotations: string }
  rotationPeriod: number
  log: FastifyBaseLogger
  audit: Audit
  /** Called after the keyring changed, so that cached verifications are dropped. */
  onChange: () => void
  /** Tells the other instances to re-read the rotation. */
  publish: () => Promise<void>
}

// setTimeout takes at most 2^31-1 ms; a longer wait is cut into steps.
const MAX_TIMER_MS = 2 ** 31 - 1

/** `fastify.keyring`: the live keyring, following the rotation state shared through the database. */
export class RotatingKeyring {
  readonly #options: RotatingKeyringOptions
  readonly #configured: ConfiguredSecret[]
  #plan: Plan | null = null
  #keyring: Keyring
  #timer: NodeJS.Timeout | null = null
  #closed = false

  constructor (options: RotatingKeyringOptions) {
    this.#options = options
    const { fernetSecret, rotationFernetSecret } = options.secrets
    this.#configured = [fernetSecret, rotationFernetSecret]
      .filter((secret): secret is string => secret !== undefined)
      .map(secret => ({ secret, fingerprint: fingerprint(secret) }))
    this.#keyring = new Keyring([fernetSecret])
  }

  /** The keyring in force now. */
  get current (): Keyring {
    return this.#keyring
  }

  encrypt (payload: object, options?: { now?: Date }): string {
    return this.#keyring.encrypt(payload, options)
  }

  decrypt (token: string, options?: DecryptOptions): Record<string, unknown> {
    return this.#keyring.decrypt(token, options)
  }

  open (token: string, options?: DecryptOptions) {
    return this.#keyring.open(token, options)
  }

  reencrypt (token: string): string {
    return this.#keyring.reencrypt(token)
  }

  fingerprint (secret: Secret): string {
    return fingerprint(secret)
  }

  /** Re-reads the rotation state and marks finished rotations completed; at start, on notifications and on a timer. */
  async refresh (): Promise<void> {
    const rows = await this.#options.knex(this.#options.tables.rotations)
      .select('id', 'started', 'ended', 'from_fingerprint', 'to_fingerprint', 'outcome')
      .where('is_rotation_enabled', true)
      .whereNot('outcome', 'stopped')
      .orderBy('started', 'desc')
      .orderBy('id', 'desc') as RotationRow[]
    await this.#markCompleted()
    this.#apply(this.#planFrom(rows.map(row => ({ ...row, id: Number(row.id), started: new Date(row.started), ended: new Date(row.ended) })), Date.now()))
  }

  async rotate (context?: ActionContext): Promise<RotationStatus> {
    await this.refresh()
    const plan = this.#plan!
    if (plan.phase === 'transition') throw new RotationInProgressError()
    if (plan.staged === null) {
      throw new RotationSecretMissingError(this.#options.secrets.rotationFernetSecret === undefined
        ? 'ROTATION_FERNET_SECRET is not set.'
        : 'ROTATION_FERNET_SECRET is a secret that an earlier rotation retired or already encrypts; set a new one.')
    }
    const started = new Date()
    let id: number
    try {
      const [row] = await this.#options.knex(this.#options.tables.rotations).insert({
        is_rotation_enabled: true,
        started,
        ended: new Date(started.getTime() + this.#options.rotationPeriod),
        from_fingerprint: plan.encrypting.fingerprint,
        to_fingerprint: plan.staged.fingerprint,
        outcome: 'running'
      }).returning('id')
      id = Number(row.id)
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new RotationInProgressError()
      throw err
    }
    this.#options.audit.record('rotation.started', context, {
      rotationId: id,
      details: { from: plan.encrypting.fingerprint, to: plan.staged.fingerprint, endsAt: new Date(started.getTime() + this.#options.rotationPeriod) }
    })
    await this.refresh()
    await this.#options.publish()
    return this.status()
  }

  async stopRotation (context?: ActionContext): Promise<RotationStatus> {
    const rows = await this.#options.knex(this.#options.tables.rotations)
      .where('outcome', 'running')
      .where('ended', '>', new Date())
      .update({ is_rotation_enabled: false, ended: new Date(), outcome: 'stopped' })
      .returning('id')
    if (rows.length === 0) {
      await this.refresh()
      throw new RotationNotRunningError()
    }
    this.#options.audit.record('rotation.stopped', context, { rotationId: Number(rows[0].id) })
    await this.refresh()
    await this.#options.publish()
    return this.status()
  }

  async status (): Promise<RotationStatus> {
    const plan = this.#plan!
    let keysToRetire = 0
    if (plan.retiring !== null) {
      const query = this.#options.knex(this.#options.tables.keys)
        .where('revoked', false)
        .where('expiry_date', '>', new Date())
        .where(builder => {
          builder.where('secret_fingerprint', plan.retiring!.fingerprint)
          // Keys issued before fingerprints were kept (drf-simple-apikey's) are under FERNET_SECRET.
          if (plan.retiring!.secret === this.#options.secrets.fernetSecret) builder.orWhereNull('secret_fingerprint')
        })
        .count<Array<{ count: string | number }>>({ count: '*' })
      keysToRetire = Number((await query)[0].count)
    }
    const rotation = plan.rotation
    return {
      phase: plan.phase,
      rotation: rotation === null
        ? null
        : { id: rotation.id, startedAt: rotation.started, endsAt: rotation.ended, fromFingerprint: rotation.from_fingerprint, toFingerprint: rotation.to_fingerprint },
      encryptingFingerprint: plan.encrypting.fingerprint,
      acceptedFingerprints: plan.accepted.map(secret => secret.fingerprint),
      stagedFingerprint: plan.staged?.fingerprint ?? null,
      retiringFingerprint: plan.retiring?.fingerprint ?? null,
      keysToRetire
    }
  }

  get phase (): RotationPhase {
    return this.#plan?.phase ?? 'idle'
  }

  close (): void {
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
  }

  /** Bookkeeping off the request path: the one instance whose update wins reports the completion. */
  async #markCompleted (): Promise<void> {
    const completed = await this.#options.knex(this.#options.tables.rotations)
      .where('outcome', 'running')
      .where('ended', '<=', new Date())
      .update({ outcome: 'completed' })
      .returning(['id', 'from_fingerprint', 'to_fingerprint'])
    for (const row of completed) {
      this.#options.audit.record('rotation.completed', { actor: 'system' }, {
        rotationId: Number(row.id),
        details: { retired: row.from_fingerprint, encrypting: row.to_fingerprint }
      })
    }
  }

  #planFrom (rows: RotationRow[], now: number): Plan {
    const configured = this.#configured
    const byFingerprint = (fp: string | null) => configured.find(secret => secret.fingerprint === fp) ?? null
    const [primary, secondary] = configured
    const retired = new Set(rows
      .filter(row => row.ended.getTime() <= now && row.from_fingerprint !== null)
      .map(row => row.from_fingerprint))
    const latest = rows[0] ?? null

    let phase: RotationPhase
    let encrypting: ConfiguredSecret | null = null
    let from: ConfiguredSecret | null = null
    let changesAt: number | null = null
    if (latest !== null && latest.ended.getTime() > now) {
      // A rotation row without fingerprints is drf-simple-apikey's: FERNET_SECRET to ROTATION_FERNET_SECRET.
      const drfRow = latest.to_fingerprint === null
      encrypting = drfRow ? secondary ?? null : byFingerprint(latest.to_fingerprint)
      from = drfRow ? primary : byFingerprint(latest.from_fingerprint)
      phase = 'transition'
      changesAt = latest.ended.getTime()
      if (encrypting === null) {
        this.#options.log.error({ rotationId: latest.id, to: latest.to_fingerprint },
          'fastify-simple-apikey: the rotation in progress moves to a secret that is not configured; keeping FERNET_SECRET')
      }
    } else {
      const completedTo = latest?.to_fingerprint ?? null
      encrypting = completedTo === null ? null : byFingerprint(completedTo)
      phase = encrypting === null ? 'idle' : 'completed'
    }
    if (encrypting === null || retired.has(encrypting.fingerprint)) {
      encrypting = configured.find(secret => !retired.has(secret.fingerprint)) ?? null
      if (phase === 'transition') phase = 'idle'
    }
    if (encrypting === null) {
      throw new NoUsableSecretError('every configured secret was retired by a completed rotation; set FERNET_SECRET to the secret the last rotation moved to')
    }
    const usable = configured.filter(secret => !retired.has(secret.fingerprint))
    const accepted = [encrypting, ...usable.filter(secret => secret !== encrypting)]
    const staged = phase === 'transition' ? null : usable.find(secret => secret !== encrypting) ?? null
    if (phase === 'idle' && staged !== null) phase = 'staged'
    const retiring = phase === 'transition' ? from : staged === null ? null : encrypting
    return {
      phase,
      rotation: latest,
      encrypting,
      accepted,
      staged,
      retiring,
      retiredConfigured: configured.filter(secret => retired.has(secret.fingerprint)),
      changesAt
    }
  }

  #apply (plan: Plan): void {
    const previous = this.#plan
    this.#plan = plan
    const changed = previous === null ||
      previous.accepted.map(secret => secret.fingerprint).join() !== plan.accepted.map(secret => secret.fingerprint).join()
    if (changed) {
      this.#keyring = new Keyring(plan.accepted.map(secret => secret.secret))
      if (previous !== null) this.#options.onChange()
      for (const secret of plan.retiredConfigured) {
        this.#options.log.warn({ fingerprint: secret.fingerprint },
          'fastify-simple-apikey: a configured secret was retired by a completed rotation and is no longer accepted; remove it from the configuration')
      }
    }
    this.#schedule(plan.changesAt)
  }

  // The transition ends by the clock, with no restart and no write on the request path.
  #schedule (changesAt: number | null): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (changesAt === null || this.#closed) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.refresh().catch(err => {
        this.#options.log.error({ err }, 'fastify-simple-apikey: could not re-read the rotation state')
        // Without the database, the clock alone still ends the transition.
        if (this.#plan !== null) this.#apply(this.#planFrom(this.#plan.rotation === null ? [] : [this.#plan.rotation], Date.now()))
      })
    }, Math.min(Math.max(changesAt - Date.now(), 0) + 5, MAX_TIMER_MS))
    this.#timer.unref()
  }
}
