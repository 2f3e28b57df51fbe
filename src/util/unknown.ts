/**
 * Reading values whose type is not known yet: what a parser produced, what was thrown. Type guards
 * rather than casts, so that what is claimed about a value is what was checked.
 */

/** Any non-null object, arrays included: something whose members can be read by name. */
export function isObjectLike(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** A non-null object that is not an array: a parsed JSON object, a YAML mapping. */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return isObjectLike(value) && !Array.isArray(value);
}

/** The message of anything thrown: an Error's message, anything else as text. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
