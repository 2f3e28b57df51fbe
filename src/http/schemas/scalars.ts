/**
 * Scalar schemas whose TypeScript type differs from TypeBox's default.
 *
 * `Int64`: a JSON integer that may exceed 2^53 (guest time in ns, uint64 counters). Replies are
 * decoded losslessly, so at run time it is a number when it fits and a bigint when it does not;
 * the static type says so, and the schema is a plain `integer` so the serializer writes it exactly.
 *
 * The schema carries `format: int64` (or `uint64`) and the range of the type: Ajv checks a huge
 * request integer on its nearest double (json-body.ts keeps that double on the right side of
 * ±2^63 and 2^64), so the bound is written `exclusiveMaximum: 2^63`, which a double can state
 * exactly; the document pass (document.ts) writes it as `maximum: 9223372036854775807`. Examples
 * are decimal strings here (a JS number would round 1732000000123456789) and exact JSON integers
 * in the document.
 */
import { Type, type TUnsafe } from 'typebox';

export interface IntOptions {
  description?: string;
  minimum?: number;
  maximum?: number;
  /** decimal strings for values above 2^53, e.g. '1732000000123456789' */
  examples?: Array<number | string>;
}

const TWO_63 = 2 ** 63;
const TWO_64 = 2 ** 64;

/** A signed 64-bit integer: -2^63 ≤ n ≤ 2^63 - 1 (a request outside gets 400 VALIDATION_FAILED naming the field). */
export function Int64(options: IntOptions = {}): TUnsafe<number | bigint> {
  const { maximum, ...rest } = options;
  return Type.Unsafe<number | bigint>({
    type: 'integer',
    format: 'int64',
    minimum: -TWO_63,
    ...(maximum !== undefined ? { maximum } : { exclusiveMaximum: TWO_63 }),
    ...rest,
  });
}

/** An unsigned 64-bit integer: 0 ≤ n ≤ 2^64 - 1. */
export function UInt64(options: IntOptions = {}): TUnsafe<number | bigint> {
  const { maximum, ...rest } = options;
  return Type.Unsafe<number | bigint>({
    type: 'integer',
    format: 'uint64',
    minimum: 0,
    ...(maximum !== undefined ? { maximum } : { exclusiveMaximum: TWO_64 }),
    ...rest,
  });
}

/**
 * Base64 text as the agent takes it (RFC 4648 alphabet, padded to a multiple of 4): `format: byte`
 * (checked by Ajv; a 400 names the field) and `contentEncoding: base64` for OpenAPI 3.1 readers.
 */
export function Base64(description: string) {
  return Type.String({ format: 'byte', contentEncoding: 'base64', description });
}

/**
 * A non-negative integer in a path (a file handle, a pid): int64 in the agent, but a path value is
 * coerced to a JS number, so the gateway takes those up to 2^53 - 1 (above → 400 naming it).
 */
export function PathInteger(description: string) {
  return Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, format: 'int64', description });
}
