/**
 * QEMU's JSON writer (qobject/qjson.c, non-pretty): `{"a": 1, "b": [1, 2]}` with ": " and ", ",
 * every code point >= 0x7F escaped as an upper-case \uXXXX (so replies are pure ASCII), doubles
 * printed with %.17g. Object members come out in QDict iteration order — hash bucket order, newest
 * first within a bucket — which is why a real reply reads `{"return": {}, "id": 1}` but
 * `{"id": 1, "error": {...}}`. Reproducing it keeps the simulator's bytes identical to the agent's.
 */
import type { JsonValue } from '../src/qga/types.js';

const BUCKETS = 512;
const bucketCache = new Map<string, number>();
const BUCKET_CACHE_MAX = 4096;

/** tdb_hash from qobject/qdict.c, on the key's UTF-8 bytes, in 32-bit unsigned arithmetic. */
export function tdbHash(key: string): number {
  const b = Buffer.from(key, 'utf8');
  let value = Math.imul(0x238f13af, b.length) >>> 0;
  for (let i = 0; i < b.length; i++) value = (value + ((b[i] << ((i * 5) % 24)) >>> 0)) >>> 0;
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

function bucketOf(key: string): number {
  let b = bucketCache.get(key);
  if (b === undefined) {
    b = tdbHash(key) % BUCKETS;
    if (bucketCache.size < BUCKET_CACHE_MAX) bucketCache.set(key, b);
  }
  return b;
}

/** Keys of an object in the order QEMU's QDict would iterate them (insertion order = put order). */
export function qdictOrder(keys: string[]): string[] {
  return keys
    .map((k, i) => ({ k, i, b: bucketOf(k) }))
    .sort((x, y) => x.b - y.b || y.i - x.i)
    .map((e) => e.k);
}

const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/;

export function quoteString(s: string): string {
  if (!NEEDS_ESCAPE.test(s)) return `"${s}"`;
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const cu = s.charCodeAt(i);
    switch (cu) {
      case 0x22: out += '\\"'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x08: out += '\\b'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x09: out += '\\t'; break;
      default:
        out += cu < 0x20 || cu >= 0x7f ? `\\u${cu.toString(16).toUpperCase().padStart(4, '0')}` : s[i];
    }
  }
  return out + '"';
}

/** printf("%.17g") for a finite or non-finite double. */
export function formatG17(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [mant, expText] = x.toExponential(16).split('e');
  const exp = Number(expText);
  if (exp < -4 || exp >= 17) {
    const m = mant.includes('.') ? mant.replace(/0+$/, '').replace(/\.$/, '') : mant;
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const fixed = x.toFixed(16 - exp);
  return fixed.includes('.') ? fixed.replace(/0+$/, '').replace(/\.$/, '') : fixed;
}

export function formatNumber(n: number): string {
  return Number.isSafeInteger(n) && !Object.is(n, -0) ? String(n) : formatG17(n);
}

function write(v: JsonValue, out: string[]): void {
  if (v === null) {
    out.push('null');
  } else if (typeof v === 'string') {
    out.push(quoteString(v));
  } else if (typeof v === 'number') {
    out.push(formatNumber(v));
  } else if (typeof v === 'bigint') {
    out.push(v.toString());
  } else if (typeof v === 'boolean') {
    out.push(v ? 'true' : 'false');
  } else if (Array.isArray(v)) {
    out.push('[');
    v.forEach((item, i) => {
      if (i > 0) out.push(', ');
      write(item, out);
    });
    out.push(']');
  } else {
    out.push('{');
    const keys = qdictOrder(Object.keys(v).filter((k) => v[k] !== undefined));
    keys.forEach((k, i) => {
      if (i > 0) out.push(', ');
      out.push(quoteString(k), ': ');
      write(v[k], out);
    });
    out.push('}');
  }
}

/** Serialize like the agent does (without the trailing newline). */
export function toQemuJson(v: JsonValue): string {
  const out: string[] = [];
  write(v, out);
  return out.join('');
}
