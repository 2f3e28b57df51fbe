/**
 * The last pass over the OpenAPI document @fastify/swagger builds from the route schemas (its
 * `transformObject`), so that clients generated from it get good names and exact numbers:
 *
 *  - every request body and every response body is a named component. A route names its schema
 *    with `named('VmList', schema)` (component.ts: it sets `title`); a schema without a name is
 *    named after the operation: `<OperationId>Request`, `<OperationId>Response` (a status is
 *    appended when an operation has several unnamed success responses). Nested schemas that carry
 *    a `title` become components as well. Two different schemas under one name are a defect:
 *    generation throws (the export and the tests fail), it never picks one silently;
 *  - a response has a real description: the route's, else its schema's, else the summary;
 *  - 64-bit integers (`format: int64` / `uint64`, scalars.ts) get their bounds and examples as
 *    exact JSON integers: bigints here, written digit for digit by the gateway's JSON writer;
 *  - components nothing refers to are left out (request copies of QGA types are inlined).
 *
 * `servedDocument` then writes the maxima that come from the configuration in force (`x-max-from:
 * 'exec.maxWaitSeconds'`) into a copy: /openapi.json differs by configuration, the exported
 * openapi/openapi.json carries the defaults.
 */
import { ERRORS, type ErrorCode } from '../../errors.js';
import { isObjectLike } from '../../util/unknown.js';

type Json = Record<string, unknown>;

export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;
export const UINT64_MAX = 2n ** 64n - 1n;

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];
const REF_PREFIX = '#/components/schemas/';

function pascal(id: string): string {
  return id.charAt(0).toUpperCase() + id.slice(1);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (!isObjectLike(a) || !isObjectLike(b) || Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

class Components {
  constructor(readonly schemas: Record<string, unknown>) {}

  /** `schema` as the component `name` (reused when equal); returns the `$ref`. */
  add(name: string, schema: Json, where: string): Json {
    const existing = this.schemas[name];
    if (existing !== undefined && !deepEqual(existing, schema)) {
      throw new Error(`OpenAPI: two different schemas are named ${name} (${where}); give one of them another name`);
    }
    this.schemas[name] = schema;
    return { $ref: REF_PREFIX + name };
  }

  /**
   * Nested schemas with a `title` become components. In a request copy (closed objects) a titled
   * schema becomes a `$ref` only when it equals the component; otherwise it stays inline, untitled.
   */
  hoistNested(s: unknown, request: boolean, where: string): unknown {
    if (Array.isArray(s)) return s.map((x) => this.hoistNested(x, request, where));
    if (!isObjectLike(s)) return s;
    const out: Json = {};
    for (const [k, v] of Object.entries(s)) {
      if ((k === 'properties' || k === 'patternProperties' || k === '$defs') && isObjectLike(v)) {
        out[k] = Object.fromEntries(Object.entries(v).map(([n, p]) => [n, this.titled(this.hoistNested(p, request, where), request, where)]));
      } else if (['items', 'additionalProperties', 'not', 'contains', 'if', 'then', 'else'].includes(k) && isObjectLike(v)) {
        out[k] = this.titled(this.hoistNested(v, request, where), request, where);
      } else if (['allOf', 'anyOf', 'oneOf', 'prefixItems'].includes(k) && Array.isArray(v)) {
        out[k] = v.map((x) => this.titled(this.hoistNested(x, request, where), request, where));
      } else {
        out[k] = v;
      }
    }
    return out;
  }

  private titled(s: unknown, request: boolean, where: string): unknown {
    if (!isObjectLike(s) || typeof s.title !== 'string' || typeof s.$ref === 'string') return s;
    const name = s.title;
    if (request) {
      if (deepEqual(this.schemas[name], s)) return { $ref: REF_PREFIX + name };
      const { title: _t, ...rest } = s;
      return rest;
    }
    return this.add(name, s, where);
  }
}

/** Name every body schema of `op` (see the module comment); fix response descriptions. */
function nameOperation(op: Json, where: string, components: Components): void {
  // @fastify/swagger suffixes a documented HEAD route's operationId with "-head"; ours are named as they are
  if (typeof op.operationId === 'string') op.operationId = op.operationId.replace(/-head$/, '');
  // a query parameter with a default need not be sent (Ajv fills it in): not required for the client
  if (Array.isArray(op.parameters)) {
    for (const p of op.parameters) if (isObjectLike(p) && p.in !== 'path' && isObjectLike(p.schema) && 'default' in p.schema) p.required = false;
  }
  if (where.startsWith('HEAD ') && isObjectLike(op.responses)) {
    // a HEAD answer has headers and no body (problems keep theirs documented: the Content-Type says what GET would carry)
    for (const r of Object.values(op.responses)) if (isObjectLike(r) && !isProblem(r)) delete r.content;
  }
  const id = typeof op.operationId === 'string' ? pascal(op.operationId) : where.replace(/[^A-Za-z0-9]+/g, '');
  const body = op.requestBody;
  if (isObjectLike(body) && isObjectLike(body.content)) {
    for (const media of Object.values(body.content)) {
      if (!isObjectLike(media) || !isObjectLike(media.schema) || typeof media.schema.$ref === 'string') continue;
      const schema = components.hoistNested(media.schema, true, where) as Json;
      media.schema = components.add(typeof schema.title === 'string' ? schema.title : `${id}Request`, schema, where);
    }
  }
  const responses = isObjectLike(op.responses) ? op.responses : {};
  const unnamed = Object.values(responses).filter(
    (r) =>
      isObjectLike(r) &&
      isObjectLike(r.content) &&
      Object.values(r.content).some((m) => isObjectLike(m) && isObjectLike(m.schema) && typeof m.schema.$ref !== 'string' && typeof m.schema.title !== 'string'),
  ).length;
  const own = isObjectLike(op['x-ok-descriptions']) ? op['x-ok-descriptions'] : {};
  const ownHeaders = isObjectLike(op['x-ok-headers']) ? op['x-ok-headers'] : {};
  delete op['x-ok-descriptions'];
  delete op['x-ok-headers'];
  for (const [status, r] of Object.entries(responses)) {
    if (!isObjectLike(r)) continue;
    if (typeof own[status] === 'string') r.description = own[status];
    if (isObjectLike(ownHeaders[status])) r.headers = { ...(isObjectLike(r.headers) ? r.headers : {}), ...ownHeaders[status] };
    let described: string | undefined;
    if (isObjectLike(r.content)) {
      for (const media of Object.values(r.content)) {
        if (!isObjectLike(media) || !isObjectLike(media.schema)) continue;
        if (typeof media.schema.$ref === 'string') {
          const target = components.schemas[media.schema.$ref.slice(REF_PREFIX.length)];
          if (isObjectLike(target) && typeof target.description === 'string') described ??= target.description;
          continue;
        }
        const schema = components.hoistNested(media.schema, false, where) as Json;
        if (typeof schema.description === 'string') described ??= schema.description;
        const name = typeof schema.title === 'string' ? schema.title : `${id}Response${unnamed > 1 ? status : ''}`;
        media.schema = components.add(name, schema, where);
      }
    }
    if (r.description === undefined || r.description === '' || r.description === 'Default Response') {
      r.description = described ?? (typeof op.summary === 'string' ? op.summary : status);
    }
  }
}

function isProblem(r: Json): boolean {
  return isObjectLike(r.content) && 'application/problem+json' in r.content;
}

/**
 * A POST/PUT/PATCH/DELETE that takes no body is still sent one by some clients: Fastify parses it
 * (415 for a type it has no parser for, 413 over the body limit) before the route runs. Those
 * operations document both, as the ones with a body do (routes/operation.ts).
 */
function bodyProblems(op: Json, method: string): void {
  if (!['post', 'put', 'patch', 'delete'].includes(method) || op.requestBody !== undefined || !isObjectLike(op.responses)) return;
  const codes = Array.isArray(op['x-problem-codes']) ? (op['x-problem-codes'] as ErrorCode[]) : undefined;
  if (!codes) return;
  for (const code of ['PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'] as const) {
    if (codes.includes(code)) continue;
    codes.push(code);
    const status = String(ERRORS[code].status);
    const text = `\`${code}\`: ${ERRORS[code].when}`;
    const existing = op.responses[status];
    if (isObjectLike(existing)) existing.description = `${String(existing.description)}. ${text}`;
    else op.responses[status] = { description: text, content: { 'application/problem+json': { schema: { $ref: `${REF_PREFIX}Problem` } } } };
  }
  const order = Object.keys(ERRORS);
  codes.sort((a, b) => order.indexOf(a) - order.indexOf(b));
  op.responses = Object.fromEntries(Object.entries(op.responses).sort(([a], [b]) => Number(a) - Number(b)));
}

/** int64/uint64: bounds and examples as exact integers (bigint), whatever the route schema held. */
function exactIntegers(s: unknown): void {
  if (Array.isArray(s)) {
    for (const x of s) exactIntegers(x);
    return;
  }
  if (!isObjectLike(s)) return;
  if (s.type === 'integer' && (s.format === 'int64' || s.format === 'uint64')) {
    const unsigned = s.format === 'uint64';
    const max = unsigned ? UINT64_MAX : INT64_MAX;
    // the route schema says `exclusiveMaximum: 2^63` (what Ajv can check on a double); the document says the exact maximum
    if (s.exclusiveMaximum !== undefined) {
      delete s.exclusiveMaximum;
      s.maximum = max;
    } else if (typeof s.maximum === 'number' && !Number.isSafeInteger(s.maximum)) {
      s.maximum = max;
    }
    if (typeof s.minimum === 'number' && !Number.isSafeInteger(s.minimum)) s.minimum = INT64_MIN;
    if (Array.isArray(s.examples)) s.examples = s.examples.map((e) => (typeof e === 'string' && /^-?\d+$/.test(e) ? BigInt(e) : e));
  }
  for (const v of Object.values(s)) exactIntegers(v);
}

function collectRefs(s: unknown, into: Set<string>): void {
  if (Array.isArray(s)) {
    for (const x of s) collectRefs(x, into);
    return;
  }
  if (!isObjectLike(s)) return;
  if (typeof s.$ref === 'string' && s.$ref.startsWith(REF_PREFIX)) into.add(s.$ref.slice(REF_PREFIX.length));
  for (const v of Object.values(s)) collectRefs(v, into);
}

/** Keep only the components the operations reach (directly or through other components). */
function pruneComponents(doc: Json, schemas: Record<string, unknown>): void {
  const { components: _c, ...rest } = doc;
  const reached = new Set<string>();
  collectRefs(rest, reached);
  if (isObjectLike(doc.components)) collectRefs({ ...doc.components, schemas: {} }, reached);
  const queue = [...reached];
  while (queue.length > 0) {
    const name = queue.pop() as string;
    const more = new Set<string>();
    collectRefs(schemas[name], more);
    for (const m of more) if (!reached.has(m)) (reached.add(m), queue.push(m));
  }
  for (const name of Object.keys(schemas)) if (!reached.has(name)) delete schemas[name];
}

/** the headers every answer carries, or 429/503 answers carry (http/plugins/request-log.ts, errors.ts) */
const CONVENTION_HEADERS: Json = {
  XRequestId: {
    description: "the request's id: the caller's X-Request-Id when valid (1-128 of A-Z a-z 0-9 . _ : -), else one the gateway made; in its log lines and audit records",
    schema: { type: 'string', maxLength: 128 },
  },
  RetryAfter: {
    description: 'seconds to wait before trying again, when the gateway can tell (a queue or rate limit, a node or Redis away)',
    schema: { type: 'integer', format: 'int32', minimum: 0 },
  },
};
const CONVENTION_PARAMETERS: Json = {
  XRequestId: {
    name: 'X-Request-Id',
    in: 'header',
    required: false,
    description: 'an id for this request (1-128 of A-Z a-z 0-9 . _ : -), echoed in the answer and written in the log and audit lines; another value is replaced by one the gateway makes',
    schema: { type: 'string', maxLength: 128 },
  },
};

/** X-Request-Id on every operation and answer, Retry-After on its 429 and 503 answers: declared, so that generated clients expose them. */
function conventionHeaders(op: Json): void {
  const params = Array.isArray(op.parameters) ? op.parameters : (op.parameters = []);
  if (!params.some((p) => isObjectLike(p) && typeof p.name === 'string' && p.name.toLowerCase() === 'x-request-id')) {
    params.push({ $ref: '#/components/parameters/XRequestId' });
  }
  for (const [status, r] of Object.entries(isObjectLike(op.responses) ? op.responses : {})) {
    if (!isObjectLike(r)) continue;
    const headers = isObjectLike(r.headers) ? r.headers : {};
    r.headers = {
      ...headers,
      'X-Request-Id': { $ref: '#/components/headers/XRequestId' },
      ...(status === '429' || status === '503' ? { 'Retry-After': { $ref: '#/components/headers/RetryAfter' } } : {}),
    };
  }
}

/** The transformObject of @fastify/swagger: see the module comment. Changes and returns `doc`. */
export function finishDocument<T>(doc: T): T {
  const d = doc as Json;
  const comps = (isObjectLike(d.components) ? d.components : (d.components = {})) as Json;
  const schemas = (isObjectLike(comps.schemas) ? comps.schemas : (comps.schemas = {})) as Record<string, unknown>;
  const components = new Components(schemas);
  for (const [path, item] of Object.entries(isObjectLike(d.paths) ? d.paths : {})) {
    if (!isObjectLike(item)) continue;
    for (const method of METHODS) {
      const op = item[method];
      if (!isObjectLike(op)) continue;
      nameOperation(op, `${method.toUpperCase()} ${path}`, components);
      bodyProblems(op, method);
      conventionHeaders(op);
    }
  }
  comps.parameters = { ...(isObjectLike(comps.parameters) ? comps.parameters : {}), ...CONVENTION_PARAMETERS };
  comps.headers = { ...(isObjectLike(comps.headers) ? comps.headers : {}), ...CONVENTION_HEADERS };
  pruneComponents(d, schemas);
  exactIntegers(d);
  // components in a stable order: by name
  comps.schemas = Object.fromEntries(Object.keys(schemas).sort().map((k) => [k, schemas[k]]));
  return doc;
}

/**
 * A copy of `doc` in which every schema with `x-max-from: 'section.setting'` gets `maximum: <the
 * setting's value in config>` (the route validates the schema's own, absolute bound; the
 * configured one is checked by the service, with a 400 that names the setting). `x-max-from`
 * stays, naming the setting.
 */
export function servedDocument(doc: unknown, config: unknown): unknown {
  const copy = (s: unknown): unknown => {
    if (Array.isArray(s)) return s.map(copy);
    if (!isObjectLike(s)) return s;
    const out: Json = {};
    for (const [k, v] of Object.entries(s)) out[k] = copy(v);
    if (typeof s['x-max-from'] === 'string') {
      const value = settingOf(config, s['x-max-from']);
      if (typeof value === 'number') {
        out.maximum = value;
        // a default is never above the maximum in force
        if (typeof out.default === 'number' && out.default > value) out.default = value;
      }
    }
    return out;
  };
  return copy(doc);
}

function settingOf(config: unknown, path: string): unknown {
  let cur: unknown = config;
  for (const key of path.split('.')) cur = isObjectLike(cur) ? cur[key] : undefined;
  return cur;
}
