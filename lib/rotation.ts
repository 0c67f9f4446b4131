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
  /** The rotation in progress, else the last one completed, if any. */
  rotation: {
    id: number
    startedAt: Date
    /** null only on a drf-simple-apikey row without an end: a transition until stopped. */
    endsAt: Date | null
    fromFingerprint: string | null
    toFingerprint: string | null
  } | null
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
  enabled: boolean
  started: Date
  /** null on drf-simple-apikey's open-ended rows. */
  ended: Date | null
  from: string | null
  to: string | null
  /** running, completed or stopped: the plugin's bookkeeping; NULL on rows Django wrote into an adopted drf-simple-apikey table. */
  outcome: string | null
}

interface ConfiguredSecret {
  secret: string
  fingerprint: string
}

interface Plan {
  phase: RotationPhase
  /** The rows the plan was made from, to re-plan by the clock when the database cannot be read. */
  rows: RotationRow[]
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
  /** Called when a secret stopped being accepted, so that cached verifications are dropped. */
  onChange: () => void
  /** Tells the other instances to re-read the rotation. */
  publish: () => Promise<void>
}

// setTimeout takes at most 2^31-1 ms; a longer wait is cut into steps.
const MAX_TIMER_MS = 2 ** 31 - 1
const ALL_RETIRED = 'every configured secret was retired by a completed rotation; set FERNET_SECRET to the secret the last rotation moved to'

/** `fastify.keyring`: the live keyring, following the rotation state shared through the database. */
export class RotatingKeyring {
  readonly #options: RotatingKeyringOptions
  readonly #configured: ConfiguredSecret[]
  #plan: Plan | null = null
  // null once every configured secret is retired: then every use fails with NoUsableSecretError.
  #keyring: Keyring | null
  #timer: NodeJS.Timeout | null = null
  #closed = false
  #reading: Promise<void> | null = null
  #queued: Promise<void> | null = null

  constructor (options: RotatingKeyringOptions) {
    this.#options = options
    const { fernetSecret, rotationFernetSecret } = options.secrets
    this.#configured = [fernetSecret, rotationFernetSecret]
      .filter((secret): secret is string => secret !== undefined)
      .map(secret => ({ secret, fingerprint: fingerprint(secret) }))
    this.#keyring = new Keyring([fernetSecret])
  }

  /**
   * The keyring in force now. A transition ends on the clock, read here on every use: the timer that re-reads the
   * database may run late under load, and until it does no request may still see the retired secret. That timer stays
   * set: it still records the completion, off the request path.
   */
  get current (): Keyring {
    this.#followClock()
    if (this.#keyring === null) throw new NoUsableSecretError(ALL_RETIRED)
    return this.#keyring
  }

  encrypt (payload: object, options?: { now?: Date }): string {
    return this.current.encrypt(payload, options)
  }

  decrypt (token: string, options?: DecryptOptions): Record<string, unknown> {
    return this.current.decrypt(token, options)
  }

  open (token: string, options?: DecryptOptions) {
    return this.current.open(token, options)
  }

  reencrypt (token: string): string {
    return this.current.reencrypt(token)
  }

  fingerprint (secret: Secret): string {
    return fingerprint(secret)
  }

  /**
   * Re-reads the rotation state and records finished rotations; at start, on notifications, on a timer and periodically.
   * Reads run one at a time, so that an older read never overwrites a newer one; a call made during a read gets the next one.
   */
  refresh (): Promise<void> {
    if (this.#closed) return Promise.resolve()
    if (this.#queued !== null) return this.#queued
    if (this.#reading !== null) {
      const queued = this.#reading.catch(() => {}).then(() => {
        this.#queued = null
        return this.refresh()
      })
      this.#queued = queued
      return queued
    }
    const reading = this.#read().finally(() => { this.#reading = null })
    this.#reading = reading
    return reading
  }

  async rotate (context?: ActionContext): Promise<RotationStatus> {
    await this.refresh()
    const plan = this.#usablePlan()
    if (plan.phase === 'transition') throw new RotationInProgressError()
    if (plan.staged === null) {
      throw new RotationSecretMissingError(this.#options.secrets.rotationFernetSecret === undefined
        ? 'ROTATION_FERNET_SECRET is not set.'
        : 'ROTATION_FERNET_SECRET is a secret that an earlier rotation retired or that already encrypts; set a new one.')
    }
    const started = new Date()
    const endsAt = new Date(started.getTime() + this.#options.rotationPeriod)
    let id: number
    try {
      const [row] = await this.#options.knex(this.#options.tables.rotations).insert({
        is_rotation_enabled: true,
        started,
        ended: endsAt,
        from_fingerprint: plan.encrypting.fingerprint,
        to_fingerprint: plan.staged.fingerprint,
        outcome: 'running'
      }).returning('id')
      id = Number(row.id)
    } catch (err) {
      // The database's one-running-rotation index: another instance started one a moment ago.
      if ((err as { code?: string }).code === '23505') {
        await this.refresh()
        throw new RotationInProgressError()
      }
      throw err
    }
    this.#options.audit.record('rotation.started', context, {
      rotationId: id,
      details: { from: plan.encrypting.fingerprint, to: plan.staged.fingerprint, endsAt }
    })
    await this.refresh()
    await this.#options.publish()
    return this.status()
  }

  async stopRotation (context?: ActionContext): Promise<RotationStatus> {
    const now = new Date()
    const rows = await this.#options.knex(this.#options.tables.rotations)
      // Django's rows (outcome NULL) too, as `manage.py rotation --stop` would stop them.
      .where(builder => builder.where('outcome', 'running').orWhereNull('outcome'))
      .where('is_rotation_enabled', true)
      .where(builder => builder.whereNull('ended').orWhere('ended', '>', now))
      .update({ is_rotation_enabled: false, ended: now, outcome: 'stopped' })
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
    const plan = this.#usablePlan()
    let keysToRetire = 0
    const retiring = plan.retiring
    if (retiring !== null) {
      const query = this.#options.knex(this.#options.tables.keys)
        .where('revoked', false)
        .where('expiry_date', '>', new Date())
        .where(builder => {
          builder.where('secret_fingerprint', retiring.fingerprint)
          // Keys issued before fingerprints were kept (drf-simple-apikey's) are under FERNET_SECRET.
          if (retiring.secret === this.#options.secrets.fernetSecret) builder.orWhereNull('secret_fingerprint')
        })
        .count<Array<{ count: string | number }>>({ count: '*' })
      keysToRetire = Number((await query)[0].count)
    }
    const rotation = plan.rotation
    return {
      phase: plan.phase,
      rotation: rotation === null
        ? null
        : { id: rotation.id, startedAt: rotation.started, endsAt: rotation.ended, fromFingerprint: rotation.from, toFingerprint: rotation.to },
      encryptingFingerprint: plan.encrypting.fingerprint,
      acceptedFingerprints: plan.accepted.map(secret => secret.fingerprint),
      stagedFingerprint: plan.staged?.fingerprint ?? null,
      retiringFingerprint: retiring?.fingerprint ?? null,
      keysToRetire
    }
  }

  get phase (): RotationPhase {
    this.#followClock()
    return this.#plan?.phase ?? 'idle'
  }

  close (): void {
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
  }

  #followClock (): void {
    const plan = this.#plan
    if (plan !== null && plan.changesAt !== null && Date.now() >= plan.changesAt) this.#replan(plan.rows, Date.now(), { keepTimer: true })
  }

  #usablePlan (): Plan {
    this.#followClock()
    if (this.#keyring === null || this.#plan === null) throw new NoUsableSecretError(ALL_RETIRED)
    return this.#plan
  }

  async #read (): Promise<void> {
    const { knex, tables } = this.#options
    const now = Date.now()
    const stored = await knex(tables.rotations)
      .select('id', 'is_rotation_enabled', 'started', 'ended', 'from_fingerprint', 'to_fingerprint', 'outcome')
      // outcome <> 'stopped' alone would drop Django's rows, whose outcome is NULL.
      .where(builder => builder.whereNull('outcome').orWhereNot('outcome', 'stopped'))
      .orderBy('started', 'desc')
      .orderBy('id', 'desc')
    const rows: RotationRow[] = stored.map(row => ({
      id: Number(row.id),
      enabled: row.is_rotation_enabled === true,
      started: new Date(row.started),
      ended: row.ended === null ? null : new Date(row.ended),
      from: row.from_fingerprint ?? null,
      to: row.to_fingerprint ?? null,
      outcome: row.outcome
    }))
    if (rows.some(row => row.outcome === 'running' && (!row.enabled || hasEnded(row, now)))) await this.#settle(new Date(now))
    // A completed rotation stays completed even if drf-simple-apikey later clears its flag; any other row counts while enabled.
    this.#replan(rows.filter(row => row.outcome === 'completed' || row.enabled), now)
  }

  /** Bookkeeping off the request path: the one instance whose update wins reports the completion. */
  async #settle (now: Date): Promise<void> {
    const table = this.#options.tables.rotations
    await this.#options.knex(table).where('outcome', 'running').where('is_rotation_enabled', false).update({ outcome: 'stopped' })
    const completed = await this.#options.knex(table)
      .where('outcome', 'running')
      .where('is_rotation_enabled', true)
      .where('ended', '<=', now)
      .update({ outcome: 'completed' })
      .returning(['id', 'from_fingerprint', 'to_fingerprint'])
    for (const row of completed) {
      this.#options.audit.record('rotation.completed', { actor: 'system' }, {
        rotationId: Number(row.id),
        details: { retired: row.from_fingerprint, encrypting: row.to_fingerprint }
      })
    }
  }

  #replan (rows: RotationRow[], now: number, options: { keepTimer?: boolean } = {}): void {
    const usable = this.#configured.filter(secret => !retiredBy(rows, now).has(secret.fingerprint))
    if (usable.length > 0) {
      this.#apply(this.#planFrom(rows, now), options)
      return
    }
    // At start, registering fails with the reason; later, this instance refuses every key rather than accept a retired secret.
    if (this.#plan === null) throw new NoUsableSecretError(ALL_RETIRED)
    if (this.#keyring === null) return
    this.#keyring = null
    if (options.keepTimer !== true) this.#schedule(null)
    this.#options.log.error(`fastify-simple-apikey: ${ALL_RETIRED}; every key is refused until then`)
    this.#options.onChange()
  }

  #planFrom (rows: RotationRow[], now: number): Plan {
    const configured = this.#configured
    const retired = retiredBy(rows, now)
    const usable = configured.filter(secret => !retired.has(secret.fingerprint))
    const known = (fp: string | null) => usable.find(secret => secret.fingerprint === fp) ?? null
    const retiredConfigured = configured.filter(secret => retired.has(secret.fingerprint))
    const latest = rows[0] ?? null

    if (latest !== null && !hasEnded(latest, now)) {
      // A rotation row without fingerprints is drf-simple-apikey's: FERNET_SECRET to ROTATION_FERNET_SECRET.
      const drfRow = latest.to === null
      const to = drfRow ? known(configured[1]?.fingerprint ?? null) : known(latest.to)
      const from = drfRow ? known(configured[0].fingerprint) : known(latest.from)
      if (to === null) {
        this.#options.log.error({ rotationId: latest.id, to: latest.to },
          'fastify-simple-apikey: the rotation in progress moves to a secret this instance does not have; set ROTATION_FERNET_SECRET on every instance')
      }
      const encrypting = to ?? from ?? usable[0]
      return {
        phase: 'transition',
        rows,
        rotation: latest,
        encrypting,
        accepted: [encrypting, ...usable.filter(secret => secret !== encrypting)],
        staged: null,
        retiring: from === encrypting ? null : from,
        retiredConfigured,
        changesAt: latest.ended?.getTime() ?? null
      }
    }

    const completedTo = latest === null ? null : known(latest.to)
    const encrypting = completedTo ?? usable[0]
    const staged = usable.find(secret => secret !== encrypting) ?? null
    return {
      phase: staged !== null ? 'staged' : completedTo !== null ? 'completed' : 'idle',
      rows,
      rotation: completedTo === null ? null : latest,
      encrypting,
      accepted: [encrypting, ...usable.filter(secret => secret !== encrypting)],
      staged,
      retiring: staged === null ? null : encrypting,
      retiredConfigured,
      changesAt: null
    }
  }

  #apply (plan: Plan, options: { keepTimer?: boolean } = {}): void {
    const previous = this.#plan
    const previousKeyring = this.#keyring
    this.#plan = plan
    if (options.keepTimer !== true) this.#schedule(plan.changesAt)
    const sameKeyring = previous !== null && previousKeyring !== null &&
      previous.accepted.map(secret => secret.fingerprint).join() === plan.accepted.map(secret => secret.fingerprint).join()
    if (sameKeyring) return
    this.#keyring = new Keyring(plan.accepted.map(secret => secret.secret))
    // A cached verification stays right while the secret that opened it is accepted: only dropping a secret drops the cache.
    if (previous !== null && previousKeyring !== null && previous.accepted.some(secret => !plan.accepted.includes(secret))) {
      this.#options.onChange()
    }
    for (const secret of plan.retiredConfigured) {
      this.#options.log.warn({ fingerprint: secret.fingerprint },
        'fastify-simple-apikey: a configured secret was retired by a completed rotation and is never accepted again; remove it from the configuration')
    }
  }

  // The transition ends by the clock, with no restart and no write on the request path.
  #schedule (changesAt: number | null): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (changesAt === null || this.#closed) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.refresh().catch(err => {
        this.#options.log.error({ err }, 'fastify-simple-apikey: could not re-read the rotation state; ending the transition by the clock')
        if (this.#plan !== null) this.#replan(this.#plan.rows, Date.now())
      })
    }, Math.min(Math.max(changesAt - Date.now(), 0) + 5, MAX_TIMER_MS))
    this.#timer.unref()
  }
}

function hasEnded (row: RotationRow, now: number): boolean {
  return row.ended !== null && row.ended.getTime() <= now
}

/** Retired secrets: the `from` of every rotation whose end has passed. */
function retiredBy (rows: RotationRow[], now: number): Set<string> {
  return new Set(rows.filter(row => hasEnded(row, now) && row.from !== null).map(row => row.from!))
}
