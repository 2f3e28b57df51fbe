/**
 * Issue 12, item 12 — a property test over every operation of the served document, so the class
 * of edges an outside schema fuzzer found cannot come back: a request valid for the document
 * never gets a status the document does not list for it (and never a 5xx the gateway calls its
 * own defect), and a request that breaks the operation's schema gets 400 VALIDATION_FAILED.
 * Runs against the simulator only (valid requests really run: shutdown, set-time, file writes).
 */
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { operationCases, type OpenApiDoc, type OperationCases } from '../helpers/openapi-cases.js';
import { makeRoutesApp, startSim, type SimFleet } from '../integration/routes-support.js';

let fleet: SimFleet;
let vm: SimAgent;
let app: FastifyInstance;
let cases: OperationCases[];

beforeAll(async () => {
  fleet = await startSim();
  vm = await fleet.add({ name: 'prop' });
  app = await makeRoutesApp({
    vms: [{ name: 'prop', endpoint: vm.endpoint }],
    // short waits, so a generated exec `wait`, a GET /wait or a slow command cannot stall the run
    config: { exec: { maxWaitSeconds: 1 }, agent: { idleReleaseMs: 0, waitMaxSeconds: 1, timeouts: { fast: 2000, normal: 2000, slow: 2000, freeze: 2000, long: 2000 } } },
  });
  const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json<OpenApiDoc>();
  cases = operationCases(doc, { vm: 'prop' });
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

describe('every operation of the served document', () => {
  it('covers every operation', () => {
    expect(cases.length).toBeGreaterThan(50);
    expect(cases.filter((c) => c.invalid).length).toBeGreaterThan(20);
  });

  it('valid requests get only documented statuses, never a 500', async () => {
    for (const c of cases) {
      await fc.assert(
        fc.asyncProperty(c.valid, async (req) => {
          const res = await app.inject(req);
          const where = `${req.method} ${req.url} → ${res.statusCode} ${res.body.slice(0, 200)}`;
          expect(res.statusCode, where).not.toBe(500);
          expect(c.statuses.has(res.statusCode), `undocumented status: ${where}`).toBe(true);
          if (res.statusCode >= 400) {
            expect(String(res.headers['content-type']), where).toMatch(/^application\/problem\+json/);
            // issue 16: the code is one the operation lists (x-problem-codes), with a detail
            const problem = res.json<{ code: string; detail: string }>();
            expect((c.operation as { 'x-problem-codes'?: string[] })['x-problem-codes'] ?? [], `undocumented code: ${where}`).toContain(problem.code);
            expect(problem.detail.length, where).toBeGreaterThan(10);
          }
        }),
        { numRuns: 25, seed: 20261206, endOnFailure: true },
      );
    }
  }, 120_000);

  it('requests that break the schema get 400 VALIDATION_FAILED', async () => {
    for (const c of cases) {
      if (!c.invalid) continue;
      await fc.assert(
        fc.asyncProperty(c.invalid, async (req) => {
          const res = await app.inject(req);
          const where = `${req.method} ${req.url} ${String(req.payload ?? '').slice(0, 120)} → ${res.statusCode} ${res.body.slice(0, 200)}`;
          expect(res.statusCode, where).toBe(400);
          const problem = res.json<{ code: string; detail: string }>();
          expect(problem.code, where).toBe('VALIDATION_FAILED');
          // the detail names where the request is wrong (body.x, querystring.y) or says the body is no JSON object
          expect(problem.detail, where).toMatch(/^(body|querystring|params|headers)\b|JSON|not accepted here/);
        }),
        { numRuns: 25, seed: 20261206, endOnFailure: true },
      );
    }
  }, 120_000);
});
