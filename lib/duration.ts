// Durations in options and inputs: milliseconds, or strings like '7d' and '12h'.
import { parse } from '@lukeed/ms'
import { InvalidOptionError } from './errors'

export type Duration = number | string

/** Milliseconds of a duration, or undefined when it is not one. */
export function toMilliseconds (value: unknown): number | undefined {
  let ms: number | undefined
  if (typeof value === 'number') ms = value
  else if (typeof value === 'string') ms = /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : parse(value)
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined
}

export function durationOption (name: string, value: Duration | undefined, fallback: number): number {
  if (value === undefined) return fallback
  const ms = toMilliseconds(value)
  if (ms === undefined) throw new InvalidOptionError(name, 'expected milliseconds or a duration such as \'7d\'')
  return ms
}
