/**
 * openapi/openapi.json is exported from the app (`npm run openapi:export`). This fails when the
 * committed document differs from what the code generates now — a route or schema changed
 * without re-exporting — and checks the document covers the contract: every QGA command (the
 * sync pair aside, which has its own route) under x-qga-command, every route of API.md with its
 * method, operationId/tags/summary/problem responses on every operation.
 */
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { OPENAPI_PATH, generateOpenApi, openApiText } from '../../scripts/export-openapi.js';
import { COMMANDS } from '../../src/qga/commands.js';
import { parseJson } from '../../src/util/json.js';
import { apiContract } from '../helpers/shared.js';

interface Operation {
  operationId?: string;
  tags?: string[];
  summary?: string;
  'x-qga-command'?: string | string[];
  responses?: Record<string, { content?: Record<string, unknown> }>;
}
type Doc = { paths: Record<string, Record<string, Operation>>; components: { schemas: Record<string, unknown> } };

const API_MD = apiContract();
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head'];

let generated: Doc;
let committed: Doc;

beforeAll(async () => {
  generated = (await generateOpenApi()) as Doc;
  // parsed losslessly, as generateOpenApi parses what is served: int64 bounds and examples are bigints
  committed = parseJson(readFileSync(OPENAPI_PATH, 'utf8')) as unknown as Doc;
}, 120_000);

function operations(doc: Doc): Array<{ method: string; path: string; op: Operation }> {
  const out: Array<{ method: string; path: string; op: Operation }> = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) if (METHODS.includes(method)) out.push({ method, path, op });
  }
  return out;
}

describe('openapi/openapi.json', () => {
  it('is exactly what the app generates (run `npm run openapi:export` after changing routes)', () => {
    // compare the text too, so that formatting drift is caught as well as content drift
    expect(readFileSync(OPENAPI_PATH, 'utf8') === openApiText(generated), 'openapi/openapi.json is stale: run npm run openapi:export').toBe(true);
    expect(committed).toEqual(generated);
  });

  it('maps every QGA command of the catalog (sync aside) under x-qga-command', () => {
    const mapped = new Set<string>();
    for (const { op } of operations(generated)) {
      const x = op['x-qga-command'];
      for (const c of Array.isArray(x) ? x : x ? [x] : []) mapped.add(c);
    }
    const missing = Object.keys(COMMANDS).filter((c) => !mapped.has(c) && c !== 'guest-sync' && c !== 'guest-sync-delimited');
    expect(missing).toEqual([]);
    expect(Object.keys(COMMANDS)).toHaveLength(44);
  });

  // Routes API.md gained for open issues, not built yet. Each must really be absent (the test fails
  // once one is served, so the entry is removed with the work) and nothing else may be missing.
  const NOT_YET_BUILT: Record<string, string> = {};

  it('has every route of API.md with its method', () => {
    const have = new Set(operations(generated).map(({ method, path }) => `${method.toUpperCase()} ${path}`));
    const want = new Set<string>();
    // "`GET /v1/vms/{vm}/time`", "`GET` / `POST` (…) / `DELETE` `/v1/…/ssh-keys`", "`POST …/handles/{handle}/read`"
    for (const line of API_MD.split('\n')) {
      const methods = [...line.matchAll(/`(GET|PUT|POST|DELETE|PATCH)`/g)].map((m) => m[1]);
      for (const m of line.matchAll(/`(GET|PUT|POST|DELETE|PATCH) (\/[^`\s?]+)[^`]*`/g)) want.add(`${m[1]} ${m[2]}`);
      const bare = /`(\/v1\/[^`\s?]+)`/.exec(line);
      if (bare) for (const m of methods) want.add(`${m} ${bare[1]}`);
    }
    // relative forms in the files row: `POST …/handles/{handle}/read`, `/write`… and `DELETE …/handles/{handle}`
    const filesRow = API_MD.split('\n').find((l) => l.includes('guest-file-open'));
    expect(filesRow).toBeDefined();
    const base = '/v1/vms/{vm}/files/handles/{handle}';
    for (const op of ['read', 'write', 'seek', 'flush']) {
      if (filesRow!.includes(`/${op}`)) want.add(`POST ${base}/${op}`);
    }
    want.add(`DELETE ${base}`);
    // API.md's service routes: every one an operation of the document
    const service = /^Service routes:([^]*?)\n\n/m.exec(API_MD)?.[1] ?? '';
    for (const m of service.matchAll(/`GET (\/[a-z.]+)`/g)) want.add(`GET ${m[1]}`);
    expect([...want].filter((w) => /^GET \/[a-z.]+$/.test(w)).sort()).toEqual(['GET /docs', 'GET /healthz', 'GET /metrics', 'GET /openapi.json', 'GET /readyz', 'GET /ui']);
    const missing = [...want].filter((w) => !have.has(w));
    expect(want.size).toBeGreaterThan(40);
    expect(missing.sort()).toEqual(Object.keys(NOT_YET_BUILT).sort());
  });

  it('every operation: operationId, tag, summary, problem+json error responses', () => {
    const ids = new Set<string>();
    for (const { method, path, op } of operations(generated)) {
      const where = `${method.toUpperCase()} ${path}`;
      expect(op.operationId, where).toMatch(/^[a-z][A-Za-z0-9]+$/);
      expect(ids.has(op.operationId!), `${where}: duplicate operationId`).toBe(false);
      ids.add(op.operationId!);
      expect(op.tags?.length, where).toBeGreaterThan(0);
      expect(op.summary, where).toBeTruthy();
      if (path.startsWith('/v1/')) {
        const errors = Object.entries(op.responses ?? {}).filter(([s]) => Number(s) >= 400);
        expect(errors.length, `${where}: no documented errors`).toBeGreaterThan(0);
        for (const [s, r] of errors) expect(Object.keys(r.content ?? {}), `${where} ${s}`).toEqual(['application/problem+json']);
      }
      if (path.startsWith('/v1/vms/{vm}/') && !/\/(exec|files|fsfreeze)/.test(path)) {
        expect(op['x-qga-command'], `${where}: no x-qga-command`).toBeDefined();
      }
    }
  });

  it('names the QGA types as components, verbatim', () => {
    for (const name of ['GuestNetworkInterface', 'GuestIpAddress', 'GuestDiskInfo', 'GuestCpuStats', 'GuestFileSeek', 'Problem']) {
      expect(Object.keys(generated.components.schemas)).toContain(name);
    }
    expect(openApiText(generated)).not.toMatch(/"#\/components\/schemas\/def-\d+"/);
  });
});
