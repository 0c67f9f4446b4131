// The server secrets: their env schema and how the plugin reads them from options or the environment.
import envSchemaLoader from 'env-schema'
import { isValidSecret, SECRET_PATTERN_SOURCE } from './fernet'
import { InvalidSecretError, MissingSecretError, SameSecretsError } from './errors'

/** JSON-schema fragment for `@fastify/env` / `env-schema` that validates both secrets' shape. */
export const envSchema = {
  type: 'object',
  required: ['FERNET_SECRET'],
  properties: {
    FERNET_SECRET: { type: 'string', pattern: SECRET_PATTERN_SOURCE },
    ROTATION_FERNET_SECRET: { type: 'string', pattern: SECRET_PATTERN_SOURCE }
  }
} as const

export interface Secrets {
  fernetSecret: string
  rotationFernetSecret?: string
}

export interface SecretOptions {
  fernetSecret?: string
  rotationFernetSecret?: string
}

/**
 * Options win over the environment. Errors name the option or variable and never echo its value,
 * which is why env-schema's own messages are translated here.
 */
export function loadSecrets (options: SecretOptions, env: NodeJS.ProcessEnv = process.env): Secrets {
  const fernetSecret = readSecret('FERNET_SECRET', options.fernetSecret, env)
  const rotationFernetSecret = readSecret('ROTATION_FERNET_SECRET', options.rotationFernetSecret, env)
  if (fernetSecret === undefined) throw new MissingSecretError('FERNET_SECRET')
  if (rotationFernetSecret !== undefined && rotationFernetSecret === fernetSecret) throw new SameSecretsError()
  return rotationFernetSecret === undefined ? { fernetSecret } : { fernetSecret, rotationFernetSecret }
}

function readSecret (name: keyof typeof envSchema.properties, option: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (option !== undefined) {
    if (typeof option !== 'string' || !isValidSecret(option)) throw new InvalidSecretError(name)
    return option
  }
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  try {
    envSchemaLoader({ schema: { type: 'object', properties: { [name]: envSchema.properties[name] } }, data: { [name]: raw }, dotenv: false })
  } catch {
    throw new InvalidSecretError(name)
  }
  return raw
}
