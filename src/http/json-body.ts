/**
 * Request bodies are parsed losslessly, like agent replies: `PUT /time {"time": 1732000000123456789}`
 * must reach the agent digit for digit. Ajv only validates numbers, so the parser hands the
 * validator a copy where each huge integer is its nearest number (ranges and types still check),
 * remembers where the exact values were, and a preHandler puts the exact bigints back after
 * validation has passed.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errors } from '../errors.js';
import { parseJson } from '../util/json.js';
import { isObjectLike } from '../util/unknown.js';
import type { JsonValue } from '../qga/types.js';

interface Exact {
  path: Array<string | number>;
  value: bigint;
}

const EXACT = new WeakMap<FastifyRequest, Exact[]>();
const LONG_DIGITS = /\d{16}/;
const POISON = /"(?:__proto__|constructor)"\s*:/;

function approximate(v: JsonValue, path: Array<string | number>, out: Exact[]): JsonValue {
  if (typeof v === 'bigint') {
    out.push({ path: [...path], value: v });
    return nearestDouble(v);
  }
  if (Array.isArray(v)) return v.map((x, i) => approximate(x, [...path, i], out));
  if (v !== null && typeof v === 'object') {
    const o: Record<string, JsonValue> = {};
    // defineProperty: a member named __proto__ must stay a plain member, not a prototype
    for (const [k, x] of Object.entries(v)) {
      Object.defineProperty(o, k, { value: approximate(x, [...path, k], out), enumerable: true, writable: true, configurable: true });
    }
    return o;
  }
  return v;
}

// the 64-bit bounds the schemas state (scalars.ts: -2^63, exclusiveMaximum 2^63 or 2^64)
const BOUNDS = [-(2n ** 63n), 2n ** 63n, 2n ** 64n];

/**
 * The double Ajv validates in place of `v`: the nearest one, but never on the other side of a
 * 64-bit bound (2^63 - 1 rounds to 2^63, which `exclusiveMaximum: 2^63` would refuse; 2^63 + 1
 * must stay refused), so the ranges of int64/uint64 fields are checked exactly.
 */
export function nearestDouble(v: bigint): number {
  let n = Number(v);
  for (const b of BOUNDS) {
    const bn = Number(b);
    // the next double below ±2^k: 2^(k-53) below a positive bound, 2^(k-52) below a negative one
    if (v < b && n >= bn) n = bn - Math.abs(bn) * (bn > 0 ? 2 ** -53 : 2 ** -52);
    else if (v >= b && n < bn) n = bn;
  }
  return n;
}

function restore(body: unknown, exact: Exact[]): void {
  for (const { path, value } of exact) {
    let cur = body;
    for (const key of path.slice(0, -1)) {
      if (!isObjectLike(cur)) break;
      cur = cur[key];
    }
    const last = path[path.length - 1];
    if (isObjectLike(cur) && last !== undefined && typeof cur[last] === 'number') {
      cur[last] = value;
    }
  }
}

/**
 * The body limit of a route whose JSON carries up to `dataBytes` of base64 data (stdin, a file
 * write): the data as base64 plus the ordinary limit for everything around it, so the data has its
 * own cap (checked decoded, with a clear 413) and the rest of the body the usual one.
 */
export function base64BodyLimit(dataBytes: number, bodyLimitBytes: number): number {
  return Math.ceil((dataBytes * 4) / 3) + bodyLimitBytes;
}

export function registerJsonBody(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json');
  // every body a route parses is JSON (uploads add their own parser): text is a 415 that says so,
  // not a 400 "body must be object"
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    // Fastify's own parser refuses prototype-poisoning keys; so does this one.
    if (POISON.test(text)) {
      done(errors.validation('the body contains a forbidden member name (__proto__ or constructor.prototype)'), undefined);
      return;
    }
    try {
      const parsed = parseJson(text);
      // only a run of 16+ digits can hold an integer JSON.parse would round: skip the walk otherwise
      if (!LONG_DIGITS.test(text)) {
        done(null, parsed);
        return;
      }
      const exact: Exact[] = [];
      const approx = approximate(parsed, [], exact);
      if (exact.length > 0) EXACT.set(request, exact);
      done(null, approx);
    } catch (e) {
      done(errors.notJson(e), undefined);
    }
  });
  app.addHook('preHandler', (request, _reply, done) => {
    const exact = EXACT.get(request);
    if (exact) restore(request.body, exact);
    done();
  });
}
