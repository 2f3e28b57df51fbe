/**
 * The LeaseStore contract's cases, as one function every store implementation runs through:
 * store-contract.test.ts runs them on the in-memory store and a single Redis, store-topologies
 * .test.ts on Redis Sentinel and on a 3-master Redis Cluster. New contract cases go here.
 * Expiry is exercised with real short TTLs on the store's own clock.
 */
import { describe, expect, it, beforeAll } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { AcquireRequest, LeaseStore } from '../../src/store/types.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Options both stores take. */
export interface StoreOptions {
  endedRetentionMs?: number;
}

/** Makes a fresh store of the implementation under test (called once per contract, and by a case that needs its own options). */
export type MakeStore = (opts?: StoreOptions) => Promise<LeaseStore>;

/**
 * Poll the store (every 10 ms) until `cond` holds; resolves with the store's clock at that moment.
 * Bounded: fails after `boundMs`. Expiry waits on the store's own clock, never on a fixed sleep.
 */
export async function storeUntil(store: LeaseStore, cond: () => Promise<boolean>, boundMs: number, what: string): Promise<number> {
  const end = Date.now() + boundMs;
  for (;;) {
    if (await cond()) return store.now();
    if (Date.now() > end) throw new Error(`store: ${what} not within ${boundMs} ms`);
    await sleep(10);
  }
}

/** The store's clock has reached `at` (ms); polled, bounded by `at` + 1 s on this process's clock. */
export async function storeClockPast(store: LeaseStore, at: number, what: string): Promise<number> {
  return storeUntil(store, async () => (await store.now()) >= at, Math.max(0, at - (await store.now())) + 1_000, what);
}

export function req(over: Partial<AcquireRequest> = {}): AcquireRequest {
  return { session: 'vm:a', keys: ['vm:a'], owner: 'alice', ttlMs: 10_000, hardCapMs: 60_000, ...over };
}

/** The contract's cases under `describe('LeaseStore contract: <name>')`, on stores made by `make`. */
export function leaseStoreContract(name: string, make: MakeStore): void {
  describe(`LeaseStore contract: ${name}`, () => {
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

    it("a release may say the lease ended earlier than now (its deadline): the tombstone's endedAt is the earlier time, never a later one", async () => {
      const g = await store.acquire(req({ session: 'group:late', keys: ['vm:l1', 'vm:l2'] }));
      if (!g.ok) throw new Error('acquire failed');
      // the last member's thaw got through long after the deadline (its node was away): a deadline
      // 5 s ago, on the store's clock
      const deadline = (await store.now()) - 5_000;
      expect(await store.release('group:late', g.lease.leaseId, 'deadline', deadline)).toBe(true);
      expect((await store.ended(g.lease.leaseId))?.endedAt).toBe(Math.round(deadline));
      // a bound later than now is not taken: endedAt is now
      const v = await store.acquire(req({ session: 'vm:l3', keys: ['vm:l3'] }));
      if (!v.ok) throw new Error('acquire failed');
      const before = await store.now();
      expect(await store.release('vm:l3', v.lease.leaseId, 'forced', before + 3_600_000)).toBe(true);
      const t = await store.ended(v.lease.leaseId);
      expect(t?.endedAt).toBeGreaterThanOrEqual(before);
      expect(t?.endedAt).toBeLessThan(before + 60_000);
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

    it('a group whose last VM is held takes none: the VMs before it stay free, no session is left, the idempotency key is not used up', async () => {
      const keys = ['vm:pa1', 'vm:pa2', 'vm:pa3'];
      const held = await store.acquire(req({ session: 'vm:pa3', keys: ['vm:pa3'], owner: 'bob', ttlMs: 5_000 }));
      if (!held.ok) throw new Error('acquire failed');
      const r = await store.acquire(req({ session: 'group:pa', keys, idempotencyKey: 'pa-1' }));
      expect(r).toEqual({
        ok: false,
        reason: 'conflict',
        key: 'vm:pa3',
        pendingThaw: false,
        holder: { session: 'vm:pa3', owner: 'bob', leaseId: held.lease.leaseId, expiresAt: held.lease.expiresAt, fence: held.lease.fence },
      });
      for (const k of keys.slice(0, 2)) expect(await store.getByKey(k)).toBeUndefined();
      expect(await store.getSession('group:pa')).toBeUndefined();
      expect((await store.listSessions()).map((s) => s.session)).not.toContain('group:pa');
      // a VM the group had taken before the conflict is free for anyone at once
      const other = await store.acquire(req({ session: 'vm:pa1', keys: ['vm:pa1'], owner: 'carol' }));
      expect(other).toMatchObject({ ok: true, reused: false });
      if (other.ok) await store.release('vm:pa1', other.lease.leaseId);
      await store.release('vm:pa3', held.lease.leaseId);
      // the same request again (same idempotency key) now succeeds, and its retry gets that lease
      const g = await store.acquire(req({ session: 'group:pa2', keys, idempotencyKey: 'pa-1' }));
      if (!g.ok) throw new Error(`group acquire failed: ${JSON.stringify(g)}`);
      expect(await store.acquire(req({ session: 'group:pa3', keys, idempotencyKey: 'pa-1' }))).toMatchObject({ ok: true, reused: true, lease: { leaseId: g.lease.leaseId } });
      expect(await store.release('group:pa2', g.lease.leaseId)).toBe(true);
    });

    it('each VM of a group is fenced by the group lease: check is live on every member, superseded for another lease, ended after release', async () => {
      const keys = ['vm:gf1', 'vm:gf2', 'vm:gf3'];
      const before = await store.acquire(req({ session: 'vm:gf0', keys: ['vm:gf0'] }));
      if (!before.ok) throw new Error('acquire failed');
      const g = await store.acquire(req({ session: 'group:gf', keys }));
      if (!g.ok) throw new Error('group acquire failed');
      expect(g.lease.fence).toBeGreaterThan(before.lease.fence);
      for (const k of keys) {
        expect(await store.check(k, g.lease.leaseId, g.lease.epoch)).toMatchObject({ state: 'live', lease: { session: 'group:gf', leaseId: g.lease.leaseId, fence: g.lease.fence } });
        expect(await store.check(k, before.lease.leaseId, before.lease.epoch)).toMatchObject({ state: 'superseded', holder: { leaseId: g.lease.leaseId } });
      }
      expect((await store.listSessions()).find((s) => s.session === 'group:gf')?.keys).toEqual(keys);
      expect(await store.updateData('group:gf', g.lease.leaseId, { vms: ['gf1', 'gf2', 'gf3'] })).toBe(true);
      expect((await store.getByKey('vm:gf2'))?.data).toEqual({ vms: ['gf1', 'gf2', 'gf3'] });
      expect(await store.release('group:gf', g.lease.leaseId)).toBe(true);
      for (const k of keys) expect(await store.check(k, g.lease.leaseId, g.lease.epoch)).toEqual({ state: 'ended' });
      const next = await store.acquire(req({ session: 'vm:gf2', keys: ['vm:gf2'], owner: 'bob' }));
      expect(next.ok && next.lease.fence).toBeGreaterThan(g.lease.fence);
      if (next.ok) await store.release('vm:gf2', next.lease.leaseId);
      await store.release('vm:gf0', before.lease.leaseId);
    });

    it('a group lets thawed members go and keeps the others: those are free at once, the rest stay held until release', async () => {
      const keys = ['vm:gm1', 'vm:gm2', 'vm:gm3'];
      const g = await store.acquire(req({ session: 'group:gm', keys, ttlMs: 300 }));
      if (!g.ok) throw new Error('group acquire failed');
      // refused: another lease's id, a session that is not the group, every key at once
      expect(await store.releaseMembers('group:gm', randomUUID(), ['vm:gm1'])).toBe(false);
      expect(await store.releaseMembers('group:nope', g.lease.leaseId, ['vm:gm1'])).toBe(false);
      expect(await store.releaseMembers('group:gm', g.lease.leaseId, keys)).toBe(false);
      expect((await store.getByKey('vm:gm1'))?.leaseId).toBe(g.lease.leaseId);
      // expired (its thaw due, one member's failed): the thawed ones go, the group keeps the rest
      await storeClockPast(store, g.lease.expiresAt, 'the group lease to expire');
      expect(await store.releaseMembers('group:gm', g.lease.leaseId, ['vm:gm1', 'vm:gm3', 'vm:other'])).toBe(2);
      expect(await store.check('vm:gm1', g.lease.leaseId, g.lease.epoch)).toEqual({ state: 'ended' });
      expect(await store.check('vm:gm2', g.lease.leaseId, g.lease.epoch)).toMatchObject({ state: 'expired' });
      expect(await store.getByKey('vm:gm1')).toBeUndefined();
      expect((await store.getSession('group:gm'))?.keys).toEqual(['vm:gm2']);
      expect((await store.listSessions()).find((s) => s.session === 'group:gm')?.keys).toEqual(['vm:gm2']);
      // a member let go can be frozen again at once; the one kept is still refused (its thaw pending)
      const again = await store.acquire(req({ session: 'vm:gm1', keys: ['vm:gm1'], owner: 'bob' }));
      expect(again.ok && again.lease.fence).toBeGreaterThan(g.lease.fence);
      expect(await store.acquire(req({ session: 'vm:gm2', keys: ['vm:gm2'], owner: 'bob' }))).toMatchObject({ ok: false, reason: 'conflict', pendingThaw: true });
      // asked again (a retry of the group's thaw): nothing changes (none let go now), and the new holder keeps its VM
      expect(await store.releaseMembers('group:gm', g.lease.leaseId, ['vm:gm1', 'vm:gm3'])).toBe(0);
      expect(await store.check('vm:gm1', g.lease.leaseId, g.lease.epoch)).toMatchObject({ state: 'superseded' });
      if (again.ok) expect((await store.getByKey('vm:gm1'))?.leaseId).toBe(again.lease.leaseId);
      // the group's release ends the rest and leaves the member another lease took alone
      expect(await store.release('group:gm', g.lease.leaseId)).toBe(true);
      expect(await store.getByKey('vm:gm2')).toBeUndefined();
      if (again.ok) {
        expect((await store.getByKey('vm:gm1'))?.leaseId).toBe(again.lease.leaseId);
        await store.release('vm:gm1', again.lease.leaseId);
      }
    });

    it('a retry of a group (same Idempotency-Key, same VMs) after a member was let go finds its lease; other VMs under that key are still refused', async () => {
      const keys = ['vm:gi1', 'vm:gi2', 'vm:gi3'];
      const g = await store.acquire(req({ session: 'group:gi', keys, idempotencyKey: 'gi-1' }));
      if (!g.ok) throw new Error('group acquire failed');
      expect(await store.releaseMembers('group:gi', g.lease.leaseId, ['vm:gi2'])).toBe(1);
      // the retry draws a new session id, as a retried POST /v1/freeze-groups does; the VMs in another order
      const retry = await store.acquire(req({ session: 'group:gi-retry', keys: ['vm:gi3', 'vm:gi2', 'vm:gi1'], idempotencyKey: 'gi-1' }));
      expect(retry).toMatchObject({ ok: true, reused: true, lease: { leaseId: g.lease.leaseId, session: 'group:gi', keys: ['vm:gi1', 'vm:gi3'] } });
      // the VMs the group holds now are not the request: refused, as any other set
      for (const other of [['vm:gi1', 'vm:gi3'], ['vm:gi1', 'vm:gi2', 'vm:gi3', 'vm:gi4']]) {
        expect(await store.acquire(req({ session: 'group:gi-other', keys: other, idempotencyKey: 'gi-1' }))).toMatchObject({ ok: false, reason: 'idempotency-key-reused', leaseId: g.lease.leaseId });
      }
      expect(await store.release('group:gi', g.lease.leaseId)).toBe(true);
    });
  });
}
