/**
 * Scalar schemas whose TypeScript type differs from TypeBox's default.
 *
 * `Int64`: a JSON integer that may exceed 2^53 (guest time in ns, uint64 counters). Replies are
 * decoded losslessly, so at run time it is a number when it fits and a bigint when it does not;
 * the static type says so, and the schema is a plain `integer` so the serializer writes it exactly.
 */
import { Type, type TUnsafe } from 'typebox';

export interface IntOptions {
  description?: string;
  minimum?: number;
  maximum?: number;
  examples?: unknown[];
}

export function Int64(options: IntOptions = {}): TUnsafe<number | bigint> {
  return Type.Unsafe<number | bigint>({ type: 'integer', ...options });
}
