/**
 * Requests generated from the served OpenAPI document, for property tests: for every operation, a
 * fast-check arbitrary of VALID requests (path, query and body drawn from the operation's own
 * schemas) and one of INVALID ones (a body or query value that breaks the schema in one place).
 * Written once; the security, fault-matrix and conventions tests reuse it.
 *
 * Schema support is what the document uses: $ref to components, object (required,
 * additionalProperties false), array (min/maxItems), string (enum, const, pattern, min/maxLength,
 * format date-time), integer/number (minimum/maximum), boolean, anyOf/oneOf, and `true`/{} (any).
 */
import fc from 'fast-check';

export type Schema = Record<string, unknown> | boolean;

export interface OpenApiDoc {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

export interface Operation {
  operationId?: string;
  parameters?: Array<{ name: string; in: 'path' | 'query' | 'header'; required?: boolean; schema?: Schema }>;
  requestBody?: { required?: boolean; content: Record<string, { schema?: Schema }> };
  responses: Record<string, unknown>;
}

export interface GeneratedRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
}

export interface OperationCases {
  method: string;
  path: string;
  operation: Operation;
  /** documented response statuses */
  statuses: Set<number>;
  valid: fc.Arbitrary<GeneratedRequest>;
  /** undefined when the operation takes nothing that can be made invalid */
  invalid?: fc.Arbitrary<GeneratedRequest>;
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch'];

function isObj(s: unknown): s is Record<string, unknown> {
  return s !== null && typeof s === 'object' && !Array.isArray(s);
}

export class SchemaArbitraries {
  constructor(private readonly doc: OpenApiDoc) {}

  resolve(s: Schema): Schema {
    let cur = s;
    for (let i = 0; i < 16 && isObj(cur) && typeof cur.$ref === 'string'; i++) {
      const name = cur.$ref.replace(/^#\/components\/schemas\//, '');
      const target = this.doc.components?.schemas?.[name];
      if (target === undefined) throw new Error(`unresolved $ref ${cur.$ref}`);
      cur = target;
    }
    return cur;
  }

  /** values that match the schema */
  valid(schema: Schema, depth = 0): fc.Arbitrary<unknown> {
    const s = this.resolve(schema);
    if (s === true || !isObj(s) || Object.keys(s).filter((k) => !['description', 'title', 'examples', 'example'].includes(k)).length === 0) {
      return depth > 2 ? fc.constant(null) : fc.jsonValue({ maxDepth: 2 });
    }
    if ('const' in s) return fc.constant(s.const);
    if (Array.isArray(s.enum)) return fc.constantFrom(...(s.enum as unknown[]));
    const alts = (s.anyOf ?? s.oneOf) as Schema[] | undefined;
    if (Array.isArray(alts)) return fc.oneof(...alts.map((a) => this.valid(a, depth + 1)));
    const type = Array.isArray(s.type) ? (s.type as string[])[0] : (s.type as string | undefined);
    switch (type) {
      case 'string':
        return this.string(s);
      case 'integer': {
        // int64 bounds (±2^63) are beyond fc.integer's 32-bit range: draw within it, plus the exact edges as bigint-free text is not needed
        const min = Math.max(num(s.minimum, -1000), -(2 ** 31) + 1);
        const max = Math.min(num(s.maximum, 1_000_000), 2 ** 31 - 1);
        return fc.integer({ min, max: Math.max(min, max) }).map((n) => (typeof s.exclusiveMinimum === 'number' && n <= s.exclusiveMinimum ? s.exclusiveMinimum + 1 : n));
      }
      case 'number':
        return fc.double({ min: num(s.minimum, -1000), max: num(s.maximum, 1_000_000), noNaN: true, noDefaultInfinity: true });
      case 'boolean':
        return fc.boolean();
      case 'null':
        return fc.constant(null);
      case 'array':
        return fc.array(this.valid((s.items as Schema | undefined) ?? true, depth + 1), { minLength: num(s.minItems, 0), maxLength: Math.min(num(s.maxItems, 4), num(s.minItems, 0) + 4) });
      case 'object':
      default:
        return this.object(s, depth);
    }
  }

  private string(s: Record<string, unknown>): fc.Arbitrary<string> {
    const minLength = num(s.minLength, 0);
    const maxLength = Math.min(num(s.maxLength, 24), minLength + 24);
    // base64 (format byte): whole 4-character groups of the alphabet
    if (s.format === 'byte') return fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b).toString('base64'));
    if (s.format === 'date-time') return fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString());
    if (typeof s.pattern === 'string') {
      return fc.stringMatching(new RegExp(s.pattern)).filter((v) => v.length >= minLength && v.length <= num(s.maxLength, Infinity));
    }
    return fc.string({ minLength, maxLength });
  }

  private object(s: Record<string, unknown>, depth: number): fc.Arbitrary<Record<string, unknown>> {
    const props = isObj(s.properties) ? (s.properties as Record<string, Schema>) : {};
    const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
    const record: Record<string, fc.Arbitrary<unknown>> = {};
    for (const [k, v] of Object.entries(props)) record[k] = this.valid(v, depth + 1);
    const arb = fc.record(record, { requiredKeys: [...required].filter((k) => k in props) });
    // a cross-field rule `not: {required: [a, b], properties?: {b: {const}}}` (the document's way of saying "not both")
    const not = isObj(s.not) ? s.not : undefined;
    if (!not || !Array.isArray(not.required)) return arb;
    const both = not.required as string[];
    const consts = isObj(not.properties) ? (not.properties as Record<string, Record<string, unknown>>) : {};
    return arb.filter((o) => !both.every((k) => k in o && (!(k in consts) || !('const' in consts[k]!) || o[k] === consts[k]!.const)));
  }

  /** one mutation that breaks the schema, or undefined if the schema accepts anything */
  invalid(schema: Schema): fc.Arbitrary<unknown> | undefined {
    const s = this.resolve(schema);
    if (!isObj(s)) return undefined;
    const type = s.type;
    if (type === 'object' || isObj(s.properties)) {
      const props = isObj(s.properties) ? (s.properties as Record<string, Schema>) : {};
      const required = Array.isArray(s.required) ? (s.required as string[]) : [];
      const muts: Array<fc.Arbitrary<unknown>> = [fc.constantFrom(42, 'text', [1, 2], true)];
      if (s.additionalProperties === false) {
        muts.push(this.valid(s).map((o) => ({ ...(o as object), zzUnknownMember: 1 })));
      }
      for (const k of required) {
        muts.push(this.valid(s).map((o) => Object.fromEntries(Object.entries(o as object).filter(([key]) => key !== k))));
      }
      for (const [k, v] of Object.entries(props)) {
        const bad = this.wrongType(v);
        if (bad !== undefined) muts.push(fc.tuple(this.valid(s), fc.constant(bad)).map(([o, b]) => ({ ...(o as object), [k]: b })));
      }
      return fc.oneof(...muts);
    }
    const bad = this.wrongType(s);
    return bad === undefined ? undefined : fc.constant(bad);
  }

  /** a value of a type the schema does not allow, if there is one */
  private wrongType(schema: Schema): unknown {
    const s = this.resolve(schema);
    if (!isObj(s) || s.anyOf || s.oneOf) return undefined;
    switch (s.type) {
      case 'string':
        return 12345;
      case 'integer':
      case 'number':
        return 'not-a-number';
      case 'boolean':
        return 'yes';
      case 'array':
        return { not: 'an array' };
      case 'object':
        return 'not-an-object';
      default:
        return undefined;
    }
  }
}

function num(v: unknown, dflt: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : dflt;
}

/**
 * Every operation of the document with its valid and invalid request arbitraries. `fixed` pins
 * path parameters (e.g. `{vm}` to a VM that exists) so the requests reach the service.
 */
export function operationCases(doc: OpenApiDoc, fixed: Record<string, string> = {}): OperationCases[] {
  const arb = new SchemaArbitraries(doc);
  const out: OperationCases[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const params = op.parameters ?? [];
      const pathParams = params.filter((p) => p.in === 'path');
      const query = params.filter((p) => p.in === 'query');
      const pathArb = fc.record(
        Object.fromEntries(pathParams.map((p) => [p.name, p.name in fixed ? fc.constant(fixed[p.name]) : arb.valid(p.schema ?? { type: 'string', minLength: 1 }).map(String)])),
      ) as fc.Arbitrary<Record<string, string>>;
      const queryArb = fc.record(
        Object.fromEntries(query.map((p) => [p.name, arb.valid(p.schema ?? { type: 'string' })])),
        { requiredKeys: query.filter((p) => p.required).map((p) => p.name) },
      ) as fc.Arbitrary<Record<string, unknown>>;
      const content = op.requestBody?.content ?? {};
      const json = content['application/json']?.schema;
      const octets = content['application/octet-stream'] !== undefined;
      const bodyArb: fc.Arbitrary<unknown> = json !== undefined ? arb.valid(json) : fc.constant(undefined);
      const build = (p: Record<string, string>, q: Record<string, unknown>, body: unknown, raw?: Uint8Array): GeneratedRequest => {
        const url = path.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(p[name] ?? 'x'));
        const qs = new URLSearchParams();
        for (const [k, v] of Object.entries(q)) {
          if (v === undefined) continue;
          for (const item of Array.isArray(v) ? v : [v]) qs.append(k, typeof item === 'object' ? JSON.stringify(item) : String(item));
        }
        const full = qs.size > 0 ? `${url}?${qs.toString()}` : url;
        if (raw !== undefined) return { method: method.toUpperCase(), url: full, headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.from(raw) };
        if (body === undefined) return { method: method.toUpperCase(), url: full, headers: {} };
        return { method: method.toUpperCase(), url: full, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) };
      };
      const valid = octets
        ? fc.tuple(pathArb, queryArb, fc.uint8Array({ maxLength: 256 })).map(([p, q, raw]) => build(p, q, undefined, raw))
        : fc.tuple(pathArb, queryArb, bodyArb).map(([p, q, b]) => build(p, q, b));
      const badBody = json !== undefined ? arb.invalid(json) : undefined;
      const badQueries = query
        .map((p) => ({ p, bad: p.schema !== undefined && isObj(arb.resolve(p.schema)) && ['integer', 'number', 'boolean'].includes(String((arb.resolve(p.schema) as Record<string, unknown>).type)) ? 'not-a-value' : undefined }))
        .filter((x) => x.bad !== undefined);
      const invalidParts: Array<fc.Arbitrary<GeneratedRequest>> = [];
      if (badBody) invalidParts.push(fc.tuple(pathArb, queryArb, badBody).map(([p, q, b]) => build(p, q, b)));
      for (const { p, bad } of badQueries) invalidParts.push(fc.tuple(pathArb, queryArb).map(([pp, q]) => build(pp, { ...q, [p.name]: bad }, undefined)));
      out.push({
        method: method.toUpperCase(),
        path,
        operation: op,
        statuses: new Set(Object.keys(op.responses).map(Number)),
        valid,
        ...(invalidParts.length > 0 ? { invalid: fc.oneof(...invalidParts) } : {}),
      });
    }
  }
  return out;
}
