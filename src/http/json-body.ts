/**
 * Request bodies are parsed losslessly, like agent replies: `PUT /time {"time": 1732000000123456789}`
 * must reach the agent digit for digit. Ajv only validates numbers, so the parser hands the
 * validator a copy where each huge integer is its nearest number (ranges and types still check),
 * remembers where the exact values were, and a preHandler puts the exact bigints back after
 * validation has passed.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { GatewayError } from '../errors.js';
import { parseJson } from '../util/json.js';
import type { JsonValue } from '../qga/types.js';

interface Exact {
  path: Array<string | number>;
  value: bigint;
}

const EXACT = new WeakMap<FastifyRequest, Exact[]>();

function approximate(v: JsonValue, path: Array<string | number>, out: Exact[]): JsonValue {
  if (typeof v === 'bigint') {
    out.push({ path: [...path], value: v });
    return Number(v);
  }
  if (Array.isArray(v)) return v.map((x, i) => approximate(x, [...path, i], out));
  if (v !== null && typeof v === 'object') {
    const o: Record<string, JsonValue> = {};
    for (const [k, x] of Object.entries(v)) o[k] = approximate(x, [...path, k], out);
    return o;
  }
  return v;
}

function restore(body: unknown, exact: Exact[]): void {
  for (const { path, value } of exact) {
    let cur = body;
    for (const key of path.slice(0, -1)) {
      if (cur === null || typeof cur !== 'object') break;
      cur = (cur as Record<string | number, unknown>)[key];
    }
    const last = path[path.length - 1];
    if (cur !== null && typeof cur === 'object' && last !== undefined && typeof (cur as Record<string | number, unknown>)[last] === 'number') {
      (cur as Record<string | number, unknown>)[last] = value;
    }
  }
}

export function registerJsonBody(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    let parsed: JsonValue;
    try {
      parsed = parseJson(text);
    } catch (e) {
      done(new GatewayError('VALIDATION_FAILED', `the body is not valid JSON: ${(e as Error).message}`), undefined);
      return;
    }
    const exact: Exact[] = [];
    const approx = approximate(parsed, [], exact);
    if (exact.length > 0) EXACT.set(request, exact);
    done(null, approx);
  });
  app.addHook('preHandler', (request, _reply, done) => {
    const exact = EXACT.get(request);
    if (exact) restore(request.body, exact);
    done();
  });
}
