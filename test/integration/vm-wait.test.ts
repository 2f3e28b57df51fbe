/**
 * GET /v1/vms/{vm}/wait (issue 15 item 8) against the simulator: for=agent answers as soon as the
 * agent answers a sync, for=ip as soon as an address passing family/scope/exclude appears (within
 * the 1 s poll), 408 WAIT_TIMEOUT with the last seen state at the timeout, 400 above
 * agent.waitMaxSeconds, and a client that goes away ends the wait (no more interface reads).
 */
import { performance } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/qga/types.js';
import type { SimAgent } from '../../sim/index.js';
import { listen } from '../helpers/app.js';
import { body, expectProblem, makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
const apps: FastifyInstance[] = [];
let seq = 0;

beforeAll(async () => {
  fleet = await startSim();
});

afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});

afterAll(async () => {
  await fleet.close();
});

async function setup(config: Record<string, unknown> = {}): Promise<{ app: FastifyInstance; sim: SimAgent; vm: string }> {
  const vm = `wt${++seq}`;
  const sim = await fleet.add({ name: vm });
  const app = await makeRoutesApp({
    vms: [{ name: vm, endpoint: sim.endpoint }],
    config: { agent: { idleReleaseMs: 0, syncTimeoutMs: 400, probeIntervalMs: 0, waitMaxSeconds: 20 }, ...config },
  });
  apps.push(app);
  return { app, sim, vm };
}

const interfaceReads = (sim: SimAgent): number => sim.stats.commandLog.filter((e) => e.command === 'guest-network-get-interfaces').length;

describe('GET /v1/vms/{vm}/wait', () => {
  it('for=agent: answers within a few hundred ms of the agent coming up', async () => {
    const { app, sim, vm } = await setup();
    await sim.kill();
    const t0 = performance.now();
    let upAt = 0;
    let restartAt = 0;
    setTimeout(() => {
      restartAt = performance.now();
      void sim.restart().then(() => (upAt = performance.now()));
    }, 600);
    const r = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/wait?for=agent&timeout=10` });
    const done = performance.now();
    expect(r.statusCode).toBe(200);
    const b = body(r);
    expect(b.for).toBe('agent');
    expect((b.agent as JsonObject).state).toBe('up');
    expect(upAt).toBeGreaterThan(0);
    // not before the agent was back, and soon after (a failed connect is retried every 250 ms)
    expect(done).toBeGreaterThanOrEqual(restartAt);
    expect(done - upAt).toBeLessThan(600);
    expect(Number(b.waitedMs)).toBeGreaterThanOrEqual(Math.floor(restartAt - t0) - 5);
  });

  it('for=agent: an agent that is up answers at once', async () => {
    const { app, vm } = await setup();
    const t0 = performance.now();
    const r = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/wait?for=agent&timeout=5` });
    expect(r.statusCode).toBe(200);
    expect(performance.now() - t0).toBeLessThan(500);
  });

  it('for=agent: 408 WAIT_TIMEOUT at the timeout with the last seen state', async () => {
    const { app, sim, vm } = await setup();
    await sim.kill();
    const t0 = performance.now();
    const p = await expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/wait?for=agent&timeout=1` }, 408, 'WAIT_TIMEOUT');
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(1000);
    expect(ms).toBeLessThan(1700);
    expect(((p.state as JsonObject).agent as JsonObject).state).toBe('down');
    expect(p.vm).toBe(vm);
  });

  it('for=ip: answers within the 1 s poll of a matching address appearing; excluded interfaces and link-local addresses do not count', async () => {
    const { app, sim, vm } = await setup();
    // docker0 appears first (excluded), eth0 is excluded too, lo is not global
    sim.state.extraInterfaces.push({ name: 'docker0', addresses: [{ ip: '172.17.0.1', type: 'ipv4', prefix: 16 }] });
    let addedAt = 0;
    setTimeout(() => {
      sim.state.extraInterfaces.push({ name: 'ens3', addresses: [{ ip: 'fe80::1', type: 'ipv6', prefix: 64 }, { ip: '192.0.2.10', type: 'ipv4', prefix: 24 }] });
      addedAt = performance.now();
    }, 1200);
    const r = await app.inject({ method: 'GET', url: `/v1/vms/${vm}/wait?for=ip&timeout=10&family=ipv4&scope=global&exclude=docker*,veth*,eth0` });
    const done = performance.now();
    expect(r.statusCode).toBe(200);
    const b = body(r);
    expect(b.addresses).toEqual([{ interface: 'ens3', 'ip-address': '192.0.2.10', 'ip-address-type': 'ipv4', prefix: 24 }]);
    expect(addedAt).toBeGreaterThan(0);
    expect(done - addedAt).toBeGreaterThanOrEqual(0);
    expect(done - addedAt).toBeLessThan(1300);
  });

  it('for=ip: 408 with the addresses last seen when none passes the filter', async () => {
    const { app, sim, vm } = await setup();
    const t0 = performance.now();
    const p = await expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/wait?for=ip&timeout=2&family=ipv6&scope=global` }, 408, 'WAIT_TIMEOUT');
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(2000);
    expect(ms).toBeLessThan(2800);
    const seen = ((p.state as JsonObject).addresses as JsonObject[]).map((a) => a['ip-address']);
    expect(seen).toEqual(['127.0.0.1', '::1', '10.0.2.15', 'fe80::5054:ff:fe12:3456']);
    // polled about once a second, not in a busy loop
    expect(interfaceReads(sim)).toBeGreaterThanOrEqual(2);
    expect(interfaceReads(sim)).toBeLessThanOrEqual(4);
  });

  it('a client that goes away ends the wait', async () => {
    const { app, sim, vm } = await setup();
    const base = await listen(app);
    const ac = new AbortController();
    const req = fetch(`${base}/v1/vms/${vm}/wait?for=ip&timeout=20&family=ipv6&scope=global`, { signal: ac.signal }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 1500));
    ac.abort();
    expect(await req).toBeInstanceOf(Error);
    await new Promise((r) => setTimeout(r, 300));
    const reads = interfaceReads(sim);
    expect(reads).toBeGreaterThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 2200));
    expect(interfaceReads(sim)).toBe(reads);
  });

  it('400 for a timeout above agent.waitMaxSeconds or an unknown for', async () => {
    const { app, vm } = await setup();
    const p = await expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/wait?for=agent&timeout=21` }, 400, 'VALIDATION_FAILED');
    expect(p.detail).toContain('agent.waitMaxSeconds');
    await expectProblem(app, { method: 'GET', url: `/v1/vms/${vm}/wait?for=disk` }, 400, 'VALIDATION_FAILED');
    await expectProblem(app, { method: 'GET', url: '/v1/vms/nope/wait?for=agent&timeout=1' }, 404, 'VM_NOT_FOUND');
  });
});
