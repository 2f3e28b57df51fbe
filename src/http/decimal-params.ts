/**
 * Numbers in the path and the query string are written in decimal. Path and query values are
 * strings on the wire, and ajv's coercion (coerceTypes, app.ts) takes any string Number() reads:
 * `?limit=0x10` was 16, `?wait=1e3` 1000, `?limit= 5` 5, `?limit=+5` 5. A client that sends those
 * most likely made a mistake: it gets 400 VALIDATION_FAILED naming the parameter instead.
 *
 * The check wraps the compiled validator of a params or querystring schema that has integer or
 * number members (found once, when the route's validator is compiled); it looks at the raw strings
 * before ajv coerces them. Other schemas (a VM name, the ping route) keep ajv's validator as is.
 */
import type { ErrorObject, ValidateFunction } from 'ajv';

const INTEGER = /^-?\d+$/;
const NUMBER = /^-?\d+(\.\d+)?$/;

type Members = Array<{ name: string; pattern: RegExp; type: 'integer' | 'number' }>;

function typesOf(schema: Record<string, unknown>): string[] {
  const t = schema.type;
  const own = typeof t === 'string' ? [t] : Array.isArray(t) ? t.filter((x): x is string => typeof x === 'string') : [];
  const alternatives = [schema.anyOf, schema.oneOf].flatMap((a) => (Array.isArray(a) ? a : []));
  return own.concat(alternatives.flatMap((s) => (s !== null && typeof s === 'object' ? typesOf(s as Record<string, unknown>) : [])));
}

/** the members of an object schema whose values are numbers, and the pattern their raw strings must match */
function numericMembers(schema: unknown): Members {
  const props = schema !== null && typeof schema === 'object' ? (schema as { properties?: Record<string, unknown> }).properties : undefined;
  if (props === undefined || props === null || typeof props !== 'object') return [];
  const out: Members = [];
  for (const [name, s] of Object.entries(props)) {
    if (s === null || typeof s !== 'object') continue;
    const types = typesOf(s as Record<string, unknown>);
    // a member that may also be a string takes any string: nothing to hold to decimal
    if (types.includes('string')) continue;
    if (types.includes('number')) out.push({ name, pattern: NUMBER, type: 'number' });
    else if (types.includes('integer')) out.push({ name, pattern: INTEGER, type: 'integer' });
  }
  return out;
}

function notDecimal(value: unknown, pattern: RegExp): boolean {
  if (typeof value === 'string') return !pattern.test(value);
  return Array.isArray(value) && value.some((v) => typeof v === 'string' && !pattern.test(v));
}

/** `validate` of a params or querystring schema, holding its numeric members to decimal digits. */
export function decimalParams(schema: unknown, validate: ValidateFunction): ValidateFunction {
  const members = numericMembers(schema);
  if (members.length === 0) return validate;
  const wrapped = ((data: unknown) => {
    if (data !== null && typeof data === 'object') {
      const values = data as Record<string, unknown>;
      for (const m of members) {
        if (!Object.hasOwn(values, m.name) || !notDecimal(values[m.name], m.pattern)) continue;
        const error: ErrorObject = {
          instancePath: `/${m.name}`,
          schemaPath: `#/properties/${m.name}/type`,
          keyword: 'type',
          params: { type: m.type },
          message: m.type === 'integer' ? 'must be a whole number in decimal digits (no sign but -, no exponent, no 0x)' : 'must be a number in decimal digits (no exponent, no 0x)',
        };
        wrapped.errors = [error];
        return false;
      }
    }
    const ok = validate(data);
    wrapped.errors = validate.errors;
    return ok;
  }) as ValidateFunction;
  wrapped.schema = validate.schema;
  return wrapped;
}
