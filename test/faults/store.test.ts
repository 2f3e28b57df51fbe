/**
 * Fault matrix group C (../shared/FAULTS.md) through HTTP: the real app (in process) on a real
 * redis-server, simulated VMs.
 *  - C3: Redis hangs (SIGSTOP, connections kept open) — a freeze is refused with 503
 *    STORE_UNAVAILABLE within store.commandTimeoutMs + 1 s and sends the agent nothing; the
 *    holder's thaw of an existing lease is still executed; a local auto-thaw timer still fires;
 *    after SIGCONT the refused freeze never reaches the agent. (Redis executing the
 *    timed-out lock script on resume is a defect, see test/faults/CDE.md.)
 *  - C5: the same with a partition instead of a stopped Redis: a TCP proxy between the gateway
 *    and Redis that stops forwarding in both directions, then heals.
 *  - C8: Redis down with limits.rate on — the actual (deliberate) behaviour: limited reads are
 *    served (the rate limiter skips on error), freezes are refused with 503 STORE_UNAVAILABLE,
 *    thaws go through.
 */
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { makeApp } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { agentCommands, startSim, type SimFleet } from '../integration/routes-support.js';

const COMMAND_TIMEOUT_MS = 600;

let fleet: SimFleet;
const vm: Record<string, SimAgent> = {};
let redis: TestRedis;
const apps: FastifyInstance[] = [];
const proxies: Proxy[] = [];

beforeAll(async () => {
  fleet = await startSim();
  for (const name of ['p1', 'p2', 'p3', 'q1', 'q2', 'q3', 'r1']) vm[name] = await fleet.add({ name });
  redis = await startRedis();
});
afterEach(async () => {
  redis.resume();
  for (const p of proxies.splice(0)) await p.close();
  for (const a of apps.splice(0)) await a.close();
});
afterAll(async () => {
  await redis?.stop();
  await fleet?.close();
});

/** A TCP proxy to Redis that can stop forwarding in both directions (a partition) and heal. */
interface Proxy {
  url: string;
  partition(): void;
  heal(): void;
  close(): Promise<void>;
}

async function startProxy(targetPort: number): Promise<Proxy> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let cut = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    if (cut) (client.pause(), upstream.pause());
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `redis://127.0.0.1:${port}`,
    partition() {
      // bytes in flight stay unread (TCP holds them, as it does across a partition that heals)
      cut = true;
      for (const [c, u] of pairs) (c.pause(), u.pause());
    },
    heal() {
      cut = false;
      for (const [c, u] of pairs) (c.resume(), u.resume());
    },
    async close() {
      for (const [c, u] of pairs) (c.destroy(), u.destroy());
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function gateway(redisUrl: string, names: string[], more: Record<string, unknown> = {}): Promise<{ app: FastifyInstance; prefix: string }> {
  const prefix = `f${randomUUID().slice(0, 8)}:`;
  const app = await makeApp({
    vms: names.map((name) => ({ name, endpoint: vm[name].endpoint })),
    config: {
      store: { type: 'redis', redisUrl, keyPrefix: prefix, commandTimeoutMs: COMMAND_TIMEOUT_MS },
      freeze: { sweepIntervalMs: 200 },
      ...more,
    },
  });
  apps.push(app);
  await waitFor('store connected', async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 10_000);
  return { app, prefix };
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const freeze = (app: FastifyInstance, name: string, ttlSeconds: number) =>
  app.inject({ method: 'POST', url: `/v1/vms/${name}/fsfreeze`, payload: { ttlSeconds } });

/**
 * The C3/C5 scenario: `cut` makes Redis unreachable without closing the connection, `restore`
 * ends that. Names: [long lease, refused freeze, short lease].
 */
async function hangScenario(app: FastifyInstance, [held, refused, short]: string[], cut: () => void, restore: () => void): Promise<void> {
  const lease = await freeze(app, held, 60);
  expect(lease.statusCode, lease.body).toBe(201);
  const leaseId = String(lease.json<{ leaseId: string }>().leaseId);
  const shortLease = await freeze(app, short, 1);
  expect(shortLease.statusCode).toBe(201);
  const shortExpiry = Date.parse(shortLease.json<{ expiresAt: string }>().expiresAt);
  expect(vm[held].state.frozen && vm[short].state.frozen).toBe(true);
  const before = agentCommands(vm[refused]).length;

  cut();
  // a freeze is refused fast: the lock op fails at commandTimeoutMs, the agent is not asked
  const t0 = performance.now();
  const res = await freeze(app, refused, 30);
  const took = performance.now() - t0;
  process.stdout.write(`[faults/store] freeze with Redis unreachable refused after ${Math.round(took)} ms (commandTimeoutMs ${COMMAND_TIMEOUT_MS})\n`);
  expect(res.statusCode, res.body).toBe(503);
  expect(res.json<{ code: string }>().code).toBe('STORE_UNAVAILABLE');
  expect(took).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 20);
  expect(took).toBeLessThanOrEqual(COMMAND_TIMEOUT_MS + 1_000);
  expect(agentCommands(vm[refused]).slice(before)).toEqual([]);
  expect(vm[refused].state.frozen).toBe(false);

  // the holder's thaw is executed although the store cannot be asked
  const thaw = await app.inject({ method: 'DELETE', url: `/v1/vms/${held}/fsfreeze?leaseId=${encodeURIComponent(leaseId)}` });
  expect(thaw.statusCode, thaw.body).toBe(200);
  expect(thaw.json()).toMatchObject({ thawed: expect.any(Number), leaseCheck: 'local' });
  expect(vm[held].state.frozen).toBe(false);
  expect(agentCommands(vm[held]).at(-1)).toBe('guest-fsfreeze-thaw');

  // the local auto-thaw timer fires at the short lease's expiry, store or no store
  await waitFor('local auto-thaw with Redis unreachable', () => !vm[short].state.frozen, 5_000);
  const thawAt = vm[short].stats.commandLog.filter((c) => c.command === 'guest-fsfreeze-thaw').at(-1)?.at ?? 0;
  expect(thawAt).toBeGreaterThanOrEqual(shortExpiry);
  expect(thawAt).toBeLessThanOrEqual(shortExpiry + 1_000);

  restore();
  await waitFor('store healthy again', async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 10_000);
  // the refused freeze was never sent to the agent, before or after the store came back
  expect(agentCommands(vm[refused]).slice(before)).toEqual([]);
  // NOT asserted here (a defect, reported in test/faults/CDE.md): the lock script the gateway gave
  // up on at commandTimeoutMs is still executed by Redis when it resumes, leaving a lease nobody
  // holds — the next freeze is 409 LEASE_CONFLICT and at that lease's expiry the sweeper sends a
  // thaw to a VM this gateway never froze.
}

describe('C3/C5: Redis unreachable with the connection kept open', { timeout: 30_000 }, () => {
  it('C3 Redis SIGSTOPped: freeze 503 STORE_UNAVAILABLE within commandTimeoutMs + 1 s, thaw executed, auto-thaw fires, the refused freeze never reaches the agent', async () => {
    const { app } = await gateway(redis.url, ['p1', 'p2', 'p3']);
    await hangScenario(app, ['p1', 'p2', 'p3'], () => redis.pause(), () => redis.resume());
  });

  it('C5 partition gateway↔Redis (proxy stops forwarding): the same, and after the heal the store reconnects', async () => {
    const proxy = await startProxy(redis.port);
    proxies.push(proxy);
    const { app } = await gateway(proxy.url, ['q1', 'q2', 'q3']);
    await hangScenario(app, ['q1', 'q2', 'q3'], () => proxy.partition(), () => proxy.heal());
  });
});

describe('C8: Redis down while limits.rate counts in it', { timeout: 30_000 }, () => {
  it('limited reads are served (deliberate: skipOnError), a freeze is 503 STORE_UNAVAILABLE, the thaw goes through', async () => {
    const own = await startRedis();
    try {
      const { app } = await gateway(own.url, ['r1'], { limits: { rate: { max: 1000, timeWindowMs: 60_000 } } });
      const lease = await freeze(app, 'r1', 60);
      expect(lease.statusCode).toBe(201);
      // the limiter counts in Redis while it is up
      expect((await app.inject({ method: 'GET', url: '/v1/vms/r1/fsfreeze' })).statusCode).toBe(200);
      expect(await own.command('KEYS', '*ratelimit*')).toMatch(/ratelimit:a:/);
      await own.kill();
      const t0 = performance.now();
      const read = await app.inject({ method: 'GET', url: '/v1/vms/r1/ping' });
      expect(read.statusCode, read.body).toBe(200);
      expect(performance.now() - t0).toBeLessThanOrEqual(COMMAND_TIMEOUT_MS + 1_000);
      const refused = await freeze(app, 'r1', 30);
      expect(refused.statusCode, refused.body).toBe(503);
      expect(refused.json<{ code: string }>().code).toBe('STORE_UNAVAILABLE');
      const thaw = await app.inject({ method: 'DELETE', url: `/v1/vms/r1/fsfreeze?leaseId=${encodeURIComponent(String(lease.json<{ leaseId: string }>().leaseId))}` });
      expect(thaw.statusCode, thaw.body).toBe(200);
      expect(vm.r1.state.frozen).toBe(false);
    } finally {
      await own.stop();
    }
  });
});
