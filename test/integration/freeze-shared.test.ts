/**
 * Freeze sessions across gateway "processes" (rigs sharing one real redis-server) and across Redis
 * failures: the deadline sweep after the freezer died, start-up reconciliation, a stale lease, Redis
 * down mid-session, Redis restarted empty. Measured times are printed and only loosely bounded
 * (the sweep interval plus slack for a loaded machine).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { freshStateFile } from '../helpers/app.js';
import { listFreezes } from '../../src/http/routes/freezes.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { ADMIN, BACKUP, OTHER, agentCommands, rig, simFleet, sleep, waitFor, type Rig, type SimFleet, rejection } from './freeze-fixture.js';

let redis: TestRedis | undefined;
let fleet: SimFleet | undefined;
const rigs: Rig[] = [];

afterEach(async () => {
  for (const r of rigs.splice(0)) await r.close();
  await fleet?.close();
  fleet = undefined;
  await redis?.stop();
  redis = undefined;
});

async function shared(names: string[], freeze: Record<string, number>[] = [{}, {}]): Promise<{ f: SimFleet; r: TestRedis; a: Rig; b: Rig; prefix: string }> {
  redis = await startRedis();
  fleet = await simFleet(names);
  const prefix = `s${randomUUID().slice(0, 8)}:`;
  const a = await rig(fleet, { redisUrl: redis.url, keyPrefix: prefix, freeze: freeze[0] });
  const b = await rig(fleet, { redisUrl: redis.url, keyPrefix: prefix, freeze: freeze[1] });
  rigs.push(a, b);
  return { f: fleet, r: redis, a, b, prefix };
}

/** A Redis, a fleet, and gateways on them: with `stateFile`, one keeping its journal of held leases there. */
async function journaled(names: string[]): Promise<{ f: SimFleet; r: TestRedis; stateFile: string; gateway: (stateFile?: string, freeze?: Record<string, number>) => Promise<Rig> }> {
  redis = await startRedis();
  fleet = await simFleet(names);
  const r = redis;
  const f = fleet;
  const prefix = `j${randomUUID().slice(0, 8)}:`;
  const gateway = async (stateFile?: string, freeze: Record<string, number> = {}): Promise<Rig> => {
    const g = await rig(f, { redisUrl: r.url, keyPrefix: prefix, freeze: { ...freeze, ...(stateFile ? { stateFile } : {}) } });
    rigs.push(g);
    return g;
  };
  return { f, r, stateFile: freshStateFile(), gateway };
}

describe('auto-thaw when the freezing process is gone', () => {
  it('another process sharing Redis thaws by the deadline', async () => {
    const sweepIntervalMs = 500;
    const { f, a, b } = await shared(['vm1'], [{ sweepIntervalMs: 60_000 }, { sweepIntervalMs }]);
    const lease = await a.freeze.freeze('vm1', { ttlSeconds: 1 }, BACKUP);
    await a.crash(); // no local timer any more, the lease stays in Redis
    await waitFor(() => !f.vm.vm1.state.frozen, 10_000, 'deadline thaw by the other process');
    const overshoot = Date.now() - Date.parse(lease.expiresAt);
    process.stdout.write(`[freeze-shared] frozen past lease expiry after the freezer died: ${overshoot} ms (sweep interval ${sweepIntervalMs} ms)\n`);
    expect(overshoot).toBeGreaterThanOrEqual(0);
    // at most one sweep interval past the lease plus the thaw's round trip; 1.5 s of slack
    expect(overshoot).toBeLessThanOrEqual(sweepIntervalMs + 1_500);
    await waitFor(async () => (await b.freeze.status('vm1', BACKUP)).lease === null, 5_000, 'lease released');
    // the dead process's lease is stale now: a thaw with it is refused as LEASE_EXPIRED (ended by
    // its deadline, after its expiry) and sends nothing
    const n = agentCommands(f.vm.vm1).length;
    const stale = await rejection(b.freeze.thaw('vm1', { leaseId: lease.leaseId }, BACKUP));
    expect(stale.code).toBe('LEASE_EXPIRED');
    expect(stale.extra?.endedBy).toBe('deadline');
    expect(Date.parse(String(stale.extra?.endedAt))).toBeGreaterThanOrEqual(Date.parse(lease.expiresAt));
    expect(agentCommands(f.vm.vm1).length).toBe(n);
  });

  it('a restarted gateway reconciles at start-up: expired leases are thawed before the first sweep', async () => {
    redis = await startRedis();
    fleet = await simFleet(['vm1', 'vm2']);
    const prefix = `r${randomUUID().slice(0, 8)}:`;
    const a = await rig(fleet, { redisUrl: redis.url, keyPrefix: prefix, freeze: { sweepIntervalMs: 60_000 } });
    rigs.push(a);
    await a.freeze.freeze('vm1', { ttlSeconds: 1 }, BACKUP);
    const live = await a.freeze.freeze('vm2', { ttlSeconds: 30 }, BACKUP);
    await a.crash();
    await sleep(1_200);
    expect(fleet.vm.vm1.state.frozen).toBe(true); // nobody watched it
    const b = await rig(fleet, { redisUrl: redis.url, keyPrefix: prefix, freeze: { sweepIntervalMs: 60_000 } });
    rigs.push(b);
    // start() has run the reconciliation; no sweep tick can have happened yet
    await waitFor(() => !fleet!.vm.vm1.state.frozen, 5_000, 'reconciled thaw');
    expect(fleet.vm.vm2.state.frozen).toBe(true); // its lease is live: left alone
    expect((await b.freeze.status('vm2', BACKUP)).lease?.leaseId).toBe(live.leaseId);
  });

  it('a new freeze on a VM whose expired lease still awaits its thaw thaws it first', async () => {
    const { f, a, b } = await shared(['vm1'], [{ sweepIntervalMs: 60_000 }, { sweepIntervalMs: 60_000 }]);
    const old = await a.freeze.freeze('vm1', { ttlSeconds: 1 }, BACKUP);
    await a.crash();
    await sleep(1_200);
    const t0 = Date.now();
    const fresh = await b.freeze.freeze('vm1', { ttlSeconds: 30 }, BACKUP);
    expect(fresh.fence).toBeGreaterThan(old.fence);
    expect(f.vm.vm1.state.frozen).toBe(true);
    expect(agentCommands(f.vm.vm1, t0)).toEqual(['guest-fsfreeze-thaw', 'guest-fsfreeze-freeze']);
  });
});

describe('Redis failures', () => {
  it('Redis stopped mid-session: freeze refused with STORE_UNAVAILABLE, thaw and auto-thaw still work', async () => {
    const { f, r, a, b } = await shared(['vm1', 'vm2', 'vm3'], [{ sweepIntervalMs: 200 }, { sweepIntervalMs: 200 }]);
    const l1 = await a.freeze.freeze('vm1', { ttlSeconds: 60 }, BACKUP);
    const l2 = await a.freeze.freeze('vm2', { ttlSeconds: 60 }, BACKUP);
    await a.freeze.freeze('vm3', { ttlSeconds: 1 }, BACKUP);
    await r.kill();

    const err = await rejection(b.freeze.freeze('vm1', {}, BACKUP));
    expect(err.code).toBe('STORE_UNAVAILABLE');
    expect(err.status).toBe(503);
    const t0 = Date.now();
    expect((await rejection(a.freeze.freeze('vm3', {}, BACKUP))).code).toBe('STORE_UNAVAILABLE');
    expect(agentCommands(f.vm.vm3, t0)).toEqual([]);

    // the process that froze knows its lease: a wrong lease id is refused, as with the store up (h10 F9)
    const wrong = await rejection(a.freeze.thaw('vm1', { leaseId: randomUUID() }, OTHER));
    expect(wrong.code).toBe('LEASE_CONFLICT');
    expect(f.vm.vm1.state.frozen).toBe(true);
    expect(await a.freeze.thaw('vm1', { leaseId: l1.leaseId }, BACKUP)).toMatchObject({ thawed: l1.frozen, leaseCheck: 'local' });
    expect(f.vm.vm1.state.frozen).toBe(false);
    // another process cannot check the lease, and thaws anyway
    expect(await b.freeze.thaw('vm2', { leaseId: l2.leaseId }, BACKUP)).toMatchObject({ thawed: l2.frozen, leaseCheck: 'unverified', consistent: false });
    expect(f.vm.vm2.state.frozen).toBe(false);
    // the local timer thaws at expiry without the store
    await waitFor(() => !f.vm.vm3.state.frozen, 5_000, 'local auto-thaw with Redis down');
    expect((await b.freeze.status('vm3', BACKUP)).leaseStore).toBe('unavailable');
  });

  it('Redis paused at the deadline: the local timer thaws; a new freeze once Redis answers releases that lease and does not thaw the guest again', async () => {
    const { f, r, a } = await shared(['p1'], [{ sweepIntervalMs: 60_000 }, { sweepIntervalMs: 60_000 }]);
    await a.freeze.freeze('p1', { ttlSeconds: 1 }, BACKUP);
    r.pause();
    await waitFor(() => !f.vm.p1.state.frozen, 8_000, 'the local thaw with Redis paused');
    r.resume();
    await waitFor(async () => (await a.services.store.health()).ok, 5_000, 'Redis answering again');
    // before any sweep (60 s) retries the release: the new freeze finds the old lease in Redis
    const again = await a.freeze.freeze('p1', { ttlSeconds: 30 }, OTHER);
    expect(f.vm.p1.state.frozen).toBe(true);
    // one thaw for the first lease: the new freeze's clean-up of the expired lease finds that thaw
    // done here (h10 F8 saw a second thaw in a cluster; this in-process form never sent one)
    expect(agentCommands(f.vm.p1).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(1);
    await a.freeze.thaw('p1', { leaseId: again.leaseId }, OTHER);
  });

  it('Redis stopped: a member of a group this process holds is not thawed alone through the single route, whatever lease id', async () => {
    const { f, r, a } = await shared(['m1', 'm2']);
    const grp = await a.freeze.groups.create({ vms: ['m1', 'm2'], ttlSeconds: 60 }, BACKUP);
    await r.kill();
    for (const leaseId of [grp.leaseId, randomUUID()]) {
      expect((await rejection(a.freeze.thaw('m1', { leaseId }, BACKUP))).code).toBe('LEASE_CONFLICT');
    }
    expect([f.vm.m1.state.frozen, f.vm.m2.state.frozen]).toEqual([true, true]);
    // the group's own thaw goes through (its lease, known here)
    const t = await a.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP);
    expect(t.vms.map((v) => v.vm).sort()).toEqual(['m1', 'm2']);
    expect([f.vm.m1.state.frozen, f.vm.m2.state.frozen]).toEqual([false, false]);
  });

  it("a lease its holder thawed through another gateway is not shown as lost by the one that froze (its timer stays until the deadline)", async () => {
    const { a, b } = await shared(['vm1']);
    const l = await a.freeze.freeze('vm1', { ttlSeconds: 60 }, BACKUP);
    await b.freeze.thaw('vm1', { leaseId: l.leaseId }, BACKUP);
    expect(await a.freeze.status('vm1', BACKUP)).toMatchObject({ status: 'thawed', lease: null, leaseStore: 'ok' });
    expect((await listFreezes(a.services as never, BACKUP)).map((e) => e.vm)).toEqual([]);
  });

  it('Redis restarted empty: fences never go backwards and the freezer still thaws what it froze', async () => {
    const { f, r, a, b } = await shared(['vm1', 'vm2'], [{ sweepIntervalMs: 200 }, { sweepIntervalMs: 200 }]);
    const l1 = await a.freeze.freeze('vm1', { ttlSeconds: 3 }, BACKUP);
    await r.restart({ empty: true });
    await waitFor(async () => (await a.services.store.health()).ok, 10_000, 'redis back');
    const l2 = await a.freeze.freeze('vm2', { ttlSeconds: 30 }, BACKUP);
    expect(l2.fence).toBeGreaterThan(l1.fence);
    // vm1's lease vanished with the data; its freezer's local timer still thaws it, and its views
    // say so: the status shows that lease as the store's lost one, the list as held here only (h10 L6)
    expect(f.vm.vm1.state.frozen).toBe(true);
    const st = await a.freeze.status('vm1', BACKUP);
    expect(st).toMatchObject({ status: 'frozen', leaseStore: 'lost', lease: { leaseId: l1.leaseId } });
    expect(await a.freeze.status('vm2', BACKUP)).toMatchObject({ leaseStore: 'ok', lease: { leaseId: l2.leaseId } });
    // the other gateway holds nothing of it: no lease, the store's answer
    expect(await b.freeze.status('vm1', BACKUP)).toMatchObject({ leaseStore: 'ok', lease: null });
    const rows = (await listFreezes(a.services as never, BACKUP)).map((e) => [e.vm, e.leaseId, e.heldHereOnly ?? false]);
    expect(rows.sort()).toEqual([['vm1', l1.leaseId, true], ['vm2', l2.leaseId, false]]);
    await waitFor(() => !f.vm.vm1.state.frozen, 5_000, 'thaw of a lease lost with the Redis data');
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(l1.expiresAt));
  });

  it('Redis restarted empty while the gateway that held a lease was down: restarted, it thaws that lease at its deadline (its journal of held leases), once', async () => {
    const { f, r: redisServer, gateway, stateFile } = await journaled(['j1', 'j2']);
    const a = await gateway(stateFile);
    const l = await a.freeze.freeze('j1', { ttlSeconds: 4 }, BACKUP);
    // j2 frozen and thawed by its holder before the crash: not in the journal any more
    const l2 = await a.freeze.freeze('j2', { ttlSeconds: 4 }, BACKUP);
    await a.freeze.thaw('j2', { leaseId: l2.leaseId }, BACKUP);
    await sleep(50);
    await a.crash();
    await redisServer.restart({ empty: true });
    // the lease is nowhere in Redis; before the journal nobody would ever thaw j1 (h10 F1)
    await gateway(stateFile);
    expect(f.vm.j1.state.frozen).toBe(true);
    await waitFor(() => !f.vm.j1.state.frozen, 10_000, 'the thaw of the journaled lease');
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(l.expiresAt));
    await sleep(600);
    expect(agentCommands(f.vm.j1).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(1);
    expect(agentCommands(f.vm.j2).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(1);
  });

  it('a gateway restarted on its journal re-arms the timers of the leases it held that Redis still holds: thawed at the deadline, not at the next sweep (h10 F6)', async () => {
    const { f, gateway, stateFile } = await journaled(['t1', 't2']);
    // no sweep after the start-up one within this test: only a re-armed timer can thaw at the deadline
    const slow = { sweepIntervalMs: 60_000 };
    const a = await gateway(stateFile, slow);
    const mine = await a.freeze.freeze('t1', { ttlSeconds: 3 }, BACKUP);
    // t2 frozen by another gateway, not in this journal: its timer stays with the process that froze it
    const other = await gateway(undefined, slow);
    const theirs = await other.freeze.freeze('t2', { ttlSeconds: 3 }, OTHER);
    await sleep(50);
    await a.crash();
    await other.crash();
    const b = await gateway(stateFile, slow);
    expect(f.vm.t1.state.frozen).toBe(true);
    await waitFor(() => !f.vm.t1.state.frozen, 8_000, 'the deadline thaw of the re-armed lease');
    const late = Date.now() - Date.parse(mine.expiresAt);
    process.stdout.write(`[freeze-shared] restarted gateway: journaled lease thawed ${late} ms past its deadline (sweep interval 60 s)\n`);
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThan(3_000);
    // the lease ended by its deadline, once
    const ended = await rejection(b.freeze.thaw('t1', { leaseId: mine.leaseId }, BACKUP));
    expect(ended.code).toBe('LEASE_EXPIRED');
    expect(agentCommands(f.vm.t1).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(1);
    // the other gateway's lease is not this process's: left to the sweep
    await sleep(Math.max(0, Date.parse(theirs.expiresAt) + 1_000 - Date.now()));
    expect(f.vm.t2.state.frozen).toBe(true);
    f.vm.t2.state.frozen = false;
  });

  it('a journal of held leases thaws nothing whose lease is past its hard deadline or whose VM another lease holds now', async () => {
    const { f, gateway, stateFile } = await journaled(['s1', 's2']);
    // s2 frozen now under a live lease of another gateway
    const other = await gateway();
    await other.freeze.freeze('s2', { ttlSeconds: 60 }, OTHER);
    // s1 frozen by some tool, no lease
    f.vm.s1.state.frozen = true;
    const now = Date.now();
    const stale = (vm: string, hardDeadline: number) => ({ session: `vm:${vm}`, keys: [`vm:${vm}`], leaseId: randomUUID(), owner: 'backup', fence: 1, createdAt: now - 7_200_000, expiresAt: now - 3_600_000, hardDeadline, epoch: 'old', data: { vms: [vm] } });
    mkdirSync(dirname(stateFile), { recursive: true });
    writeFileSync(`${stateFile}.held`, JSON.stringify({ version: 1, leases: [stale('s1', now - 1_000), stale('s2', now + 600_000)] }));
    await gateway(stateFile);
    await sleep(1_000);
    expect(agentCommands(f.vm.s1).filter((c) => c === 'guest-fsfreeze-thaw')).toEqual([]);
    expect(agentCommands(f.vm.s2).filter((c) => c === 'guest-fsfreeze-thaw')).toEqual([]);
    expect([f.vm.s1.state.frozen, f.vm.s2.state.frozen]).toEqual([true, true]);
    f.vm.s1.state.frozen = false;
  });

  it("Redis restarted empty: a group's holder thaws it through the gateway that took it (its local lease); the other one says the store may have lost it", async () => {
    const { f, r, a, b } = await shared(['g1', 'g2']);
    const grp = await a.freeze.groups.create({ vms: ['g1', 'g2'], ttlSeconds: 60 }, BACKUP);
    await r.restart({ empty: true });
    await waitFor(async () => (await a.services.store.health()).ok && (await b.services.store.health()).ok, 10_000, 'redis back');
    // the other gateway has no record of it anywhere: 404, saying the store may have lost it (it said "thawed")
    const elsewhere = await rejection(b.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP));
    expect(elsewhere.code).toBe('NOT_FOUND');
    expect(elsewhere.message).toMatch(/or the lease store lost it/);
    expect([f.vm.g1.state.frozen, f.vm.g2.state.frozen]).toEqual([true, true]);
    // a wrong lease is still refused where the group is known
    expect((await rejection(a.freeze.groups.delete(grp.id, { leaseId: randomUUID() }, BACKUP))).code).toBe('NOT_FOUND');
    // the holder's DELETE through the gateway that took it: thawed now, not at the deadline (h10 F5)
    const t = await a.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP);
    expect(t.consistent).toBe(true);
    expect([f.vm.g1.state.frozen, f.vm.g2.state.frozen]).toEqual([false, false]);
    expect(agentCommands(f.vm.g1).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(1);
  });
});

describe('a thaw that waited for the socket while its lease ended elsewhere (two processes, one agent)', () => {
  // B holds the VM's one socket (a slow command); A's thaw, checked against the store, waits for it.
  // Meanwhile through B the lease is ended (an admin's forced thaw) and another caller freezes the
  // VM: A's thaw must not undo that freeze when it finally reaches the agent (checked again at the wire)
  async function slowSocketOnB(b: Rig, f: SimFleet, vm: string): Promise<{ busy: Promise<unknown> }> {
    await sleep(300); // the sockets of both go idle and are let go (idleReleaseMs 100)
    f.vm[vm].setFault({ command: 'guest-fsfreeze-status', kind: 'delay', ms: 1_500, times: 1 });
    const busy = b.services.agent.call(vm, 'guest-fsfreeze-status').catch((e: unknown) => e);
    await waitFor(() => agentCommands(f.vm[vm]).filter((c) => c === 'guest-fsfreeze-status').length > 0, 3_000, 'B holding the socket');
    // in an object: an async function returning the promise itself would wait for it
    return { busy };
  }

  it("a single VM: the holder's thaw through A is refused at the wire (409), the other caller's freeze stands", async () => {
    const { f, a, b } = await shared(['x1']);
    const lease = await a.freeze.freeze('x1', { ttlSeconds: 60 }, BACKUP);
    const { busy } = await slowSocketOnB(b, f, 'x1');
    const holderThaw = a.freeze.thaw('x1', { leaseId: lease.leaseId }, BACKUP).then((r) => ({ ok: r }), (e: unknown) => ({ err: e }));
    await sleep(150); // A has checked the lease and waits for the socket
    expect((await b.freeze.thaw('x1', { force: true }, ADMIN)).forced).toBe(true);
    const other = await b.freeze.freeze('x1', { ttlSeconds: 60 }, OTHER);
    await busy;
    const held = await holderThaw;
    expect('err' in held && (held.err as { code?: string }).code).toMatch(/^LEASE_(EXPIRED|CONFLICT)$/);
    expect(f.vm.x1.state.frozen).toBe(true);
    expect(agentCommands(f.vm.x1).filter((c) => c !== 'guest-fsfreeze-status')).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-fsfreeze-freeze']);
    await b.freeze.thaw('x1', { leaseId: other.leaseId }, OTHER);
  }, 20_000);

  it("a group member let go by a forced thaw: the group's thaw through A leaves the other caller's freeze alone", async () => {
    const { f, a, b } = await shared(['g1', 'g2']);
    const grp = await a.freeze.groups.create({ vms: ['g1', 'g2'], ttlSeconds: 60 }, BACKUP);
    const { busy } = await slowSocketOnB(b, f, 'g1');
    const groupThaw = a.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP);
    await sleep(150);
    expect((await b.freeze.thaw('g1', { force: true }, ADMIN)).forced).toBe(true);
    const other = await b.freeze.freeze('g1', { ttlSeconds: 60 }, OTHER);
    await busy;
    const t = await groupThaw;
    expect(t.vms.find((v) => v.vm === 'g1')).toMatchObject({ skipped: true, reason: 'NOT_THAWED' });
    expect(t.vms.find((v) => v.vm === 'g2')).toMatchObject({ consistent: true });
    expect(f.vm.g1.state.frozen).toBe(true);
    expect(f.vm.g2.state.frozen).toBe(false);
    expect(agentCommands(f.vm.g1).filter((c) => c !== 'guest-fsfreeze-status')).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-fsfreeze-freeze']);
    await b.freeze.thaw('g1', { leaseId: other.leaseId }, OTHER);
  }, 20_000);
});
