/**
 * The error table has one source (ERRORS in src/errors.ts): README's table is generated from it,
 * so is the OpenAPI description, and every code it has means in ../shared/API.md what it means here.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OPENAPI_PATH, README_PATH, withErrorTable } from '../../scripts/export-openapi.js';
import { ERRORS, errorTableMarkdown, type ErrorCode } from '../../src/errors.js';
import { apiContract } from '../helpers/shared.js';

/** `| `CODE` | 409 | when |` rows of API.md's error model */
function apiMdCodes(): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of apiContract().matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \|/gm)) out.set(m[1], Number(m[2]));
  return out;
}

// Codes API.md gained for open issues; the gateway does not raise them yet. The test fails once
// one is added to ERRORS without being removed here, and when any other API.md code is missing.
const NOT_YET_RAISED: Record<string, string> = {};

describe('the error table', () => {
  it('every code has the status API.md gives it', () => {
    const api = apiMdCodes();
    expect(api.size).toBeGreaterThan(20);
    for (const [code, e] of Object.entries(ERRORS)) expect({ code, status: api.get(code) }).toEqual({ code, status: e.status });
  });

  it('API.md codes the gateway does not raise are exactly the listed ones of open issues', () => {
    const missing = [...apiMdCodes().keys()].filter((c) => !(c in ERRORS));
    expect(missing.sort()).toEqual(Object.keys(NOT_YET_RAISED).sort());
  });

  it('README.md carries the table generated from src/errors.ts (npm run openapi:export)', () => {
    const readme = readFileSync(README_PATH, 'utf8');
    expect(withErrorTable(readme) === readme, 'README error table is stale: run npm run openapi:export').toBe(true);
    for (const code of Object.keys(ERRORS) as ErrorCode[]) expect(readme).toContain(`| \`${code}\` | ${ERRORS[code].status} |`);
  });

  it('the OpenAPI description carries the same table', () => {
    const doc = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as { info: { description: string } };
    expect(doc.info.description).toContain(errorTableMarkdown());
  });
});

describe('errors are built in one place', () => {
  it('no file in src/ but errors.ts and qga/agent-errors.ts calls new GatewayError (the factory words each situation once)', async () => {
    const { readdirSync } = await import('node:fs');
    const { join, relative, resolve } = await import('node:path');
    const root = resolve(__dirname, '../../src');
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(dir, e.name));
        else if (e.name.endsWith('.ts')) files.push(join(dir, e.name));
      }
    };
    walk(root);
    expect(files.length).toBeGreaterThan(50);
    const offenders = files
      .map((f) => relative(root, f))
      .filter((f) => f !== 'errors.ts' && f !== join('qga', 'agent-errors.ts'))
      .filter((f) => /new GatewayError\(/.test(readFileSync(join(root, f), 'utf8')));
    expect(offenders).toEqual([]);
  });
});
