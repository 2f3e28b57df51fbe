/**
 * One contract (its cases: store-contract-cases.ts), two lease stores: the in-memory one and Redis
 * (a real redis-server started here); store-topologies.test.ts runs it on Sentinel and Cluster.
 * Then what only one store has: the memory store's state file and tombstone bound, and the Redis
 * store against a failing Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GatewayError } from '../../src/errors.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { LeaseStore } from '../../src/store/types.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startRedisProxy } from '../helpers/redis-proxy.js';
import { leaseStoreContract, req, type MakeStore, type StoreOptions } from './store-contract-cases.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let redis: TestRedis;
const opened: LeaseStore[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  for (const s of opened) await s.close();
  await redis?.stop();
});

async function makeRedisStore(prefix = `t${randomUUID().slice(0, 8)}:`, commandTimeoutMs = 1_000, opts: StoreOptions = {}): Promise<RedisStore> {
  const s = new RedisStore({ url: redis.url, keyPrefix: prefix, commandTimeoutMs, ...opts });
  opened.push(s);
  await s.ready();
  return s;
}

const impls: Array<[string, MakeStore]> = [
  ['memory', async (opts = {}) => new MemoryStore(opts)],
  ['redis', (opts = {}) => makeRedisStore(undefined, undefined, opts)],
];
for (const [name, make] of impls) leaseStoreContract(name, make);

describe('MemoryStore with a state file', () => {
  it('a new store on the same file finds the sessions, the epoch and the fence again', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-memstore-'));
    try {
      const file = path.join(dir, 'state.json');
      const a = new MemoryStore({ persistPath: file });
      expect(a.durable).toBe(true);
      const l = await a.acquire(req({ session: 'vm:p1', keys: ['vm:p1'], idempotencyKey: 'p' }));
      if (!l.ok) throw new Error('acquire failed');
      await a.putVm({ name: 'p1', endpoint: { type: 'unix', path: '/run/p1.sock' } });
      // a "restarted process"
      const b = new MemoryStore({ persistPath: file });
      expect(await b.getByKey('vm:p1')).toEqual(l.lease);
      expect(await b.check('vm:p1', l.lease.leaseId, l.lease.epoch)).toMatchObject({ state: 'live' });
      expect(await b.acquire(req({ session: 'vm:p1', keys: ['vm:p1'], idempotencyKey: 'p' }))).toMatchObject({ ok: true, reused: true });
      expect((await b.getVm('p1'))?.endpoint).toEqual({ type: 'unix', path: '/run/p1.sock' });
      const n = await b.acquire(req({ session: 'vm:p2', keys: ['vm:p2'] }));
      expect(n.ok && n.lease.fence).toBeGreaterThan(l.lease.fence);
      expect(await b.release('vm:p1', l.lease.leaseId)).toBe(true);
      expect(await new MemoryStore({ persistPath: file }).getByKey('vm:p1')).toBeUndefined();
      expect(new MemoryStore().durable).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('MemoryStore tombstones', () => {
  it('keeps at most maxEndedLeases of them, forgetting the oldest first', async () => {
    const store = new MemoryStore({ maxEndedLeases: 3 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const a = await store.acquire(req({ session: `vm:b${i}`, keys: [`vm:b${i}`] }));
      if (!a.ok) throw new Error('acquire failed');
      await store.release(`vm:b${i}`, a.lease.leaseId, 'deadline');
      ids.push(a.lease.leaseId);
    }
    const kept = await Promise.all(ids.map(async (id) => (await store.ended(id)) !== undefined));
    expect(kept).toEqual([false, false, true, true, true]);
  });

  it('a state file carries them across a restart; a file written before them still loads', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qga-memstore-'));
    try {
      const file = path.join(dir, 'state.json');
      const a = new MemoryStore({ persistPath: file });
      const l = await a.acquire(req({ session: 'vm:s1', keys: ['vm:s1'] }));
      if (!l.ok) throw new Error('acquire failed');
      await a.release('vm:s1', l.lease.leaseId, 'shutdown');
      const t = await a.ended(l.lease.leaseId);
      expect(t?.endedBy).toBe('shutdown');
      expect(await new MemoryStore({ persistPath: file }).ended(l.lease.leaseId)).toEqual(t);
      // an older state file has no "ended" member
      const old = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      delete old.ended;
      await writeFile(file, JSON.stringify(old));
      const b = new MemoryStore({ persistPath: file });
      expect(await b.ended(l.lease.leaseId)).toBeUndefined();
      expect((await b.acquire(req({ session: 'vm:s1', keys: ['vm:s1'] }))).ok).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('RedisStore against a failing Redis', () => {
  it('fences never go backwards when Redis restarts empty, and holders learn the data was lost', async () => {
    const own = await startRedis();
    const store = new RedisStore({ url: own.url, keyPrefix: 'f:', commandTimeoutMs: 1_000 });
    try {
      await store.ready();
      let last = 0;
      for (let i = 0; i < 20; i++) {
        const a = await store.acquire(req({ session: `vm:x${i}`, keys: [`vm:x${i}`] }));
        if (!a.ok) throw new Error('acquire failed');
        last = a.lease.fence;
      }
      const before = await store.getByKey('vm:x19');
      if (!before) throw new Error('lease missing');
      await own.restart({ empty: true });
      // a second store object, as another process would have, without this one's high-water mark
      const fresh = new RedisStore({ url: own.url, keyPrefix: 'f:', commandTimeoutMs: 1_000 });
      try {
        await fresh.ready();
        expect(await fresh.getByKey('vm:x19')).toBeUndefined();
        const b = await fresh.acquire(req({ session: 'vm:y', keys: ['vm:y'] }));
        expect(b.ok && b.lease.fence).toBeGreaterThan(last);
        if (!b.ok) return;
        expect(b.lease.epoch).not.toBe(before.epoch);
        expect(await fresh.check('vm:x19', before.leaseId, before.epoch)).toMatchObject({ state: 'lost' });
      } finally {
        await fresh.close();
      }
      await store.ready();
      const c = await store.acquire(req({ session: 'vm:z', keys: ['vm:z'] }));
      expect(c.ok && c.lease.fence).toBeGreaterThan(last);
    } finally {
      await store.close();
      await own.stop();
    }
  });

  it('an acquire whose reply was lost does not lock its owner out', async () => {
    const own = await startRedis();
    const proxy = await startRedisProxy(own.port);
    const store = new RedisStore({ url: proxy.url, keyPrefix: 'l:', commandTimeoutMs: 300 });
    try {
      await store.ready();
      await store.now();
      const r = req({ session: 'vm:lost', keys: ['vm:lost'], idempotencyKey: 'idem-lost' });
      // the script reaches Redis and runs in time; only its reply is held back past the timeout
      proxy.holdReplies();
      const err = await store.acquire(r).then(
        () => undefined,
        (e: unknown) => e,
      );
      proxy.heal();
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('STORE_UNAVAILABLE');
      // Redis ran the acquire: the lock exists …
      const held = await store.getByKey('vm:lost');
      expect(held?.owner).toBe('alice');
      // … and the owner's retry (same idempotency key) gets it back instead of a conflict; it is
      // not released behind the owner's back (only acquires without a key are undone)
      await sleep(700);
      const again = await store.acquire(r);
      expect(again).toMatchObject({ ok: true, reused: true, lease: { leaseId: held?.leaseId } });
      // someone else still conflicts
      expect(await store.acquire({ ...r, owner: 'bob', idempotencyKey: undefined })).toMatchObject({ ok: false, reason: 'conflict' });
    } finally {
      proxy.heal();
      await store.close();
      await proxy.close();
      await own.stop();
    }
  });

  it('an acquire without an idempotency key whose reply was lost is released as soon as the store answers again', async () => {
    const own = await startRedis();
    const proxy = await startRedisProxy(own.port);
    const store = new RedisStore({ url: proxy.url, keyPrefix: 'u:', commandTimeoutMs: 300 });
    try {
      await store.ready();
      await store.now();
      proxy.holdReplies();
      const err = await store.acquire(req({ session: 'vm:u', keys: ['vm:u'] })).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((err as GatewayError).code).toBe('STORE_UNAVAILABLE');
      // the lock was taken in Redis (seen directly, not through the held connection)
      expect(await own.command('EXISTS', 'u:{vm:u}:lock')).toBe(':1\r\n');
      proxy.heal();
      // nobody can ever use that lease (its caller was told 503): it is released, not left to expire
      const t0 = Date.now();
      while ((await own.command('EXISTS', 'u:{vm:u}:lock', 'u:{vm:u}:session')) !== ':0\r\n') {
        if (Date.now() - t0 > 3_000) throw new Error('the given-up lease was not released within 3 s');
        await sleep(20);
      }
      expect(await store.acquire(req({ session: 'vm:u', keys: ['vm:u'], owner: 'bob' }))).toMatchObject({ ok: true, reused: false });
    } finally {
      proxy.heal();
      await store.close();
      await proxy.close();
      await own.stop();
    }
  });

  it('an acquire or renew Redis runs only after the caller gave up (SIGSTOP, then SIGCONT) changes nothing', async () => {
    const own = await startRedis();
    const store = new RedisStore({ url: own.url, keyPrefix: 's:', commandTimeoutMs: 300 });
    try {
      await store.ready();
      const held = await store.acquire(req({ session: 'vm:h', keys: ['vm:h'], ttlMs: 5_000 }));
      if (!held.ok) throw new Error('acquire failed');
      own.pause();
      const codes = await Promise.all([
        store.acquire(req({ session: 'vm:s', keys: ['vm:s'], idempotencyKey: 'k' })).then(() => 'ok', (e: GatewayError) => e.code),
        store.renew('vm:h', held.lease.leaseId, 60_000).then(() => 'ok', (e: GatewayError) => e.code),
      ]);
      expect(codes).toEqual(['STORE_UNAVAILABLE', 'STORE_UNAVAILABLE']);
      await sleep(200);
      own.resume();
      // Redis runs both scripts now, past their not-after instant: both refuse
      await store.ready();
      const t0 = Date.now();
      while (!(await store.getSession('vm:h').then(() => true, () => false))) {
        if (Date.now() - t0 > 3_000) throw new Error('store not answering after SIGCONT');
        await sleep(20);
      }
      expect(await own.command('EXISTS', 's:{vm:s}:lock', 's:{vm:s}:session')).toBe(':0\r\n');
      expect((await store.getSession('vm:h'))?.expiresAt).toBe(held.lease.expiresAt);
      // the retry with the same key gets a fresh lease (ok, not a reused one nobody froze under)
      expect(await store.acquire(req({ session: 'vm:s', keys: ['vm:s'], idempotencyKey: 'k' }))).toMatchObject({ ok: true, reused: false });
    } finally {
      own.resume();
      await store.close();
      await own.stop();
    }
  });

  it('fails fast with STORE_UNAVAILABLE while Redis is down, and works again after it is back', async () => {
    const own = await startRedis();
    const store = new RedisStore({ url: own.url, keyPrefix: 'd:', commandTimeoutMs: 500 });
    try {
      await store.ready();
      await own.kill();
      const err = await store.acquire(req()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('STORE_UNAVAILABLE');
      expect((await store.health()).ok).toBe(false);
      await own.restart({ empty: true });
      await store.ready(10_000);
      expect((await store.acquire(req())).ok).toBe(true);
    } finally {
      await store.close();
      await own.stop();
    }
  });
});
