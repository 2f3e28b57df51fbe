/**
 * Issue 16, item 4: the conventions of the OpenAPI document that make generated clients good and
 * keep the document truthful — named components for every body, real response descriptions,
 * exact 64-bit integers, the package's version, problem codes on every operation (and a response
 * for each), 413/415 wherever there is a body, 414/421/431 everywhere, and maxima from the
 * configuration in force in the served document.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { OPENAPI_PATH, generateOpenApi } from '../../scripts/export-openapi.js';
import { buildApp } from '../../src/app.js';
import { buildConfig } from '../../src/config/load.js';
import { ERRORS, type ErrorCode } from '../../src/errors.js';
import { parseJson } from '../../src/util/json.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head'];

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let doc: Json;

beforeAll(async () => {
  doc = (await generateOpenApi()) as Json;
}, 120_000);

function operations(d: Json): Array<{ where: string; path: string; method: string; op: Json }> {
  const out: Array<{ where: string; path: string; method: string; op: Json }> = [];
  for (const [path, item] of Object.entries(d.paths as Json)) {
    for (const [method, op] of Object.entries(item as Json)) {
      if (METHODS.includes(method)) out.push({ where: `${method.toUpperCase()} ${path}`, path, method, op: op as Json });
    }
  }
  return out;
}

/** every schema object in the document (components and inline), depth first */
function* schemas(s: unknown): Generator<Json> {
  if (Array.isArray(s)) {
    for (const x of s) yield* schemas(x);
  } else if (s !== null && typeof s === 'object') {
    const o = s as Json;
    if (typeof o.type === 'string') yield o;
    for (const v of Object.values(o)) yield* schemas(v);
  }
}

describe('the OpenAPI document', () => {
  it('names every request and response body as a component', () => {
    const inline: string[] = [];
    for (const { where, op } of operations(doc)) {
      for (const [media, m] of Object.entries((op.requestBody?.content ?? {}) as Json)) {
        if (typeof m.schema?.$ref !== 'string') inline.push(`${where} request ${media}`);
      }
      for (const [status, r] of Object.entries(op.responses as Json)) {
        for (const [media, m] of Object.entries(((r as Json).content ?? {}) as Json)) {
          if (typeof m.schema?.$ref !== 'string') inline.push(`${where} ${status} ${media}`);
        }
      }
    }
    expect(inline).toEqual([]);
    const names = Object.keys(doc.components.schemas as Json);
    for (const n of ['VmPage', 'VmSummary', 'VmDetail', 'GuestAgentInfo', 'GuestTime', 'ExecResult', 'ExecStarted', 'Problem']) expect(names).toContain(n);
    // no names made of a path and a status, as generators make for inline schemas
    expect(names.filter((n) => /^(Get|Post|Put|Patch|Delete)V1/.test(n))).toEqual([]);
  });

  it('describes every response (no "Default Response")', () => {
    for (const { where, op } of operations(doc)) {
      for (const [status, r] of Object.entries(op.responses as Json)) {
        const d = (r as Json).description as string;
        expect(d.length, `${where} ${status}`).toBeGreaterThan(3);
        expect(d, `${where} ${status}`).not.toBe('Default Response');
      }
    }
  });

  it('carries the package version', () => {
    const pkg = JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(doc.info.version).toBe(pkg.version);
  });

  it('writes 64-bit integers with format int64 and exact bounds and examples', () => {
    const text = readFileSync(OPENAPI_PATH, 'utf8');
    expect(text).toContain('1732000000123456789');
    expect(text).not.toContain('1732000000123456800');
    expect(text).toContain('"maximum": 9223372036854775807');
    const time = doc.components.schemas.GuestTime.properties.time as Json;
    expect(time).toMatchObject({ type: 'integer', format: 'int64', minimum: 0, maximum: 2n ** 63n - 1n, examples: [1732000000123456789n] });
    for (const s of schemas(doc)) {
      if (s.format === 'int64') expect([s.maximum, s.exclusiveMaximum]).not.toContain(2 ** 63);
    }
  });

  it('gives every integer a format, int32 or int64/uint64 (a generator maps an integer without one to int32: a byte counter past 2 GiB would not decode)', () => {
    const bare: string[] = [];
    const walk = (s: unknown, at: string): void => {
      if (Array.isArray(s)) return s.forEach((x, i) => walk(x, `${at}/${i}`));
      if (s === null || typeof s !== 'object') return;
      const o = s as Record<string, unknown>;
      if (o.type === 'integer' && !['int32', 'int64', 'uint64'].includes(String(o.format))) bare.push(at);
      for (const [k, v] of Object.entries(o)) walk(v, `${at}/${k}`);
    };
    walk(doc, '#');
    expect(bare).toEqual([]);
    // what the agent counts in 64 bits says so
    const props = (name: string) => doc.components.schemas[name].properties as Record<string, Json>;
    expect(props('GuestNetworkInterfaceStat')['rx-bytes'].format).toBe('uint64');
    expect(props('UploadResult').bytesWritten.format).toBe('int64');
    expect(props('GuestFileSeek').position.format).toBe('int64');
  });

  it('declares the headers of the conventions: X-Request-Id asked and answered everywhere, Retry-After on 429 and 503, Range on a download, Location on an exec 202', () => {
    for (const { where, op } of operations(doc)) {
      expect((op.parameters as Json[]).some((p) => p.$ref === '#/components/parameters/XRequestId'), where).toBe(true);
      for (const [status, r] of Object.entries(op.responses as Record<string, Json>)) {
        const headers = r.headers as Record<string, Json>;
        expect(headers['X-Request-Id'], `${where} ${status}`).toEqual({ $ref: '#/components/headers/XRequestId' });
        if (status === '429' || status === '503') expect(headers['Retry-After'], `${where} ${status}`).toEqual({ $ref: '#/components/headers/RetryAfter' });
      }
    }
    expect((doc.paths['/v1/vms/{vm}/files/content'].get.parameters as Json[]).map((p) => p.name)).toContain('range');
    expect(Object.keys(doc.paths['/v1/vms/{vm}/exec'].post.responses['202'].headers as Json)).toContain('Location');
  });

  it('two success statuses of one operation say what each means (a freeze: 201 new, 200 an idempotent retry)', () => {
    for (const { where, op } of operations(doc)) {
      const ok = Object.entries(op.responses as Record<string, Json>).filter(([s]) => Number(s) < 300);
      const texts = ok.map(([, r]) => r.description);
      expect(new Set(texts).size, where).toBe(texts.length);
    }
    expect(doc.paths['/v1/vms/{vm}/fsfreeze'].post.responses['200'].description).toMatch(/Idempotency-Key/);
  });

  it('lists the problem codes of every operation, each with its response, and 413/415 wherever there is a body', () => {
    for (const { where, op, path, method } of operations(doc)) {
      const codes = op['x-problem-codes'] as ErrorCode[];
      expect(Array.isArray(codes), where).toBe(true);
      const statuses = new Set(codes.map((c) => String(ERRORS[c].status)));
      const documented = Object.keys(op.responses as Json).filter((s) => Number(s) >= 400);
      expect(documented.sort(), where).toEqual([...statuses].sort());
      for (const c of codes) expect(op.responses[String(ERRORS[c].status)].description, `${where} ${c}`).toContain(`\`${c}\``);
      for (const c of ['URI_TOO_LONG', 'HEADERS_TOO_LARGE', 'MISDIRECTED_REQUEST']) expect(codes, where).toContain(c);
      // a body (or a method a client may send one with) can be too large or of a type no parser takes;
      // the upload takes any type (the bytes are the file)
      if (op.requestBody || ['post', 'put', 'patch', 'delete'].includes(method)) {
        expect(codes, where).toContain('PAYLOAD_TOO_LARGE');
        if (op.operationId !== 'uploadFile') expect(codes, where).toContain('UNSUPPORTED_MEDIA_TYPE');
      }
      if (path === '/metrics') expect(codes).toEqual(expect.arrayContaining(['UNAUTHENTICATED', 'FORBIDDEN']));
      if (path === '/healthz') expect(codes).not.toContain('UNAUTHENTICATED');
    }
  });

  it('serves the maxima of the configuration in force; the export carries the defaults', async () => {
    const wait = (d: Json) => d.components.schemas.ExecRequest.properties.wait.maximum as number;
    const ttl = (d: Json) => d.components.schemas.FreezeRequest.properties.ttlSeconds.maximum as number;
    const count = (d: Json) => d.components.schemas.ReadFileRequest.properties.count.maximum as number;
    expect([wait(doc), ttl(doc), count(doc)]).toEqual([300, 3600, 8 * 1024 * 1024]);
    const config = buildConfig(
      { log: { level: 'silent' }, exec: { maxWaitSeconds: 7 }, freeze: { maxTtlSeconds: 120, defaultTtlSeconds: 60 }, files: { maxRawReadBytes: 65536 } },
      {},
      'conventions-test',
    );
    const app = await buildApp({ config, logger: pino({ level: 'silent' }), env: {} });
    try {
      await app.ready();
      const served = parseJson((await app.inject({ method: 'GET', url: '/openapi.json' })).body) as Json;
      expect([wait(served), ttl(served), count(served)]).toEqual([7, 120, 65536]);
      expect(served.components.schemas.ExecRequest.properties.wait['x-max-from']).toBe('exec.maxWaitSeconds');
    } finally {
      await app.close();
    }
  }, 60_000);
});
