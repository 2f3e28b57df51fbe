/**
 * Coalesced reads (issue 14 item 5, src/agent/coalesce.ts) against the simulator, counting what
 * reached the agent in its command log: identical concurrent reads of one VM cost one agent call;
 * different arguments, other VMs, mutating commands and pings are never shared; a caller that
 * leaves does not fail the others.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { ReadCoalescer } from '../../src/agent/coalesce.js';
import { agentCommands, makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
let a: SimAgent;
let b: SimAgent;
let app: FastifyInstance;

beforeAll(async () => {
  fleet = await startSim();
  a = await fleet.add({ name: 'co1' });
  b = await fleet.add({ name: 'co2' });
  app = await makeRoutesApp({ vms: [{ name: 'co1', endpoint: a.endpoint }, { name: 'co2', endpoint: b.endpoint }] });
  // open both channels (connect, sync, guest-info) before counting
  for (const vm of ['co1', 'co2']) expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/ping` })).statusCode).toBe(200);
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

beforeEach(() => {
  a.clearFaults();
  a.resetStats();
  b.resetStats();
});

const count = (vm: SimAgent, command: string): number => agentCommands(vm).filter((c) => c === command).length;

describe('coalesced reads', () => {
  it('100 concurrent GET /filesystems of one VM are one guest-get-fsinfo, every caller gets the same 200 body', async () => {
    // the agent takes 200 ms, so every request arrives while the first is in flight
    a.setFault({ command: 'guest-get-fsinfo', kind: 'delay', ms: 200, times: 1 });
    const res = await Promise.all(Array.from({ length: 100 }, () => app.inject({ method: 'GET', url: '/v1/vms/co1/filesystems' })));
    expect(res.map((r) => r.statusCode)).toEqual(Array(100).fill(200));
    expect(new Set(res.map((r) => r.body)).size).toBe(1);
    expect(count(a, 'guest-get-fsinfo')).toBe(1);
  });

  it('after the shared read settled, the next read asks the agent again', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/vms/co1/filesystems' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/v1/vms/co1/filesystems' })).statusCode).toBe(200);
    expect(count(a, 'guest-get-fsinfo')).toBe(2);
  });

  it('reads of different VMs and different commands are not shared', async () => {
    a.setFault({ command: 'guest-get-host-name', kind: 'delay', ms: 100, times: 1 });
    const urls = ['/v1/vms/co1/hostname', '/v1/vms/co1/hostname', '/v1/vms/co2/hostname', '/v1/vms/co1/os', '/v1/vms/co1/os'];
    const res = await Promise.all(urls.map((url) => app.inject({ method: 'GET', url })));
    expect(res.map((r) => r.statusCode)).toEqual([200, 200, 200, 200, 200]);
    expect(count(a, 'guest-get-host-name')).toBe(1);
    expect(count(b, 'guest-get-host-name')).toBe(1);
    expect(count(a, 'guest-get-osinfo')).toBe(1);
  });

  it('pings are never shared: 20 concurrent pings are 20 guest-ping', async () => {
    a.setFault({ command: 'guest-ping', kind: 'delay', ms: 50, times: 1 });
    const res = await Promise.all(Array.from({ length: 20 }, () => app.inject({ method: 'GET', url: '/v1/vms/co1/ping' })));
    expect(res.map((r) => r.statusCode)).toEqual(Array(20).fill(200));
    expect(count(a, 'guest-ping')).toBe(20);
  });
});

describe('ReadCoalescer', () => {
  const deferred = () => {
    let resolve!: (v: string) => void;
    const p = new Promise<string>((r) => (resolve = r));
    return { p, resolve };
  };

  it('100 concurrent reads of a frozen guest are refused 409 VM_FROZEN on one shared status read and one shared guest-info of the new socket, not one each (which filled the queue: 429)', async () => {
    const fr = await app.services.freeze.freeze('co2', { ttlSeconds: 60 }, { name: 'backup', admin: false });
    try {
      b.resetStats();
      // each status read takes 100 ms: every request arrives while one is in flight
      b.setFault({ command: 'guest-fsfreeze-status', kind: 'delay', ms: 100, times: 5 });
      const res = await Promise.all(Array.from({ length: 100 }, () => app.inject({ method: 'GET', url: '/v1/vms/co2/time' })));
      const got = res.map((r) => `${r.statusCode} ${r.json<{ code: string }>().code}`);
      expect(got).toEqual(Array(100).fill('409 VM_FROZEN'));
      expect(count(b, 'guest-fsfreeze-status')).toBeLessThanOrEqual(2);
      expect(count(b, 'guest-get-time')).toBe(0);
    } finally {
      b.clearFaults();
      await app.services.freeze.thaw('co2', { leaseId: fr.leaseId }, { name: 'backup', admin: false });
    }
  });

  it('shares only identical arguments, never a mutating command or a priority call', async () => {
    const c = new ReadCoalescer();
    let calls = 0;
    const d = deferred();
    const start = () => (calls++, d.p);
    const ps = [
      c.run('vm', 'guest-get-fsinfo', undefined, {}, start),
      c.run('vm', 'guest-get-fsinfo', {}, {}, start),
      c.run('vm', 'guest-network-get-interfaces', { a: 1 }, {}, start),
      c.run('vm', 'guest-network-get-interfaces', { a: 2 }, {}, start),
      c.run('vm', 'guest-set-time', undefined, {}, start),
      c.run('vm', 'guest-set-time', undefined, {}, start),
      c.run('vm', 'guest-fsfreeze-status', undefined, { priority: 'thaw' }, start),
      c.run('vm', 'guest-fsfreeze-status', undefined, { priority: 'thaw' }, start),
    ];
    expect(calls).toBe(7);
    expect(c.joined).toBe(1);
    d.resolve('x');
    expect(await Promise.all(ps)).toEqual(Array(8).fill('x'));
    expect(c.size).toBe(0);
  });

  it('a caller that aborts gets its abort; the others still get the answer; the command is aborted only when all left', async () => {
    const c = new ReadCoalescer();
    const d = deferred();
    let sent: AbortSignal | undefined;
    const start = (o: { signal?: AbortSignal }) => ((sent = o.signal), d.p);
    const one = new AbortController();
    const two = new AbortController();
    const p1 = c.run('vm', 'guest-get-users', undefined, { signal: one.signal }, start);
    const p2 = c.run('vm', 'guest-get-users', undefined, { signal: two.signal }, start);
    const p3 = c.run('vm', 'guest-get-users', undefined, {}, start);
    one.abort(new Error('first left'));
    await expect(p1).rejects.toThrow('first left');
    expect(sent?.aborted).toBe(false);
    d.resolve('users');
    expect(await p2).toBe('users');
    expect(await p3).toBe('users');

    let shared: AbortSignal | undefined;
    const e = deferred();
    const lone = new AbortController();
    const p4 = c.run('vm', 'guest-get-users', undefined, { signal: lone.signal }, (o) => ((shared = o.signal), e.p));
    const p5 = c.run('vm', 'guest-get-users', undefined, { signal: lone.signal }, start);
    lone.abort(new Error('all left'));
    await expect(p4).rejects.toThrow('all left');
    await expect(p5).rejects.toThrow('all left');
    expect(shared?.aborted).toBe(true);
    e.resolve('late');
    await new Promise((r) => setImmediate(r));
    expect(c.size).toBe(0);
  });
});
