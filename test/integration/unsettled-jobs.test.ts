/**
 * Every job a channel accepts is finished exactly once: the process-wide count of unsettled jobs
 * (qga/queue.ts unsettledJobs, which decides whether an answer waits for the end of its
 * event-loop turn) is back to 0 after each kind of work through the HTTP routes: single and
 * concurrent pings, guest-info, coalesced reads, exec, a freeze and its thaw, a timed-out command
 * and a refused one (queue full). A count left above 0 would hold every later answer back to the
 * check phase; one below 0 would never batch again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { unsettledJobs } from '../../src/qga/queue.js';
import type { SimAgent } from '../../sim/index.js';
import { makeRoutesApp, startSim, type SimFleet } from './routes-support.js';

let fleet: SimFleet;
let app: FastifyInstance;
let hung: SimAgent;

beforeAll(async () => {
  fleet = await startSim();
  const vms = [];
  for (let i = 0; i < 4; i++) {
    const a = await fleet.add({ name: `vm${i}` });
    if (i === 1) hung = a;
    vms.push({ name: `vm${i}`, endpoint: a.endpoint });
  }
  app = await makeRoutesApp({ vms, config: { agent: { idleReleaseMs: 2000, maxQueue: 2, timeouts: { fast: 300 } } } });
});

afterAll(async () => {
  await app?.close();
  await fleet?.close();
});

/** after the work and the turn it settled in */
async function settledAfter(work: () => Promise<unknown>): Promise<number> {
  await work();
  await new Promise((r) => setImmediate(r));
  return unsettledJobs();
}

describe('unsettled jobs', () => {
  it('return to 0 after every kind of work', async () => {
    const get = (url: string) => app.inject({ method: 'GET', url });
    expect(await settledAfter(() => get('/v1/vms/vm0/ping'))).toBe(0);
    expect(await settledAfter(() => Promise.all(Array.from({ length: 40 }, (_, i) => get(`/v1/vms/vm${i % 4}/ping`))))).toBe(0);
    expect(await settledAfter(() => get('/v1/vms/vm1/agent'))).toBe(0);
    expect(await settledAfter(() => Promise.all(Array.from({ length: 10 }, () => get('/v1/vms/vm2/fsinfo'))))).toBe(0);
    expect(await settledAfter(() => app.inject({ method: 'POST', url: '/v1/vms/vm3/exec', payload: { path: '/bin/echo', arg: ['x'], wait: 5 } }))).toBe(0);
    const freeze = await app.inject({ method: 'POST', url: '/v1/vms/vm0/fsfreeze', payload: {} });
    expect(freeze.statusCode).toBe(201);
    const leaseId = String((JSON.parse(freeze.body) as { leaseId: string }).leaseId);
    expect(await settledAfter(() => app.inject({ method: 'DELETE', url: `/v1/vms/vm0/fsfreeze?leaseId=${leaseId}` }))).toBe(0);
  });

  it('return to 0 after timeouts and refusals', async () => {
    hung.setFault({ command: 'guest-ping', kind: 'hang' });
    try {
      // one on the wire, two waiting (maxQueue 2), the rest refused 429 QUEUE_FULL; the three time out
      const answers = await Promise.all(Array.from({ length: 6 }, () => app.inject({ method: 'GET', url: '/v1/vms/vm1/ping' })));
      // the two waiting ones expire with the one on the wire (504), or just after its abandonment
      // put the channel into a resync (503, never sent): the order of those timers is the machine's
      const codes = answers.map((a) => a.statusCode).sort();
      expect(codes.slice(0, 3)).toEqual([429, 429, 429]);
      expect(codes.slice(3).every((c) => c === 503 || c === 504) && codes.includes(504)).toBe(true);
      await new Promise((r) => setImmediate(r));
      expect(unsettledJobs()).toBe(0);
    } finally {
      hung.clearFaults();
    }
  });
});
