/**
 * Fault matrix group C (../shared/FAULTS.md) through HTTP: the real app (in process) on a real
 * redis-server, simulated VMs.
 *  - C3: Redis hangs (SIGSTOP, connections kept open) — a freeze is refused with 503
 *    STORE_UNAVAILABLE within store.commandTimeoutMs + 1 s and sends the agent nothing; the
 *    holder's thaw of an existing lease is still executed; a local auto-thaw timer still fires;
 *    after SIGCONT nothing is replayed: the lock script Redis runs on resume is refused (its
 *    not-after instant has passed), so no lease exists, no command reaches the agent, and the
 *    next freeze succeeds.
 *  - C5: the same with a partition instead of a stopped Redis: a TCP proxy between the gateway
 *    and Redis that stops forwarding in both directions, then heals.
 *  - C1: Redis SIGKILLed and restarted with appendonly/appendfsync always: sessions and deadlines
 *    come back, another gateway's sweeper thaws on the restored deadline, fences keep increasing.
 *  - C4: a forward jump of the store clock by 2·L, injected as the offset it causes (the session's
 *    times in Redis moved 2·L into the past; no faketime on this machine): the lease expires early —
 *    the documented Redis limitation — and the old holder's fence checks fail.
 *  - C7: a renew that fails (Redis hanging) extends nothing and the VM is thawed at the original
 *    expiry. (The gateway does not renew on its own: renewals are the caller's; no lease_lost
 *    audit record exists — see test/FAULTS.md, C7.)
 *  - C8: Redis down with limits.rate on: limited routes are refused with 503 STORE_UNAVAILABLE
 *    (after commandTimeoutMs while Redis hangs, at once when it is gone), thaws go through.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { makeApp } from '../helpers/app.js';
import { RedisKeys } from '../../src/store/redis-keys.js';
import { REDIS_SERVER_PATH, startRedis, type TestRedis } from '../helpers/redis.js';
import { startRedisProxy, type RedisProxy } from '../helpers/redis-proxy.js';
import { agentCommands, startSim, type SimFleet } from '../integration/routes-support.js';

const COMMAND_TIMEOUT_MS = 600;

let fleet: SimFleet;
const vm: Record<string, SimAgent> = {};
let redis: TestRedis;
const apps: FastifyInstance[] = [];
const proxies: RedisProxy[] = [];

beforeAll(async () => {
  fleet = await startSim();
  for (const name of ['p1', 'p2', 'p3', 'q1', 'q2', 'q3', 'r1', 'c1a', 'c1b', 'c4', 'c7']) vm[name] = await fleet.add({ name });
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
async function hangScenario(app: FastifyInstance, prefix: string, [held, refused, short]: string[], cut: () => void, restore: () => void): Promise<void> {
  const lease = await freeze(app, held, 60);
  expect(lease.statusCode, lease.body).toBe(201);
  const leaseId = String(lease.json<{ leaseId: string }>().leaseId);
  const shortLease = await freeze(app, short, 1);
  expect(shortLease.statusCode).toBe(201);
  const shortExpiry = Date.parse(shortLease.json<{ expiresAt: string }>().expiresAt);
  expect(vm[held].state.frozen && vm[short].state.frozen).toBe(true);
  const before = agentCommands(vm[refused]).length;
  const wireBefore = vm[refused].stats.commandLog.length;

  cut();
  // a freeze is refused fast: the lock op fails at commandTimeoutMs, the agent is not asked
  const t0 = performance.now();
  // a 1 s lease: if Redis ran the given-up lock script on resume, its expiry would make the
  // sweeper thaw this VM inside the window checked below
  const res = await freeze(app, refused, 1);
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
  process.stdout.write(`[faults/store] local auto-thaw with the store unreachable: +${thawAt - shortExpiry} ms after the expiry\n`);
  expect(thawAt).toBeGreaterThanOrEqual(shortExpiry);
  expect(thawAt).toBeLessThanOrEqual(shortExpiry + 1_000);

  restore();
  await waitFor('store healthy again', async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 10_000);
  // nothing replayed: the lock script the gateway gave up on is refused by Redis when it resumes
  // (it carries a not-after instant on the store clock), so no lease exists for the refused VM…
  const t1 = Date.now();
  expect(await redis.command('EXISTS', `${prefix}{vm:${refused}}:session`, `${prefix}{vm:${refused}}:lock`)).toBe(':0\r\n');
  // …and no command at all reaches its agent (sync included) over a window longer than the refused
  // 1 s lease + a sweep + 1 s: an orphan lease would have been thawed by the sweeper inside it
  await new Promise((r) => setTimeout(r, 1_000 + 200 + 1_000));
  expect(vm[refused].stats.commandLog.slice(wireBefore).map((c) => c.command)).toEqual([]);
  expect(await redis.command('EXISTS', `${prefix}{vm:${refused}}:session`, `${prefix}{vm:${refused}}:lock`)).toBe(':0\r\n');
  expect(Date.now() - t1).toBeGreaterThanOrEqual(2_200);
  // the next freeze of that VM succeeds (no leftover lease), and its thaw ends it
  const next = await freeze(app, refused, 30);
  expect(next.statusCode, next.body).toBe(201);
  expect(agentCommands(vm[refused]).slice(before)).toEqual(['guest-fsfreeze-freeze']);
  const end = await app.inject({ method: 'DELETE', url: `/v1/vms/${refused}/fsfreeze?leaseId=${encodeURIComponent(next.json<{ leaseId: string }>().leaseId)}` });
  expect(end.statusCode, end.body).toBe(200);
  expect(vm[refused].state.frozen).toBe(false);
}

describe('C3/C5: Redis unreachable with the connection kept open', { timeout: 30_000 }, () => {
  it('C3 Redis SIGSTOPped: freeze 503 STORE_UNAVAILABLE within commandTimeoutMs + 1 s, thaw executed, auto-thaw fires; after SIGCONT nothing is replayed: no lease, no agent command, the next freeze succeeds', async () => {
    const { app, prefix } = await gateway(redis.url, ['p1', 'p2', 'p3']);
    await hangScenario(app, prefix, ['p1', 'p2', 'p3'], () => redis.pause(), () => redis.resume());
  });

  it('C5 partition gateway↔Redis (proxy stops forwarding): the same, and after the heal the store reconnects and nothing is replayed', async () => {
    const proxy = await startRedisProxy(redis.port);
    proxies.push(proxy);
    const { app, prefix } = await gateway(proxy.url, ['q1', 'q2', 'q3']);
    await hangScenario(app, prefix, ['q1', 'q2', 'q3'], () => proxy.partition(), () => proxy.heal());
  });
});

describe('C7: renewal fails mid-session', { timeout: 30_000 }, () => {
  it('a renew while Redis hangs is 503 STORE_UNAVAILABLE within commandTimeoutMs + 1 s and extends nothing; the VM is still thawed at the original expiry', async () => {
    const { app } = await gateway(redis.url, ['c7']);
    const lease = await freeze(app, 'c7', 2);
    expect(lease.statusCode).toBe(201);
    const { leaseId, expiresAt } = lease.json<{ leaseId: string; expiresAt: string }>();
    redis.pause();
    const t0 = performance.now();
    const renew = await app.inject({ method: 'POST', url: '/v1/vms/c7/fsfreeze/renew', payload: { leaseId, ttlSeconds: 30 } });
    const took = performance.now() - t0;
    expect(renew.statusCode, renew.body).toBe(503);
    expect(renew.json<{ code: string }>().code).toBe('STORE_UNAVAILABLE');
    expect(took).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 20);
    expect(took).toBeLessThanOrEqual(COMMAND_TIMEOUT_MS + 1_000);
    await waitFor('thaw at the original expiry', () => !vm.c7.state.frozen, 5_000);
    const thawAt = vm.c7.stats.commandLog.filter((c) => c.command === 'guest-fsfreeze-thaw').at(-1)?.at ?? 0;
    expect(thawAt).toBeGreaterThanOrEqual(Date.parse(expiresAt));
    expect(thawAt).toBeLessThanOrEqual(Date.parse(expiresAt) + 1_000);
    redis.resume();
  });
});

describe('C8: Redis down while limits.rate counts in it', { timeout: 30_000 }, () => {
  it('limited routes are 503 STORE_UNAVAILABLE (no silent bypass): after commandTimeoutMs while Redis hangs, at once when it is gone; thaws are never limited and go through', async () => {
    const own = await startRedis();
    try {
      const { app } = await gateway(own.url, ['r1'], { limits: { rate: { max: 1000, timeWindowMs: 60_000 } } });
      const lease = await freeze(app, 'r1', 60);
      expect(lease.statusCode).toBe(201);
      // the limiter counts in Redis while it is up
      expect((await app.inject({ method: 'GET', url: '/v1/vms/r1/fsfreeze' })).statusCode).toBe(200);
      expect(await own.command('KEYS', '*ratelimit*')).toMatch(/ratelimit:a:/);
      const pings = (): number => vm.r1.stats.commandLog.filter((c) => c.command === 'guest-ping').length;
      const pings0 = pings();

      // Redis hangs (SIGSTOP): a limited route waits for the count up to commandTimeoutMs, then 503
      own.pause();
      let t0 = performance.now();
      const hung = await app.inject({ method: 'GET', url: '/v1/vms/r1/ping' });
      let elapsed = performance.now() - t0;
      expect(hung.statusCode, hung.body).toBe(503);
      expect(hung.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(hung.json<{ code: string }>().code).toBe('STORE_UNAVAILABLE');
      expect(elapsed).toBeGreaterThanOrEqual(COMMAND_TIMEOUT_MS - 20);
      expect(elapsed).toBeLessThanOrEqual(COMMAND_TIMEOUT_MS + 500);
      expect(pings()).toBe(pings0);
      // the thaw is not limited: it goes through while Redis hangs
      const thaw = await app.inject({ method: 'DELETE', url: `/v1/vms/r1/fsfreeze?leaseId=${encodeURIComponent(String(lease.json<{ leaseId: string }>().leaseId))}` });
      expect(thaw.statusCode, thaw.body).toBe(200);
      expect(vm.r1.state.frozen).toBe(false);
      own.resume();
      expect((await app.inject({ method: 'GET', url: '/v1/vms/r1/ping' })).statusCode).toBe(200);

      // Redis gone (SIGKILL): refused at once, reads and freezes alike
      await own.kill();
      t0 = performance.now();
      const gone = await app.inject({ method: 'GET', url: '/v1/vms/r1/ping' });
      elapsed = performance.now() - t0;
      expect(gone.statusCode, gone.body).toBe(503);
      expect(gone.json<{ code: string }>().code).toBe('STORE_UNAVAILABLE');
      expect(elapsed).toBeGreaterThan(0);
      expect(elapsed).toBeLessThanOrEqual(COMMAND_TIMEOUT_MS + 500);
      const refused = await freeze(app, 'r1', 30);
      expect(refused.statusCode, refused.body).toBe(503);
      expect(refused.json<{ code: string }>().code).toBe('STORE_UNAVAILABLE');
      expect(vm.r1.state.frozen).toBe(false);
      expect(pings()).toBe(pings0 + 1);
    } finally {
      await own.stop();
    }
  });
});

/** A redis-server with the append-only file fsynced on every write, restartable on the same port and data dir. */
async function aofRedis(): Promise<{ url: string; kill(): Promise<void>; start(): Promise<void>; stop(): Promise<void>; command(...a: string[]): Promise<string> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-aof-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    const c = spawn(REDIS_SERVER_PATH, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--protected-mode', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
    child = c;
    await waitFor('redis (AOF) answering', async () => {
      if (c.exitCode !== null) throw new Error(`redis-server exited with ${c.exitCode}`);
      return (await rawRedis(port, ['PING']).catch(() => '')).startsWith('+PONG');
    }, 10_000);
  };
  const kill = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    kill,
    start,
    async stop() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
    command: (...a: string[]) => rawRedis(port, a),
  };
}

function rawRedis(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    const t = setTimeout(() => (s.destroy(), reject(new Error('redis raw command timed out'))), 5_000);
    s.once('error', (e) => (clearTimeout(t), reject(e)));
    s.on('data', (d) => {
      out += d.toString();
      // replies used here are single lines or one bulk string
      if (/^[+\-:]/.test(out) ? out.endsWith('\r\n') : /^\$-1\r\n$|^\$\d+\r\n[\s\S]*\r\n$/.test(out) || /^\*/.test(out)) {
        clearTimeout(t);
        s.end();
        resolve(out);
      }
    });
    s.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const p = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(p));
    });
  });
}

const bulk = (reply: string): string => reply.split('\r\n')[1] ?? '';

describe('C1: Redis SIGKILLed and restarted with AOF', { timeout: 60_000 }, () => {
  it('sessions and deadlines survive: the holder thaws with its lease (checked in the store), a deadline is kept by another gateway\'s sweeper within deadline + sweepIntervalMs + 1 s, fences strictly increase', async () => {
    const aof = await aofRedis();
    try {
      const prefix = `c1${randomUUID().slice(0, 6)}:`;
      const store = { type: 'redis', redisUrl: aof.url, keyPrefix: prefix, commandTimeoutMs: COMMAND_TIMEOUT_MS };
      const vms = ['c1a', 'c1b'].map((name) => ({ name, endpoint: vm[name].endpoint }));
      // the freezer hands its leases over at shutdown (they stay in Redis), so only Redis's data can thaw c1a
      const a = await makeApp({ vms, config: { store, freeze: { sweepIntervalMs: 60_000, handoverOnShutdown: true } } });
      apps.push(a);
      const short = await freeze(a, 'c1a', 3);
      const long = await freeze(a, 'c1b', 60);
      expect([short.statusCode, long.statusCode]).toEqual([201, 201]);
      const shortLease = short.json<{ leaseId: string; fence: number; expiresAt: string }>();
      const longLease = long.json<{ leaseId: string; fence: number; expiresAt: string }>();
      await a.close();
      apps.splice(apps.indexOf(a), 1);
      expect(vm.c1a.state.frozen && vm.c1b.state.frozen).toBe(true);

      await aof.kill();
      await aof.start();
      // the sessions are there as written
      expect(bulk(await aof.command('HGET', `${prefix}{vm:c1b}:session`, 'leaseId'))).toBe(longLease.leaseId);
      expect(Number(bulk(await aof.command('HGET', `${prefix}{vm:c1a}:session`, 'expiresAt')))).toBe(Date.parse(shortLease.expiresAt));

      const b = await makeApp({ vms, config: { store, freeze: { sweepIntervalMs: 200 } } });
      apps.push(b);
      const st = await b.inject({ method: 'GET', url: '/v1/vms/c1b/fsfreeze' });
      expect(st.statusCode).toBe(200);
      expect(st.json()).toMatchObject({ lease: { leaseId: longLease.leaseId, expiresAt: longLease.expiresAt } });
      // the sweeper resumes on the restored deadline
      await waitFor('deadline thaw of c1a from the restored deadline', () => !vm.c1a.state.frozen, 10_000);
      const thawAt = vm.c1a.stats.commandLog.filter((c) => c.command === 'guest-fsfreeze-thaw').at(-1)?.at ?? 0;
      expect(thawAt).toBeGreaterThanOrEqual(Date.parse(shortLease.expiresAt));
      expect(thawAt).toBeLessThanOrEqual(Date.parse(shortLease.expiresAt) + 200 + 1_000);
      // the holder's lease is checked in the store (not just trusted) and ends the session
      const thaw = await b.inject({ method: 'DELETE', url: `/v1/vms/c1b/fsfreeze?leaseId=${encodeURIComponent(longLease.leaseId)}` });
      expect(thaw.statusCode, thaw.body).toBe(200);
      expect(thaw.json()).toMatchObject({ leaseCheck: 'store' });
      expect(vm.c1b.state.frozen).toBe(false);
      // fences go on strictly increasing after the restart
      const next = await freeze(b, 'c1a', 30);
      expect(next.statusCode, next.body).toBe(201);
      const f3 = next.json<{ fence: number }>().fence;
      expect(shortLease.fence).toBeLessThan(longLease.fence);
      expect(f3).toBeGreaterThan(longLease.fence);
      const end = await b.inject({ method: 'DELETE', url: `/v1/vms/c1a/fsfreeze?leaseId=${encodeURIComponent(next.json<{ leaseId: string }>().leaseId)}` });
      expect(end.statusCode).toBe(200);
    } finally {
      for (const x of apps.splice(0)) await x.close();
      await aof.stop();
    }
  });
});

describe('C4: the store clock jumps forward by 2·L', { timeout: 30_000 }, () => {
  it('the lease expires early (documented Redis limitation) and another gateway acquires with a higher fence; the old holder\'s renew and thaw fail their fence check (409 LEASE_EXPIRED) and send nothing; the VM is never frozen twice', async () => {
    const L = 30;
    const prefix = `c4${randomUUID().slice(0, 6)}:`;
    const store = { type: 'redis', redisUrl: redis.url, keyPrefix: prefix, commandTimeoutMs: COMMAND_TIMEOUT_MS };
    const vms = [{ name: 'c4', endpoint: vm.c4.endpoint }];
    const a = await makeApp({ vms, config: { store, freeze: { sweepIntervalMs: 60_000 } } });
    const b = await makeApp({ vms, config: { store, freeze: { sweepIntervalMs: 200 } } });
    apps.push(a, b);
    const first = await freeze(a, 'c4', L);
    expect(first.statusCode, first.body).toBe(201);
    const old = first.json<{ leaseId: string; fence: number }>();
    // Redis's clock jumps +2·L for this session: every time it keeps for it moves 2·L into the past
    // (the scripts compare them with Redis TIME, so this is what the jump does to the lease)
    const key = `${prefix}{vm:c4}:session`;
    const jump = 2 * L * 1000;
    for (const field of ['createdAt', 'expiresAt', 'hardDeadline']) {
      const v = Number(bulk(await redis.command('HGET', key, field)));
      expect(v).toBeGreaterThan(0);
      expect(await redis.command('HSET', key, field, String(v - jump))).toBe(':0\r\n');
    }
    // its deadline index entry (one per lease: "<session>\n<leaseId>", in the bucket of vm:c4's slot) likewise
    const entry = `vm:c4\n${old.leaseId}`;
    const score = Number(bulk(await redis.command('ZSCORE', new RedisKeys(prefix).index('vm:c4'), entry)));
    expect(score).toBe(Number(bulk(await redis.command('HGET', key, 'expiresAt'))) + jump);
    expect(await redis.command('ZADD', new RedisKeys(prefix).index('vm:c4'), String(score - jump), entry)).toBe(':0\r\n');

    // the other gateway's sweeper sees an expired lease and thaws early
    await waitFor('early deadline thaw by the other gateway', () => !vm.c4.state.frozen, 5_000);
    await waitFor('the expired session ended', async () => (await b.inject({ method: 'GET', url: '/v1/vms/c4/fsfreeze' })).json<{ lease: unknown }>().lease === null, 5_000);
    const second = await freeze(b, 'c4', L);
    expect(second.statusCode, second.body).toBe(201);
    const fresh = second.json<{ leaseId: string; fence: number }>();
    expect(fresh.fence).toBeGreaterThan(old.fence);

    // the old holder's next operations fail their fence check and reach no agent
    const mark = vm.c4.stats.commandLog.length;
    const renew = await a.inject({ method: 'POST', url: '/v1/vms/c4/fsfreeze/renew', payload: { leaseId: old.leaseId, ttlSeconds: L } });
    expect(renew.statusCode, renew.body).toBe(409);
    expect(renew.json<{ code: string }>().code).toBe('LEASE_EXPIRED');
    const thaw = await a.inject({ method: 'DELETE', url: `/v1/vms/c4/fsfreeze?leaseId=${encodeURIComponent(old.leaseId)}` });
    expect(thaw.statusCode, thaw.body).toBe(409);
    expect(thaw.json<{ code: string }>().code).toBe('LEASE_EXPIRED');
    expect(vm.c4.stats.commandLog.slice(mark).map((c) => c.command)).toEqual([]);
    expect(vm.c4.state.frozen).toBe(true);

    // history: freeze and thaw alternate on the agent (never frozen twice), the new holder ends it
    const end = await b.inject({ method: 'DELETE', url: `/v1/vms/c4/fsfreeze?leaseId=${encodeURIComponent(fresh.leaseId)}` });
    expect(end.statusCode).toBe(200);
    expect(agentCommands(vm.c4).filter((c) => c === 'guest-fsfreeze-freeze' || c === 'guest-fsfreeze-thaw')).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
  });
});
