/**
 * The simulator's model of a parsed request, shaped like QEMU's QObject so the argument checks
 * can tell what the real agent tells apart: an integer from a float (`5` vs `5.0`), an int64 from
 * a uint64, a missing member from a null one. Handlers never see these; the visitor converts them.
 */
import type { JsonObject, JsonValue } from '../src/qga/types.js';

export type QObj =
  | { t: 'null' }
  | { t: 'bool'; v: boolean }
  /** JSON_INTEGER that fits int64 or uint64 (QNUM_I64 / QNUM_U64) */
  | { t: 'int'; v: bigint }
  /** JSON_FLOAT, or an integer too large for uint64 (QNUM_DOUBLE) */
  | { t: 'float'; v: number }
  | { t: 'str'; v: string }
  | { t: 'list'; v: QObj[] }
  | { t: 'dict'; v: Map<string, QObj> };

export type QType = QObj['t'];

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** bigint only when a JavaScript number would lose digits (the JsonValue convention). */
export function intToJson(v: bigint): number | bigint {
  return v <= SAFE && v >= -SAFE ? Number(v) : v;
}

/** Lossless conversion, used for echoing a request id and for the command log. */
export function qobjToJson(o: QObj): JsonValue {
  switch (o.t) {
    case 'null':
      return null;
    case 'bool':
    case 'str':
    case 'float':
      return o.v;
    case 'int':
      return intToJson(o.v);
    case 'list':
      return o.v.map(qobjToJson);
    case 'dict': {
      const out: JsonObject = {};
      for (const [k, v] of o.v) out[k] = qobjToJson(v);
      return out;
    }
  }
}

const LOG_STRING_MAX = 256;
const REDACTED_MEMBERS = new Set(['password']);

/**
 * A bounded copy for the command log: long strings (file-write payloads, exec input) are replaced
 * by their length, and passwords are never kept.
 */
export function summarizeArgs(o: QObj | undefined): JsonValue {
  if (o === undefined) return null;
  switch (o.t) {
    case 'str':
      return o.v.length > LOG_STRING_MAX ? `<${o.v.length} chars>` : o.v;
    case 'list':
      return o.v.length > 64
        ? [...o.v.slice(0, 64).map(summarizeArgs), `<${o.v.length - 64} more>`]
        : o.v.map(summarizeArgs);
    case 'dict': {
      const out: JsonObject = {};
      for (const [k, v] of o.v) out[k] = REDACTED_MEMBERS.has(k) ? '<redacted>' : summarizeArgs(v);
      return out;
    }
    default:
      return qobjToJson(o);
  }
}
