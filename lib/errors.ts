// Every error the plugin raises, in one place, each with its own FST_APIKEY_* code.
import createError from '@fastify/error'

// Messages of the request-path errors are drf-simple-apikey's, so that clients moving over see the same text.
export const MissingKeyError = createError('FST_APIKEY_MISSING', 'Authentication credentials were not provided.', 401)
export const MalformedKeyError = createError('FST_APIKEY_MALFORMED', 'Incorrect API KEY format.', 401)
export const InvalidKeyError = createError('FST_APIKEY_INVALID', 'Invalid API Key.', 401)
export const ExpiredKeyError = createError('FST_APIKEY_EXPIRED', 'API Key has already expired.', 401)
export const KeyNotFoundError = createError('FST_APIKEY_NOT_FOUND', 'No entity matching this api key.', 401)
export const RevokedKeyError = createError('FST_APIKEY_REVOKED', 'This API Key has been revoked.', 401)
export const IpDeniedError = createError('FST_APIKEY_IP_DENIED', 'Access denied from blacklisted IP.', 403)
export const IpNotAllowedError = createError('FST_APIKEY_IP_NOT_ALLOWED', 'Access restricted to specific IP addresses.', 403)
export const EntityInactiveError = createError('FST_APIKEY_ENTITY_INACTIVE', 'Entity is not active.', 403)
export const InsufficientScopeError = createError('FST_APIKEY_INSUFFICIENT_SCOPE', 'This API key does not have the required scope(s) for this action.', 403)
export const HttpsRequiredError = createError('FST_APIKEY_HTTPS_REQUIRED', 'API key authentication requires HTTPS. Please use a secure connection.', 403)
export const UnavailableError = createError('FST_APIKEY_UNAVAILABLE', 'API key verification is temporarily unavailable.', 503)

export const InvalidTokenError = createError('FST_APIKEY_INVALID_TOKEN', 'Invalid Fernet token.', 401)
export const InvalidPayloadError = createError('FST_APIKEY_INVALID_PAYLOAD', 'The token payload must be a JSON object.', 401)

export const InvalidSecretError = createError('FST_APIKEY_INVALID_SECRET', '%s must be the url-safe base64 encoding of exactly 32 bytes.', 500)
export const MissingSecretError = createError('FST_APIKEY_MISSING_SECRET', '%s is required: set the option or the environment variable.', 500)
export const SameSecretsError = createError('FST_APIKEY_SAME_SECRETS', 'ROTATION_FERNET_SECRET must differ from FERNET_SECRET.', 500)
export const InvalidOptionError = createError('FST_APIKEY_INVALID_OPTION', 'Invalid option %s: %s', 500)

export const InvalidInputError = createError('FST_APIKEY_INVALID_INPUT', 'Invalid %s: %s', 400)
export const UnknownKeyError = createError('FST_APIKEY_UNKNOWN_KEY', 'No API key with id %s.', 404)
export const RollRevokedKeyError = createError('FST_APIKEY_ROLL_REVOKED', 'API key %s is revoked: a revoked key cannot be rolled; create a new one.', 409)
export const RotationSecretMissingError = createError('FST_APIKEY_ROTATION_SECRET_MISSING', 'Cannot start a rotation: %s', 409)
export const RotationInProgressError = createError('FST_APIKEY_ROTATION_IN_PROGRESS', 'A rotation is already in progress.', 409)
export const RotationNotRunningError = createError('FST_APIKEY_ROTATION_NOT_RUNNING', 'No rotation is in progress.', 409)
export const NoUsableSecretError = createError('FST_APIKEY_NO_USABLE_SECRET', 'No configured secret can be used: %s', 500)
export const NotMigratedError = createError('FST_APIKEY_NOT_MIGRATED', 'The table "%s" does not exist: run `simple-apikey migrate`, `knex migrate:latest` with the plugin\'s migrationSource, or register with `migrate: true`.', 500)
export const NotAdoptedError = createError('FST_APIKEY_NOT_ADOPTED', 'The table "%s" lacks the plugin\'s columns: for drf-simple-apikey\'s tables run `simple-apikey migrate --adopt-drf` or `migrate(knex, tables, { adoptDrf: true })`.', 500)
export const DrfTableMissingError = createError('FST_APIKEY_DRF_TABLE_MISSING', 'Cannot adopt: the table "%s" does not exist. Check the table names (drf-simple-apikey\'s keys table is drf_simple_apikey_apikey) and that Django\'s migrations ran.', 500)
