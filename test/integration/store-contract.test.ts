/**
 * One contract, two lease stores: the in-memory one and Redis (a real redis-server started here).
 * Expiry is exercised with real short TTLs on the store's own clock.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GatewayError } from '../../src/errors.js';
import { MemoryStore } from '../../src/store/memory.js';
import { RedisStore } from '../../src/store/redis.js';
import type { AcquireRequest, LeaseStore } from '../../src/store/types.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { startRedisProxy } from '../helpers/redis-proxy.js';

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

/** Options both stores take. */
interface StoreOptions {
  endedRetentionMs?: number;
}

const impls: Array<[string, (opts?: StoreOptions) => Promise<LeaseStore>]> = [
  ['memory', async (opts = {}) => new MemoryStore(opts)],
  ['redis', (opts = {}) => makeRedisStore(undefined, undefined, opts)],
];

/**
 * Poll the store (every 10 ms) until `cond` holds; resolves with the store's clock at that moment.
 * Bounded: fails after `boundMs`. Expiry waits on the store's own clock, never on a fixed sleep.
 */
async function storeUntil(store: LeaseStore, cond: () => Promise<boolean>, boundMs: number, what: string): Promise<number> {
  const end = Date.now() + boundMs;
  for (;;) {
    if (await cond()) return store.now();
    if (Date.now() > end) throw new Error(`store: ${what} not within ${boundMs} ms`);
    await sleep(10);
  }
}

/** The store's clock has reached `at` (ms); polled, bounded by `at` + 1 s on this process's clock. */
async function storeClockPast(store: LeaseStore, at: number, what: string): Promise<number> {
  return storeUntil(store, async () => (await store.now()) >= at, Math.max(0, at - (await store.now())) + 1_000, what);
}

function req(over: Partial<AcquireRequest> = {}): AcquireRequest {
  return { session: 'vm:a', keys: ['vm:a'], owner: 'alice', ttlMs: 10_000, hardCapMs: 60_000, ...over };
}

describe.each(impls)('LeaseStore contract: %s', (_name, make) => {
  let store: LeaseStore;
  beforeAll(async () => {
    store = await make();
  });

  it('acquires a lease and refuses a second holder, naming the holder and its expiry', async () => {
    const a = await store.acquire(req({ session: 'vm:c1', keys: ['vm:c1'] }));
    expect(a.ok).toBe(true);
    if (!a.ok) return;
    expect(a.reused).toBe(false);
    expect(a.lease.owner).toBe('alice');
    expect(a.lease.expiresAt - a.lease.createdAt).toBe(10_000);
    expect(a.lease.hardDeadline - a.lease.createdAt).toBe(60_000);
    expect(a.lease.keys).toEqual(['vm:c1']);
    const b = await store.acquire(req({ session: 'vm:c1', keys: ['vm:c1'], owner: 'bob' }));
    expect(b).toMatchObject({ ok: false, reason: 'conflict', key: 'vm:c1', pendingThaw: false });
    if (b.ok || b.reason !== 'conflict') return;
    expect(b.holder).toEqual({ session: 'vm:c1', owner: 'alice', leaseId: a.lease.leaseId, expiresAt: a.lease.expiresAt, fence: a.lease.fence });
    expect((await store.getByKey('vm:c1'))?.leaseId).toBe(a.lease.leaseId);
  });

  it('an idempotent retry by the same owner returns the same lease, not extended', async () => {
    const r = req({ session: 'vm:i1', keys: ['vm:i1'], idempotencyKey: 'k-1' });
    const a = await store.acquire(r);
    await sleep(20);
    const b = await store.acquire(r);
    expect(a.ok && b.ok).toBe(true);
    if (!a.ok || !b.ok) return;
    expect(b.reused).toBe(true);
    expect(b.lease.leaseId).toBe(a.lease.leaseId);
    expect(b.lease.fence).toBe(a.lease.fence);
    expect(b.lease.expiresAt).toBe(a.lease.expiresAt);
    // another owner with the same key is just a conflict
    const c = await store.acquire({ ...r, owner: 'mallory' });
    expect(c).toMatchObject({ ok: false, reason: 'conflict' });
    // the same key for other VMs is refused: it names an earlier, different request
    const d = await store.acquire({ ...r, session: 'vm:i2', keys: ['vm:i2'] });
    expect(d).toMatchObject({ ok: false, reason: 'idempotency-key-reused', leaseId: a.lease.leaseId });
    expect(await store.getByKey('vm:i2')).toBeUndefined();
  });

  it('release is compare-and-delete; the idempotency key stays used afterwards', async () => {
    const r = req({ session: 'vm:r1', keys: ['vm:r1'], idempotencyKey: 'k-r1' });
    const a = await store.acquire(r);
    if (!a.ok) throw new Error('acquire failed');
    expect(await store.release('vm:r1', 'not-the-lease')).toBe(false);
    expect((await store.getByKey('vm:r1'))?.leaseId).toBe(a.lease.leaseId);
    expect(await store.release('vm:r1', a.lease.leaseId)).toBe(true);
    expect(await store.release('vm:r1', a.lease.leaseId)).toBe(false);
    expect(await store.getByKey('vm:r1')).toBeUndefined();
    expect(await store.getSession('vm:r1')).toBeUndefined();
    expect(await store.acquire(r)).toMatchObject({ ok: false, reason: 'idempotency-key-reused' });
    const other = await store.acquire(req({ session: 'vm:r1', keys: ['vm:r1'], owner: 'bob' }));
    expect(other.ok).toBe(true);
  });

  it('renew extends a live lease within the hard cap and refuses a wrong or expired lease', async () => {
    const a = await store.acquire(req({ session: 'vm:n1', keys: ['vm:n1'], ttlMs: 1_000, hardCapMs: 5_000 }));
    if (!a.ok) throw new Error('acquire failed');
    const r1 = await store.renew('vm:n1', a.lease.leaseId, 3_000);
    expect(r1.ok).toBe(true);
    if (!r1.ok) return;
    expect(r1.capped).toBe(false);
    expect(r1.lease.expiresAt).toBeGreaterThan(a.lease.expiresAt);
    const r2 = await store.renew('vm:n1', a.lease.leaseId, 60_000);
    expect(r2).toMatchObject({ ok: true, capped: true });
    if (!r2.ok) return;
    expect(r2.lease.expiresAt).toBe(a.lease.hardDeadline);
    expect(await store.renew('vm:n1', 'wrong', 1_000)).toMatchObject({ ok: false, reason: 'lease-mismatch' });
    expect(await store.renew('vm:none', 'wrong', 1_000)).toMatchObject({ ok: false, reason: 'not-found' });

    const b = await store.acquire(req({ session: 'vm:n2', keys: ['vm:n2'], ttlMs: 100 }));
    if (!b.ok) throw new Error('acquire failed');
    // the event: the lease's expiry on the store's clock (polled, bounded)
    await storeClockPast(store, b.lease.expiresAt, 'vm:n2 lease expiry');
    expect(await store.renew('vm:n2', b.lease.leaseId, 1_000)).toMatchObject({ ok: false, reason: 'expired' });
  });

  it('an expired lease keeps its VM locked (pending thaw) until released; the sweeper claims it once', async () => {
    const a = await store.acquire(req({ session: 'vm:e1', keys: ['vm:e1'], ttlMs: 100 }));
    if (!a.ok) throw new Error('acquire failed');
    expect((await store.dueSessions(100)).map((s) => s.session)).not.toContain('vm:e1');
    expect(await store.claim('vm:e1', a.lease.leaseId, 1_000)).toBe(false); // not due yet
    // due exactly from its expiry: polled until listed, at a store time in [expiresAt, expiresAt + 1 s]
    const dueAt = await storeUntil(store, async () => (await store.dueSessions(100)).some((s) => s.session === 'vm:e1'), 1_100, 'vm:e1 due');
    expect(dueAt).toBeGreaterThanOrEqual(a.lease.expiresAt);
    expect(dueAt).toBeLessThanOrEqual(a.lease.expiresAt + 1_000);
    const b = await store.acquire(req({ session: 'vm:e1', keys: ['vm:e1'], owner: 'bob' }));
    expect(b).toMatchObject({ ok: false, reason: 'conflict', pendingThaw: true });
    const due = await store.dueSessions(100);
    expect(due.find((s) => s.session === 'vm:e1')?.leaseId).toBe(a.lease.leaseId);
    expect(await store.claim('vm:e1', 'wrong', 1_000)).toBe(false);
    expect(await store.claim('vm:e1', a.lease.leaseId, 1_000)).toBe(true);
    expect(await store.claim('vm:e1', a.lease.leaseId, 1_000)).toBe(false); // someone has it
    expect((await store.dueSessions(100)).map((s) => s.session)).not.toContain('vm:e1');
    expect(await store.check('vm:e1', a.lease.leaseId, a.lease.epoch)).toMatchObject({ state: 'expired' });
    expect(await store.release('vm:e1', a.lease.leaseId)).toBe(true);
    expect((await store.listSessions()).map((s) => s.session)).not.toContain('vm:e1');
  });

  it('a claim retried after its delay is due again (a crashed claimer is retried)', async () => {
    const a = await store.acquire(req({ session: 'vm:e2', keys: ['vm:e2'], ttlMs: 50 }));
    if (!a.ok) throw new Error('acquire failed');
    const isDue = async () => (await store.dueSessions(100)).some((s) => s.session === 'vm:e2');
    await storeUntil(store, isDue, 1_050, 'vm:e2 due');
    const beforeClaim = await store.now();
    expect(await store.claim('vm:e2', a.lease.leaseId, 300)).toBe(true);
    const afterClaim = await store.now();
    // claimed: off the due list until its retry delay has passed (the claimer may still be working)
    expect(await isDue()).toBe(false);
    expect(await store.claim('vm:e2', a.lease.leaseId, 300)).toBe(false);
    // due again at a store time in [claim + 300 ms, claim + 300 ms + 1 s] (a crashed claimer is retried)
    const againAt = await storeUntil(store, isDue, 1_300, 'vm:e2 due again after the retry delay');
    expect(againAt).toBeGreaterThanOrEqual(beforeClaim + 300);
    expect(againAt).toBeLessThanOrEqual(afterClaim + 300 + 1_000);
    expect(await store.claim('vm:e2', a.lease.leaseId, 100)).toBe(true);
    await store.release('vm:e2', a.lease.leaseId);
  });

  it('a renewed lease is no longer due and cannot be claimed', async () => {
    const a = await store.acquire(req({ session: 'vm:e3', keys: ['vm:e3'], ttlMs: 300 }));
    if (!a.ok) throw new Error('acquire failed');
    expect(await store.renew('vm:e3', a.lease.leaseId, 10_000)).toMatchObject({ ok: true });
    // the event: the original expiry passing on the store's clock (polled, bounded), then nothing is due
    await storeClockPast(store, a.lease.expiresAt + 1, 'vm:e3 original expiry');
    expect((await store.dueSessions(100)).map((s) => s.session)).not.toContain('vm:e3');
    expect(await store.claim('vm:e3', a.lease.leaseId, 1_000)).toBe(false);
    await store.release('vm:e3', a.lease.leaseId);
  });

  it('a group takes all its VM keys or none, under one lease and one deadline', async () => {
    const single = await store.acquire(req({ session: 'vm:g2', keys: ['vm:g2'] }));
    if (!single.ok) throw new Error('acquire failed');
    const refused = await store.acquire(req({ session: 'group:x', keys: ['vm:g1', 'vm:g2', 'vm:g3'] }));
    expect(refused).toMatchObject({ ok: false, reason: 'conflict', key: 'vm:g2' });
    expect(await store.getByKey('vm:g1')).toBeUndefined();
    expect(await store.getByKey('vm:g3')).toBeUndefined();
    await store.release('vm:g2', single.lease.leaseId);

    const g = await store.acquire(req({ session: 'group:y', keys: ['vm:g3', 'vm:g1', 'vm:g2'], idempotencyKey: 'grp' }));
    if (!g.ok) throw new Error('group acquire failed');
    expect(g.lease.keys).toEqual(['vm:g1', 'vm:g2', 'vm:g3']);
    // a retry (with a fresh group id, as a new request would carry) finds the same group
    const retry = await store.acquire(req({ session: 'group:z', keys: ['vm:g1', 'vm:g2', 'vm:g3'], idempotencyKey: 'grp' }));
    expect(retry).toMatchObject({ ok: true, reused: true, lease: { session: 'group:y', leaseId: g.lease.leaseId } });
    const member = await store.acquire(req({ session: 'vm:g1', keys: ['vm:g1'], owner: 'bob' }));
    expect(member).toMatchObject({ ok: false, reason: 'conflict', holder: { session: 'group:y' } });
    expect((await store.getByKey('vm:g3'))?.session).toBe('group:y');
    expect(await store.release('group:y', g.lease.leaseId)).toBe(true);
    for (const k of ['vm:g1', 'vm:g2', 'vm:g3']) expect(await store.getByKey(k)).toBeUndefined();
  });

  it('fences strictly increase and respect the caller floor', async () => {
    const fences: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = await store.acquire(req({ session: `vm:f${i}`, keys: [`vm:f${i}`] }));
      if (!a.ok) throw new Error('acquire failed');
      fences.push(a.lease.fence);
    }
    for (let i = 1; i < fences.length; i++) expect(fences[i]).toBeGreaterThan(fences[i - 1]);
    expect(Number.isSafeInteger(fences[4])).toBe(true);
    const floor = fences[4] + 1_000_000_000;
    const hi = await store.acquire(req({ session: 'vm:f9', keys: ['vm:f9'], fenceFloor: floor }));
    expect(hi.ok && hi.lease.fence).toBe(floor + 1);
    expect(store.fenceHighWater).toBeGreaterThanOrEqual(floor + 1);
  });

  it('check tells live, expired, superseded, ended and lost apart', async () => {
    const a = await store.acquire(req({ session: 'vm:k1', keys: ['vm:k1'], ttlMs: 150 }));
    if (!a.ok) throw new Error('acquire failed');
    expect(await store.check('vm:k1', a.lease.leaseId, a.lease.epoch)).toMatchObject({ state: 'live' });
    // expired from its expiry on the store's clock: polled, at a store time in [expiresAt, expiresAt + 1 s]
    const expiredAt = await storeUntil(store, async () => (await store.check('vm:k1', a.lease.leaseId, a.lease.epoch)).state === 'expired', 1_150, 'vm:k1 expired');
    expect(expiredAt).toBeGreaterThanOrEqual(a.lease.expiresAt);
    expect(expiredAt).toBeLessThanOrEqual(a.lease.expiresAt + 1_000);
    await store.release('vm:k1', a.lease.leaseId);
    expect(await store.check('vm:k1', a.lease.leaseId, a.lease.epoch)).toEqual({ state: 'ended' });
    expect(await store.check('vm:k1', a.lease.leaseId, 'some-other-epoch')).toMatchObject({ state: 'lost' });
    const b = await store.acquire(req({ session: 'vm:k1', keys: ['vm:k1'], owner: 'bob' }));
    if (!b.ok) throw new Error('acquire failed');
    expect(await store.check('vm:k1', a.lease.leaseId, a.lease.epoch)).toMatchObject({
      state: 'superseded',
      holder: { leaseId: b.lease.leaseId },
    });
  });

  it('keeps session data and replaces it only under the matching lease', async () => {
    const a = await store.acquire(req({ session: 'vm:d1', keys: ['vm:d1'], data: { vms: ['d1'], mountpoints: ['/data'] } }));
    if (!a.ok) throw new Error('acquire failed');
    expect(a.lease.data).toEqual({ vms: ['d1'], mountpoints: ['/data'] });
    expect(await store.updateData('vm:d1', 'wrong', { frozen: 9 })).toBe(false);
    expect(await store.updateData('vm:d1', a.lease.leaseId, { vms: ['d1'], frozen: 1 })).toBe(true);
    expect((await store.getSession('vm:d1'))?.data).toEqual({ vms: ['d1'], frozen: 1 });
  });

  it('a release with a reason leaves a tombstone: session, endedAt on the store clock, endedBy', async () => {
    const a = await store.acquire(req({ session: 'vm:t1', keys: ['vm:t1'] }));
    if (!a.ok) throw new Error('acquire failed');
    const id = a.lease.leaseId;
    expect(await store.ended(id)).toBeUndefined(); // live: no tombstone
    expect(await store.release('vm:t1', 'not-the-lease', 'deadline')).toBe(false);
    expect(await store.ended('not-the-lease')).toBeUndefined();
    expect(await store.ended(id)).toBeUndefined(); // a refused release writes nothing
    const before = await store.now();
    expect(await store.release('vm:t1', id, 'deadline')).toBe(true);
    const after = await store.now();
    const t = await store.ended(id);
    expect(t).toEqual({ leaseId: id, session: 'vm:t1', endedAt: expect.any(Number), endedBy: 'deadline' });
    expect(t?.endedAt).toBeGreaterThanOrEqual(before);
    expect(t?.endedAt).toBeLessThanOrEqual(after);
    // ending it again (a late second thaw) changes nothing: the first ending is what happened
    expect(await store.release('vm:t1', id, 'forced')).toBe(false);
    expect(await store.ended(id)).toEqual(t);
    // the VM is free again, and a new lease on it has no tombstone
    const b = await store.acquire(req({ session: 'vm:t1', keys: ['vm:t1'], owner: 'bob' }));
    if (!b.ok) throw new Error('acquire failed');
    expect(await store.ended(b.lease.leaseId)).toBeUndefined();
    // a lease its holder released itself leaves none
    expect(await store.release('vm:t1', b.lease.leaseId)).toBe(true);
    expect(await store.ended(b.lease.leaseId)).toBeUndefined();
    expect(await store.ended(randomUUID())).toBeUndefined();
  });

  it('tombstones name the session (a group too) and every reason', async () => {
    const g = await store.acquire(req({ session: 'group:t', keys: ['vm:t2', 'vm:t3'] }));
    const s = await store.acquire(req({ session: 'vm:t4', keys: ['vm:t4'] }));
    const x = await store.acquire(req({ session: 'vm:t5', keys: ['vm:t5'] }));
    if (!g.ok || !s.ok || !x.ok) throw new Error('acquire failed');
    expect(await store.release('group:t', g.lease.leaseId, 'forced')).toBe(true);
    expect(await store.release('vm:t4', s.lease.leaseId, 'shutdown')).toBe(true);
    expect(await store.release('vm:t5', x.lease.leaseId, 'agent-restart')).toBe(true);
    expect(await store.ended(g.lease.leaseId)).toMatchObject({ session: 'group:t', endedBy: 'forced' });
    expect(await store.ended(s.lease.leaseId)).toMatchObject({ session: 'vm:t4', endedBy: 'shutdown' });
    expect(await store.ended(x.lease.leaseId)).toMatchObject({ session: 'vm:t5', endedBy: 'agent-restart' });
    for (const k of ['vm:t2', 'vm:t3', 'vm:t4', 'vm:t5']) expect(await store.getByKey(k)).toBeUndefined();
  });

  it('a tombstone is forgotten after its retention', async () => {
    const short = await make({ endedRetentionMs: 300 });
    const a = await short.acquire(req({ session: 'vm:t6', keys: ['vm:t6'] }));
    if (!a.ok) throw new Error('acquire failed');
    const before = await short.now();
    expect(await short.release('vm:t6', a.lease.leaseId, 'deadline')).toBe(true);
    const after = await short.now();
    expect((await short.ended(a.lease.leaseId))?.endedBy).toBe('deadline');
    // forgotten from the end of its retention: polled, at a store time in [release + 300 ms, release + 300 ms + 1 s]
    const goneAt = await storeUntil(short, async () => (await short.ended(a.lease.leaseId)) === undefined, 1_300, 'vm:t6 tombstone forgotten');
    expect(goneAt).toBeGreaterThanOrEqual(before + 300);
    expect(goneAt).toBeLessThanOrEqual(after + 300 + 1_000);
  });

  it('stores API-registered VMs', async () => {
    const rec = { name: 'web-1', endpoint: { type: 'unix' as const, path: '/run/qga/web-1.sock' }, labels: { env: 'prod' } };
    expect(await store.putVm(rec)).toBe(true);
    expect(await store.putVm({ ...rec, endpoint: { type: 'tcp', host: 'h', port: 1 } })).toBe(false);
    expect(await store.getVm('web-1')).toEqual(rec);
    expect(await store.putVm({ name: 'db-1', endpoint: { type: 'tcp', host: '10.0.0.5', port: 4444 } })).toBe(true);
    expect((await store.listVms()).map((v) => v.name)).toEqual(['db-1', 'web-1']);
    expect(await store.deleteVm('web-1')).toBe(true);
    expect(await store.deleteVm('web-1')).toBe(false);
    expect(await store.getVm('web-1')).toBeUndefined();
  });

  it('reports health and its clock', async () => {
    const h = await store.health();
    expect(h.ok).toBe(true);
    expect(typeof h.epoch).toBe('string');
    expect(Math.abs((await store.now()) - Date.now())).toBeLessThan(60_000);
  });
});

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
