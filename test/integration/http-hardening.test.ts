/**
 * The HTTP edge under hostile or unlucky conditions: bodies that could crash or poison a parser,
 * and a shutdown while a request hangs on an agent — which must still thaw what the gateway froze.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Simulator, type SimAgent } from '../../sim/index.js';
import { listen, makeApp } from '../helpers/app.js';

const dir = mkdtempSync(join(tmpdir(), 'qga-hard-'));
let sim: Simulator;
let a: SimAgent;
let b: SimAgent;

beforeAll(async () => {
  sim = new Simulator({ dir });
  a = await sim.addVm({ name: 'a' });
  b = await sim.addVm({ name: 'b' });
});

afterAll(async () => {
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('request bodies', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await makeApp({ vms: [{ name: 'a', endpoint: a.endpoint }] });
  });
  afterAll(async () => app?.close());

  it('a deeply nested body is a 400, not a crash', async () => {
    for (const payload of [`{"time":${'['.repeat(3000)}${']'.repeat(3000)}}`, `{"time":1${'0'.repeat(20)},"x":${'['.repeat(3000)}${']'.repeat(3000)}}`]) {
      const r = await app.inject({ method: 'PUT', url: '/v1/vms/a/time', headers: { 'content-type': 'application/json' }, payload });
      expect(r.statusCode, r.body).toBe(400);
      expect(r.json().code).toBe('VALIDATION_FAILED');
    }
  });

  it('prototype-poisoning members are refused', async () => {
    const r = await app.inject({
      method: 'POST',
      url: '/v1/vms/a/qga/guest-ping',
      headers: { 'content-type': 'application/json' },
      payload: '{"__proto__":{"admin":true}}',
    });
    expect(r.statusCode).toBe(400);
    expect(r.json().detail).toContain('__proto__');
  });

  it('invalid JSON is a 400 naming the problem', async () => {
    const r = await app.inject({ method: 'PUT', url: '/v1/vms/a/time', headers: { 'content-type': 'application/json' }, payload: '{"time": 12,' });
    expect(r.statusCode).toBe(400);
    expect(r.json().code).toBe('VALIDATION_FAILED');
  });
});

describe('shutdown', () => {
  it('aborts a hanging request after the grace time, then thaws what it froze', async () => {
    const app = await makeApp({
      vms: [
        { name: 'a', endpoint: a.endpoint },
        { name: 'b', endpoint: b.endpoint },
      ],
      config: { server: { shutdownGraceMs: 500 } },
    });
    const base = await listen(app);
    const frozen = await fetch(`${base}/v1/vms/a/fsfreeze`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"ttlSeconds":600}' });
    expect(frozen.status).toBe(201);
    expect(a.state.frozen).toBe(true);

    b.setFault({ command: 'guest-get-osinfo', kind: 'hang' });
    const hanging = fetch(`${base}/v1/vms/b/os`).then((r) => r.status);
    await new Promise((r) => setTimeout(r, 200)); // the request is in flight on b
    const t0 = Date.now();
    await app.close();
    const elapsed = Date.now() - t0;
    expect(await hanging).toBe(503);
    expect(a.state.frozen).toBe(false); // the embedded store's leases are thawed on the way out
    expect(elapsed).toBeLessThan(20_000); // grace (0.5 s) + thaw, not the agent's 10 s timeout chain
    b.clearFaults();
  });
});
