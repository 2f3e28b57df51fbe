/**
 * Issue 12, item 2 — fair admission, through the real app with tokens configured: a principal
 * (token, or client address when anonymous) over limits.perPrincipalConcurrency or limits.rate
 * gets 429 RATE_LIMITED with Retry-After while other principals are served; the concurrency
 * counters go back to 0 when requests finish and when clients disconnect mid-request (a POST
 * whose body was read included: Fastify's onResponse/onRequestAbort miss that one); the rate
 * limit is off by default, counts in memory or in the store's Redis (shared by two gateways);
 * thaws are never refused by either limit.
 */
import http from 'node:http';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { listen, makeApp, testConfig } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { body, expectProblem, startSim, type SimFleet } from '../integration/routes-support.js';

const TOKENS = {
  alice: 'alice-token-0123456789abcdef',
  bob: 'bob-token-0123456789abcdef',
};
const as = (who: keyof typeof TOKENS) => ({ authorization: `Bearer ${TOKENS[who]}` });
const tokens = Object.entries(TOKENS).map(([name, token]) => ({ name, token, scopes: ['read', 'write'] }));

/** how long the simulated agents take for the "slow" commands */
const SLOW_MS = 400;

let fleet: SimFleet;
const vm: Record<string, SimAgent> = {};
// a gateway keeps its agent sockets (test config: idleReleaseMs 0), so each app below has VMs of its own where it uses an agent
const NAMES = ['a-1', 'b-1', 'c-1', 'd-1', 'f-1', 'g-1', 'h-1'];

beforeAll(async () => {
  fleet = await startSim();
  for (const name of NAMES) vm[name] = await fleet.add({ name });
  // alice's VM answers slowly: her requests stay in flight (queued behind each other on its channel)
  vm['a-1'].setFault({ command: 'guest-get-time', kind: 'delay', ms: SLOW_MS });
  vm['a-1'].setFault({ command: 'guest-fstrim', kind: 'delay', ms: SLOW_MS });
  vm['c-1'].setFault({ command: 'guest-get-time', kind: 'delay', ms: SLOW_MS });
});
afterAll(async () => {
  await fleet?.close();
});

const vms = () => NAMES.map((name) => ({ name, endpoint: vm[name].endpoint }));
const app = (limits: Record<string, unknown>, more: Record<string, unknown> = {}) =>
  makeApp({ vms: vms(), config: { auth: { tokens }, limits, ...more } });

const getTime = (who: keyof typeof TOKENS, name = 'a-1'): InjectOptions => ({ method: 'GET', url: `/v1/vms/${name}/time`, headers: as(who) });

async function until(what: string, pred: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Fill alice's concurrency slots with slow requests; once they are in flight, `done` is their statuses when they end. */
async function holdSlots(a: FastifyInstance, n: number): Promise<{ done: Promise<number[]> }> {
  const held = Array.from({ length: n }, () => a.inject(getTime('alice')).then((r) => r.statusCode));
  await until(`alice at ${n} in flight`, () => a.admission.inFlight({ token: 'alice' }) === n);
  return { done: Promise.all(held) };
}

function expectRateLimited(p: Record<string, unknown>, headers: http.IncomingHttpHeaders | Record<string, unknown>): void {
  expect(p).toMatchObject({ status: 429, code: 'RATE_LIMITED', type: 'urn:qga-gateway:problem:RATE_LIMITED' });
  const retryAfter = Number(headers['retry-after']);
  expect(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${String(headers['retry-after'])}`).toBe(true);
}

describe('per-principal concurrency (limits.perPrincipalConcurrency)', () => {
  let a: FastifyInstance;
  let base: string;
  beforeAll(async () => {
    a = await app({ perPrincipalConcurrency: 4 });
    base = await listen(a);
  });
  afterAll(async () => {
    await a?.close();
  });

  it('defaults to 256 with no rate limit', () => {
    const c = testConfig();
    expect(c.limits.perPrincipalConcurrency).toBe(256);
    expect(c.limits.rate).toBeUndefined();
  });

  it('principal A over its limit gets 429 RATE_LIMITED with Retry-After while B is served at once; the counter goes back to 0', async () => {
    const { done } = await holdSlots(a, 4);
    const res = await a.inject(getTime('alice'));
    expect(res.statusCode, res.body).toBe(429);
    expect(String(res.headers['content-type'])).toMatch(/^application\/problem\+json/);
    const p = body(res);
    expectRateLimited(p, res.headers);
    expect(String(p.detail)).toMatch(/"alice" has 4 requests in flight.*limits\.perPrincipalConcurrency/);
    // nothing of the refused request reached the agent, and it holds no slot
    expect(a.admission.inFlight({ token: 'alice' })).toBe(4);
    // bob, on another VM, is neither refused nor slowed by alice's flood
    const t0 = performance.now();
    const b = await a.inject(getTime('bob', 'b-1'));
    const bobMs = performance.now() - t0;
    expect(b.statusCode, b.body).toBe(200);
    expect(bobMs).toBeLessThan(SLOW_MS / 2);
    expect(a.admission.inFlight({ token: 'alice' })).toBe(4); // alice's are still open: bob really ran beside them
    expect(a.admission.inFlight({ token: 'bob' })).toBe(0);
    expect(await done).toEqual([200, 200, 200, 200]);
    await until('alice back at 0', () => a.admission.inFlight({ token: 'alice' }) === 0);
    expect(a.admission.principals).toBe(0);
    // and she has her 4 slots again
    expect(await (await holdSlots(a, 4)).done).toEqual([200, 200, 200, 200]);
    expect(a.admission.principals).toBe(0);
  });

  it('errors answered before and after admission release their slot (401, 404, 400)', async () => {
    await a.inject({ method: 'GET', url: '/v1/vms/a-1/time', headers: { authorization: 'Bearer nope-nope-nope-nope-nope' } });
    await expectProblem(a, getTime('alice', 'nope'), 404, 'VM_NOT_FOUND');
    await expectProblem(a, { method: 'POST', url: '/v1/vms/a-1/fstrim', headers: as('alice'), payload: { minimum: 'x' } }, 400, 'VALIDATION_FAILED');
    expect(a.admission.principals).toBe(0);
  });

  it('clients that disconnect mid-request (GET waiting on the agent, POST whose body was read) release their slots at once', async () => {
    const port = new URL(base).port;
    const sockets: http.ClientRequest[] = [];
    const send = (method: string, path: string, payload?: string) => {
      const req = http.request({ host: '127.0.0.1', port, method, path, headers: { ...as('alice'), ...(payload ? { 'content-type': 'application/json' } : {}) }, agent: false });
      req.on('error', () => undefined);
      req.end(payload);
      sockets.push(req);
    };
    send('GET', '/v1/vms/a-1/time');
    send('GET', '/v1/vms/a-1/time');
    send('POST', '/v1/vms/a-1/fstrim', '{}');
    send('POST', '/v1/vms/a-1/fstrim', '{}');
    await until('4 in flight', () => a.admission.inFlight({ token: 'alice' }) === 4);
    const t0 = performance.now();
    for (const s of sockets) s.destroy();
    await until('slots released', () => a.admission.inFlight({ token: 'alice' }) === 0, SLOW_MS);
    // released by the disconnects, not by the agent answering (the last would take 4 × SLOW_MS)
    expect(performance.now() - t0).toBeLessThan(SLOW_MS);
    expect(a.admission.principals).toBe(0);
    // 4 new requests are admitted
    expect(await (await holdSlots(a, 4)).done).toEqual([200, 200, 200, 200]);
  });

  it('anonymous callers are counted by client address', async () => {
    const anon = await makeApp({ vms: vms(), config: { limits: { perPrincipalConcurrency: 2 } } });
    try {
      const slow = (remoteAddress: string) => anon.inject({ method: 'GET', url: '/v1/vms/c-1/time', remoteAddress });
      const held = [slow('10.0.0.1'), slow('10.0.0.1')];
      await until('10.0.0.1 at 2', () => anon.admission.inFlight({ address: '10.0.0.1' }) === 2);
      const r = await slow('10.0.0.1');
      expect(r.statusCode).toBe(429);
      expect(String(body(r).detail)).toMatch(/anonymous callers from 10\.0\.0\.1/);
      const other = await anon.inject({ method: 'GET', url: '/v1/vms/d-1/time', remoteAddress: '10.0.0.2' });
      expect(other.statusCode).toBe(200);
      expect((await Promise.all(held)).map((x) => x.statusCode)).toEqual([200, 200]);
      expect(anon.admission.principals).toBe(0);
    } finally {
      await anon.close();
    }
  });
});

describe('request rate (limits.rate, @fastify/rate-limit)', () => {
  it('is off by default: no rate-limit plugin, many requests all served', async () => {
    const a = await app({});
    try {
      expect(a.hasDecorator('rateLimit')).toBe(false);
      const codes = await Promise.all(Array.from({ length: 50 }, () => a.inject({ method: 'GET', url: '/v1/vms', headers: as('alice') }).then((r) => r.statusCode)));
      expect(codes.every((c) => c === 200)).toBe(true);
    } finally {
      await a.close();
    }
  });

  it('on (memory): request max + 1 of a principal is 429 RATE_LIMITED with Retry-After; others are served', async () => {
    const a = await app({ rate: { max: 3, timeWindowMs: 60_000 } });
    try {
      expect(a.services.store.kind).toBe('memory');
      const list = (who: keyof typeof TOKENS): InjectOptions => ({ method: 'GET', url: '/v1/vms', headers: as(who) });
      for (let i = 0; i < 3; i++) expect((await a.inject(list('alice'))).statusCode).toBe(200);
      const res = await a.inject(list('alice'));
      expect(res.statusCode).toBe(429);
      const p = body(res);
      expectRateLimited(p, res.headers);
      expect(Number(res.headers['retry-after'])).toBeLessThanOrEqual(60);
      expect(String(p.detail)).toMatch(/"alice" has made more than 3 requests in 60000 ms \(limits\.rate\)/);
      expect(res.headers['x-ratelimit-limit']).toBeUndefined();
      // every route, not only the one she used
      await expectProblem(a, getTime('alice', 'b-1'), 429, 'RATE_LIMITED');
      expect((await a.inject(list('bob'))).statusCode).toBe(200);
      // the refused requests hold no concurrency slot
      expect(a.admission.principals).toBe(0);
    } finally {
      await a.close();
    }
  });

  it('does not count /metrics, the probes, /openapi.json, /ui and /docs: a principal over its rate still scrapes', async () => {
    const a = await app({ rate: { max: 2, timeWindowMs: 60_000 } });
    try {
      const get = (url: string): InjectOptions => ({ method: 'GET', url, headers: as('alice') });
      const free = ['/metrics', '/healthz', '/readyz', '/openapi.json', '/ui', '/ui/app.js', '/docs/'];
      // many of each, before and after the budget is spent: none is counted, none refused
      for (let i = 0; i < 3; i++) for (const url of free) expect((await a.inject(get(url))).statusCode, url).toBe(200);
      for (let i = 0; i < 2; i++) expect((await a.inject(get('/v1/vms'))).statusCode).toBe(200);
      await expectProblem(a, get('/v1/vms'), 429, 'RATE_LIMITED');
      for (const url of free) expect((await a.inject(get(url))).statusCode, url).toBe(200);
    } finally {
      await a.close();
    }
  });

  describe('with the Redis store', () => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('counts in the store Redis (under its key prefix), shared by two gateways on it', async () => {
      const store = { type: 'redis', redisUrl: redis.url, keyPrefix: 'adm:', commandTimeoutMs: 1_000 };
      const [g1, g2] = await Promise.all([app({ rate: { max: 3, timeWindowMs: 60_000 } }, { store }), app({ rate: { max: 3, timeWindowMs: 60_000 } }, { store })]);
      try {
        expect(g1.services.store.kind).toBe('redis');
        const list: InjectOptions = { method: 'GET', url: '/v1/vms', headers: as('alice') };
        expect((await g1.inject(list)).statusCode).toBe(200);
        expect((await g2.inject(list)).statusCode).toBe(200);
        expect((await g1.inject(list)).statusCode).toBe(200);
        // the 4th, on the gateway that has seen only one of them
        await expectProblem(g2, list, 429, 'RATE_LIMITED');
        expect((await g2.inject({ ...list, headers: as('bob') })).statusCode).toBe(200);
        expect(await redis.command('GET', 'adm:ratelimit:t:alice')).toMatch(/^\$1\r\n4\r\n$/);
        expect(await redis.command('PTTL', 'adm:ratelimit:t:alice')).toMatch(/^:\d+\r\n$/);
        // Redis gone: the count cannot be kept, and limited requests are refused at once, never
        // served uncounted (fault matrix C8; the hanging-Redis case is test/faults/store.test.ts C8)
        await redis.kill();
        const t0 = performance.now();
        await expectProblem(g1, { method: 'GET', url: '/v1/vms', headers: as('alice') }, 503, 'STORE_UNAVAILABLE');
        expect(performance.now() - t0).toBeLessThan(1_500);
      } finally {
        await Promise.all([g1.close(), g2.close()]);
      }
    });
  });
});

describe('thaws and renewals are never refused by these limits', () => {
  it('owner DELETE and group DELETE go through while the principal is at its concurrency limit and over its rate', async () => {
    const a = await app({ perPrincipalConcurrency: 2, rate: { max: 8, timeWindowMs: 60_000 } });
    try {
      const freezeVm = async () => {
        const r = await a.inject({ method: 'POST', url: '/v1/vms/f-1/fsfreeze', headers: as('alice'), payload: { ttlSeconds: 60 } });
        expect(r.statusCode, r.body).toBe(201);
        return String(body(r).leaseId);
      };
      const freezeGroup = async () => {
        const r = await a.inject({ method: 'POST', url: '/v1/freeze-groups', headers: as('alice'), payload: { vms: ['g-1', 'h-1'], ttlSeconds: 60 } });
        expect(r.statusCode, r.body).toBe(201);
        const g = body(r);
        return { id: String(g.id), leaseId: String(g.leaseId) };
      };
      const thawVm = (leaseId: string) => a.inject({ method: 'DELETE', url: `/v1/vms/f-1/fsfreeze?leaseId=${leaseId}`, headers: as('alice') });
      const thawGroup = (g: { id: string; leaseId: string }) =>
        a.inject({ method: 'DELETE', url: `/v1/freeze-groups/${g.id}?leaseId=${g.leaseId}`, headers: as('alice') });

      // at the concurrency limit (rate: 2 freezes + 2 held = 4 of 8)
      let lease = await freezeVm();
      let group = await freezeGroup();
      expect(vm['f-1'].state.frozen && vm['g-1'].state.frozen && vm['h-1'].state.frozen).toBe(true);
      const { done } = await holdSlots(a, 2);
      const refused = await expectProblem(a, getTime('alice', 'b-1'), 429, 'RATE_LIMITED');
      expect(String(refused.detail)).toMatch(/in flight/);
      let t = await thawVm(lease);
      expect(t.statusCode, t.body).toBe(200);
      expect(vm['f-1'].state.frozen).toBe(false);
      t = await thawGroup(group);
      expect(t.statusCode, t.body).toBe(200);
      expect(a.admission.inFlight({ token: 'alice' })).toBe(2);
      expect(await done).toEqual([200, 200]);
      expect(vm['f-1'].state.frozen || vm['g-1'].state.frozen || vm['h-1'].state.frozen).toBe(false);

      // over the rate (2 more freezes, then reads until refused)
      lease = await freezeVm();
      group = await freezeGroup();
      expect(vm['f-1'].state.frozen && vm['g-1'].state.frozen && vm['h-1'].state.frozen).toBe(true);
      let n = 0;
      while ((await a.inject({ method: 'GET', url: '/v1/vms', headers: as('alice') })).statusCode === 200) expect(++n).toBeLessThan(10);
      const over = await expectProblem(a, { method: 'GET', url: '/v1/vms', headers: as('alice') }, 429, 'RATE_LIMITED');
      expect(String(over.detail)).toMatch(/limits\.rate/);
      // over her rate, her renewals of the leases she holds still go through (a refused one could
      // end a backup's lease mid-snapshot)
      const renewed = await a.inject({ method: 'POST', url: '/v1/vms/f-1/fsfreeze/renew', headers: as('alice'), payload: { leaseId: lease, ttlSeconds: 60 } });
      expect(renewed.statusCode, renewed.body).toBe(200);
      const renewedGroup = await a.inject({ method: 'POST', url: `/v1/freeze-groups/${group.id}/renew`, headers: as('alice'), payload: { leaseId: group.leaseId, ttlSeconds: 60 } });
      expect(renewedGroup.statusCode, renewedGroup.body).toBe(200);
      t = await thawVm(lease);
      expect(t.statusCode, t.body).toBe(200);
      t = await thawGroup(group);
      expect(t.statusCode, t.body).toBe(200);
      expect(vm['f-1'].state.frozen || vm['g-1'].state.frozen || vm['h-1'].state.frozen).toBe(false);
      // a new freeze (not a thaw, not a renewal) is refused like anything else
      await expectProblem(a, { method: 'POST', url: '/v1/vms/f-1/fsfreeze', headers: as('alice'), payload: { ttlSeconds: 60 } }, 429, 'RATE_LIMITED');
    } finally {
      await a.close();
    }
  });
});
