/**
 * An agent socket that takes connections but never answers a handshake (a hung qemu-ga, or another
 * client — qm agent, vzdump — holding the one-client channel). Commands with long deadlines (a
 * freeze or thaw: agent.timeouts.freeze, 300 s) used to wait them out, retrying the handshake: a
 * freeze answered after 300 s or more and a stop waited as long for a thaw (outside probe). Now
 * the waiting jobs fail after connectTimeoutMs + 3 × syncTimeoutMs of failed attempts, never sent:
 * the freeze is 503 with `sent: false` and leaves no lease; the gateway stops at once.
 */
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { makeApp } from '../helpers/app.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'qga-hung-'));
const sock = path.join(dir, 'hung.sock');
let server: net.Server;
const clients = new Set<net.Socket>();
let app: FastifyInstance | undefined;

beforeAll(async () => {
  server = net.createServer((c) => {
    clients.add(c);
    c.on('data', () => undefined);
    c.on('close', () => clients.delete(c));
  });
  await new Promise<void>((r) => server.listen(sock, r));
  // a short handshake: connect 300 ms + 3 syncs of 500 ms = 1.8 s before a freeze gives up
  app = await makeApp({
    vms: [{ name: 'hung', endpoint: { type: 'unix', path: sock } }],
    config: { freeze: { sweepIntervalMs: 200 }, agent: { connectTimeoutMs: 300, syncTimeoutMs: 500, backoffInitialMs: 50, backoffMaxMs: 100 } },
  });
});
afterAll(async () => {
  await app?.close();
  for (const c of clients) c.destroy();
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

it('a freeze on a hung agent answers 503 sent:false within a few handshakes (not the 60 s lease nor the 300 s freeze timeout), leaves no lease, and the gateway stops at once', async () => {
  const a = app!;
  const t0 = Date.now();
  const r = await a.inject({ method: 'POST', url: '/v1/vms/hung/fsfreeze', payload: { ttlSeconds: 60 } });
  const took = Date.now() - t0;
  expect(r.statusCode, r.body).toBe(503);
  expect(r.json()).toMatchObject({ code: 'AGENT_UNAVAILABLE', sent: false, detail: expect.stringMatching(/attempts failed over \d+ ms/) });
  expect(took).toBeGreaterThanOrEqual(1_800);
  expect(took).toBeLessThan(15_000);
  expect((await a.inject({ method: 'GET', url: '/v1/freezes' })).json()).toEqual({ freezes: [] });
  const s0 = Date.now();
  app = undefined;
  await a.close();
  expect(Date.now() - s0).toBeLessThan(5_000);
}, 30_000);

it('a stop whose thaw is slow names the frozen session it has not thawed (what serve logs if it must exit), and forgets it once thawed', async () => {
  const { BACKUP, rig, simFleet, waitFor } = await import('./freeze-fixture.js');
  const fleet = await simFleet(['slowthaw']);
  const g = await rig(fleet);
  try {
    await g.freeze.freeze('slowthaw', { ttlSeconds: 60 }, BACKUP);
    // the thaw takes 1.5 s: the shutdown is still at it when we look
    fleet.vm.slowthaw.setFault({ command: 'guest-fsfreeze-thaw', kind: 'delay', ms: 1_500 });
    const stopping = g.freeze.stop();
    await waitFor(() => g.freeze.unthawedAtShutdown().length === 1, 5_000, 'the shutdown thaw to start');
    expect(g.freeze.unthawedAtShutdown()).toEqual([{ session: 'vm:slowthaw', vms: ['slowthaw'], expiresAt: expect.any(String) }]);
    await stopping;
    expect(g.freeze.unthawedAtShutdown()).toEqual([]);
    expect(fleet.vm.slowthaw.state.frozen).toBe(false);
  } finally {
    fleet.vm.slowthaw.clearFaults();
    await g.close();
    await fleet.close();
  }
}, 30_000);
