/**
 * Freeze groups on simulated agents, both stores: all or nothing, one lease and one deadline,
 * per-VM reports.
 */
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { groupKey, vmKey } from '../../src/store/types.js';
import { listFreezes } from '../../src/http/routes/freezes.js';
import { ADMIN, BACKUP, OTHER, agentCommands, rig, simFleet, waitFor, type Rig, type SimFleet, rejection, storeVariants } from './freeze-fixture.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const stores = storeVariants(() => redis.url, 'g');

describe.each(stores)('freeze groups (%s store)', (_kind, storeOpts) => {
  let fleet: SimFleet;
  let g: Rig;
  afterEach(async () => {
    await g?.close();
    await fleet?.close();
  });

  const frozenVms = () => Object.values(fleet.vm).filter((a) => a.state.frozen).map((a) => a.name).sort();

  it('freezes all members under one lease; DELETE thaws them all', async () => {
    fleet = await simFleet(['db', 'app', 'web']);
    g = await rig(fleet, storeOpts());
    const grp = await g.freeze.groups.create({ vms: ['db', 'app', 'web'], ttlSeconds: 60 }, BACKUP, 'snap-1');
    expect(grp.vms.map((v) => v.vm)).toEqual(['db', 'app', 'web']);
    expect(grp.vms.every((v) => v.frozen > 0)).toBe(true);
    expect(frozenVms()).toEqual(['app', 'db', 'web']);
    // one lease: every member shows it, and a single-VM freeze of a member conflicts
    expect((await g.freeze.status('app', BACKUP)).lease).toMatchObject({ leaseId: grp.leaseId, group: grp.id });
    const c = await rejection(g.freeze.freeze('app', {}, OTHER));
    expect(c.code).toBe('LEASE_CONFLICT');
    expect(c.extra).toMatchObject({ group: grp.id, holder: 'backup' });
    // the member cannot be thawed alone with the group lease
    expect((await rejection(g.freeze.thaw('app', { leaseId: grp.leaseId }, BACKUP))).code).toBe('LEASE_CONFLICT');
    // idempotent retry: same group
    const again = await g.freeze.groups.create({ vms: ['db', 'app', 'web'], ttlSeconds: 60 }, BACKUP, 'snap-1');
    expect(again).toMatchObject({ id: grp.id, leaseId: grp.leaseId, reused: true, expiresAt: grp.expiresAt });

    const st = await g.freeze.groups.get(grp.id, BACKUP);
    expect(st.vms.map((v) => v.status)).toEqual(['frozen', 'frozen', 'frozen']);
    const renewed = await g.freeze.groups.renew(grp.id, grp.leaseId, 120, BACKUP);
    expect(Date.parse(renewed.expiresAt)).toBeGreaterThan(Date.parse(grp.expiresAt));

    expect((await rejection(g.freeze.groups.delete(grp.id, { leaseId: 'wrong' }, BACKUP))).code).toBe('LEASE_CONFLICT');
    expect(frozenVms()).toEqual(['app', 'db', 'web']);
    const t = await g.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP);
    expect(t.consistent).toBe(true);
    expect(t.vms.map((v) => v.vm).sort()).toEqual(['app', 'db', 'web']);
    expect(frozenVms()).toEqual([]);
    expect((await rejection(g.freeze.groups.get(grp.id, BACKUP))).code).toBe('NOT_FOUND');
  });

  it('one failing member: every member is thawed and each VM is reported', async () => {
    fleet = await simFleet(['db', 'app', 'web']);
    g = await rig(fleet, storeOpts());
    fleet.vm.app.setFault({ command: 'guest-fsfreeze-freeze', kind: 'error', class: 'GenericError', desc: 'failed to freeze /srv: Input/output error', times: 1 });
    const err = await rejection(g.freeze.groups.create({ vms: ['db', 'app', 'web'] }, BACKUP));
    expect(err.code).toBe('AGENT_ERROR');
    const perVm = err.extra?.vms as Array<{ vm: string; result: string; thawAttempted: boolean; thawed?: boolean }>;
    expect(perVm.find((v) => v.vm === 'app')).toMatchObject({ result: 'failed' });
    expect(perVm.filter((v) => v.result === 'frozen').map((v) => v.vm).sort()).toEqual(['db', 'web']);
    expect(perVm.every((v) => v.thawAttempted && v.thawed)).toBe(true);
    expect(frozenVms()).toEqual([]);
    for (const vm of ['db', 'web']) expect(agentCommands(fleet.vm[vm])).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
    // nothing stays locked
    for (const vm of ['db', 'app', 'web']) expect((await g.freeze.status(vm, BACKUP)).lease).toBeNull();
  });

  it('a forced thaw of one member while the group freezes: the group freeze is 409, every member thawed, the lease ended', async () => {
    fleet = await simFleet(['db', 'app', 'web']);
    g = await rig(fleet, storeOpts());
    fleet.vm.app.setFault({ command: 'guest-fsfreeze-freeze', kind: 'delay', ms: 800, times: 1 });
    const freezing = rejection(g.freeze.groups.create({ vms: ['db', 'app', 'web'], ttlSeconds: 60 }, BACKUP));
    await waitFor(() => agentCommands(fleet.vm.app).includes('guest-fsfreeze-freeze'), 5_000, 'the freeze on the wire');
    const forced = await g.freeze.thaw('app', { force: true }, ADMIN);
    expect(forced).toMatchObject({ forced: true, reason: 'FREEZE_UNCONFIRMED' });
    const err = await freezing;
    expect(err.code).toBe('LEASE_CONFLICT');
    expect(err.extra).toMatchObject({ endedBy: 'forced', forcedBy: 'ops', allThawed: true });
    expect(frozenVms()).toEqual([]);
    for (const vm of ['db', 'app', 'web']) expect(agentCommands(fleet.vm[vm])).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
    for (const vm of ['db', 'app', 'web']) await waitFor(async () => (await g.freeze.status(vm, BACKUP)).lease === null, 5_000, `${vm} free`);
  });

  it('a member whose deadline thaw fails: the others leave the group at once and can be frozen again; it stays held until its thaw gets through', async () => {
    fleet = await simFleet(['m1', 'm2', 'm3']);
    const lines: Array<{ msg: string; vms?: string[] }> = [];
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    g = await rig(fleet, { ...storeOpts(), freeze: { sweepIntervalMs: 200 }, logger });
    fleet.vm.m2.setFault({ command: 'guest-fsfreeze-thaw', kind: 'error', class: 'GenericError', desc: 'thaw failed: Input/output error', times: 2 });
    const grp = await g.freeze.groups.create({ vms: ['m1', 'm2', 'm3'], ttlSeconds: 1 }, BACKUP);
    await waitFor(() => !fleet.vm.m1.state.frozen && !fleet.vm.m3.state.frozen, 5_000, 'the deadline thaw of m1 and m3');
    expect(fleet.vm.m2.state.frozen).toBe(true);
    // m1 is free now, not when m2's thaw gets through
    await waitFor(async () => (await g.freeze.status('m1', BACKUP)).lease === null, 2_000, 'm1 let go by the group');
    const again = await g.freeze.freeze('m1', { ttlSeconds: 60 }, OTHER);
    expect(fleet.vm.m1.state.frozen).toBe(true);
    // m2 is still the group's (its thaw is pending)
    expect((await g.freeze.status('m2', BACKUP)).lease).toMatchObject({ leaseId: grp.leaseId });
    expect((await rejection(g.freeze.freeze('m2', {}, OTHER))).extra).toMatchObject({ group: grp.id, pendingThaw: true });
    // the retry thaws m2 and ends the group, and leaves m1's new freeze alone
    await waitFor(() => !fleet.vm.m2.state.frozen, 10_000, "m2's thaw retried");
    await waitFor(async () => (await g.freeze.status('m2', BACKUP)).lease === null, 5_000, 'the group ended');
    expect(fleet.vm.m1.state.frozen).toBe(true);
    // (the status reads above are this test's own)
    expect(agentCommands(fleet.vm.m1).filter((c) => c !== 'guest-fsfreeze-status')).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-fsfreeze-freeze']);
    expect((await g.freeze.status('m1', OTHER)).lease).toMatchObject({ leaseId: again.leaseId });
    await g.freeze.thaw('m1', { leaseId: again.leaseId }, OTHER);
    // said once, when they went: the group's thaw was tried three times, each asking the store again
    expect(lines.filter((l) => l.msg.startsWith('thawed members let go')).map((l) => l.vms)).toEqual([['m1', 'm3']]);
    expect(lines.filter((l) => l.msg === 'thaw failed')).toHaveLength(2);
    // the holder is told the lease ended at its deadline, when m1 and m3 were thawed, not when m2's
    // thaw got through: a snapshot taken in between is not consistent (h10 F2)
    const ended = await rejection(g.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP));
    expect(ended.code).toBe('LEASE_EXPIRED');
    expect(ended.extra).toMatchObject({ endedBy: 'deadline', endedAt: new Date(grp.expiresAt).toISOString() });
  });

  it("a member thawed by force leaves the group: it can be frozen again, and the group's thaw leaves that freeze alone", async () => {
    fleet = await simFleet(['f1', 'f2']);
    g = await rig(fleet, storeOpts());
    const grp = await g.freeze.groups.create({ vms: ['f1', 'f2'], ttlSeconds: 60 }, BACKUP);
    expect(await g.freeze.thaw('f1', { force: true }, ADMIN)).toMatchObject({ forced: true, consistent: true });
    expect((await g.freeze.status('f1', BACKUP)).lease).toBeNull();
    expect((await g.freeze.status('f2', BACKUP)).lease).toMatchObject({ leaseId: grp.leaseId });
    // the group says so, and the list shows f1 once: under the lease that holds it now
    expect((await g.freeze.groups.get(grp.id, BACKUP)).vms).toEqual([
      { vm: 'f1', status: 'released' },
      { vm: 'f2', status: 'frozen' },
    ]);
    const again = await g.freeze.freeze('f1', { ttlSeconds: 60 }, OTHER);
    const rows = (await listFreezes(g.services as never, ADMIN)).map((r) => [r.group ?? r.vm, r.vms, r.owner]);
    expect(rows).toEqual([
      [grp.id, ['f2'], 'backup'],
      ['f1', ['f1'], 'other-backup'],
    ]);
    const t = await g.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP);
    expect(t.vms.find((v) => v.vm === 'f1')).toMatchObject({ skipped: true, reason: 'NOT_THAWED' });
    expect(t.vms.find((v) => v.vm === 'f2')).toMatchObject({ consistent: true });
    expect(fleet.vm.f1.state.frozen).toBe(true);
    expect(fleet.vm.f2.state.frozen).toBe(false);
    expect((await g.freeze.status('f1', OTHER)).lease).toMatchObject({ leaseId: again.leaseId });
    await g.freeze.thaw('f1', { leaseId: again.leaseId }, OTHER);
  });

  it('a retried group freeze (same Idempotency-Key) after one member was thawed by force answers the first request\'s group, freezing nothing again', async () => {
    fleet = await simFleet(['r1', 'r2']);
    g = await rig(fleet, storeOpts());
    const first = await g.freeze.groups.create({ vms: ['r1', 'r2'], ttlSeconds: 60 }, BACKUP, 'backup-run-7');
    await g.freeze.thaw('r1', { force: true }, ADMIN);
    const retry = await g.freeze.groups.create({ vms: ['r1', 'r2'], ttlSeconds: 60 }, BACKUP, 'backup-run-7');
    expect(retry).toMatchObject({ id: first.id, leaseId: first.leaseId, reused: true });
    expect(agentCommands(fleet.vm.r1)).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
    expect(agentCommands(fleet.vm.r2)).toEqual(['guest-fsfreeze-freeze']);
    // another request under that key is still refused
    expect((await rejection(g.freeze.groups.create({ vms: ['r2'], ttlSeconds: 60 }, BACKUP, 'backup-run-7'))).code).toBe('LEASE_CONFLICT');
    await g.freeze.groups.delete(first.id, { leaseId: first.leaseId }, BACKUP);
  });

  it("a retry (same Idempotency-Key) of a group freeze whose gateway stopped mid-way answers within the freeze timeout how to thaw it now, and that thaw works (h10 F7)", async () => {
    fleet = await simFleet(['m1', 'm2']);
    g = await rig(fleet, { ...storeOpts(), agent: { idleReleaseMs: 100, probeIntervalMs: 0, timeouts: { freeze: 800 } } as unknown as Record<string, number> });
    // what a gateway that died mid-way leaves: the group's lease still 'freezing', m1 frozen by it
    const id = randomUUID();
    const taken = await g.services.store.acquire({
      session: groupKey(id), keys: [vmKey('m1'), vmKey('m2')], owner: BACKUP.name, ttlMs: 60_000, hardCapMs: 3_600_000, idempotencyKey: 'run-9',
      data: { kind: 'group', vms: ['m1', 'm2'], state: 'freezing', gateway: 'gone-gateway', ttlMs: 60_000 },
    });
    if (!taken.ok) throw new Error('the test lease was not taken');
    fleet.vm.m1.state.frozen = true;
    const t0 = Date.now();
    const retry = await rejection(g.freeze.groups.create({ vms: ['m1', 'm2'], ttlSeconds: 60 }, BACKUP, 'run-9'));
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(retry.code).toBe('LEASE_CONFLICT');
    expect(retry.extra).toMatchObject({ leaseId: taken.lease.leaseId, group: id, vms: ['m1', 'm2'], expiresAt: new Date(taken.lease.expiresAt).toISOString() });
    expect(retry.message).toContain(`thaw now with DELETE /v1/freeze-groups/${id}?leaseId=${taken.lease.leaseId}`);
    expect(retry.message).toMatch(/any of m1, m2 may be frozen/);
    // as it says: the holder's thaw ends the lease and thaws the guests now, not at the deadline
    const t = await g.freeze.groups.delete(id, { leaseId: taken.lease.leaseId }, BACKUP);
    expect(t.id).toBe(id);
    // its report: no freeze count was ever written, so unconfirmed (not "something else froze the guest too", h13 F2)
    expect(t.consistent).toBe(false);
    expect(t.vms.map((v) => [v.vm, v.reason])).toEqual([['m1', 'FREEZE_UNCONFIRMED'], ['m2', 'FREEZE_UNCONFIRMED']]);
    expect(t.vms[0].detail).toMatch(/never completed \(the gateway that took it stopped mid-way\)/);
    expect(frozenVms()).toEqual([]);
    expect(await g.services.store.getSession(groupKey(id))).toBeUndefined();
  });

  it('the last member the group holds thawed by force: the group lease ends, every member free', async () => {
    fleet = await simFleet(['l1', 'l2']);
    g = await rig(fleet, storeOpts());
    const grp = await g.freeze.groups.create({ vms: ['l1', 'l2'], ttlSeconds: 60 }, BACKUP);
    await g.freeze.thaw('l1', { force: true }, ADMIN);
    await g.freeze.thaw('l2', { force: true }, ADMIN);
    expect((await rejection(g.freeze.groups.get(grp.id, BACKUP))).code).toBe('NOT_FOUND');
    const other = await g.freeze.freeze('l2', { ttlSeconds: 60 }, OTHER);
    expect(fleet.vm.l2.state.frozen).toBe(true);
    // the holder learns how its lease ended
    expect((await rejection(g.freeze.groups.delete(grp.id, { leaseId: grp.leaseId }, BACKUP))).extra).toMatchObject({ endedBy: 'forced' });
    await g.freeze.thaw('l2', { leaseId: other.leaseId }, OTHER);
  });

  it('unknown VMs or a held member: nothing is frozen', async () => {
    fleet = await simFleet(['db', 'app']);
    g = await rig(fleet, storeOpts());
    const nf = await rejection(g.freeze.groups.create({ vms: ['db', 'ghost', 'app'] }, BACKUP));
    expect(nf.code).toBe('VM_NOT_FOUND');
    expect(nf.extra).toMatchObject({ missing: ['ghost'] });
    expect(agentCommands(fleet.vm.db)).toEqual([]);

    await g.freeze.freeze('app', {}, OTHER);
    const held = await rejection(g.freeze.groups.create({ vms: ['db', 'app'] }, BACKUP));
    expect(held.code).toBe('LEASE_CONFLICT');
    expect(agentCommands(fleet.vm.db)).toEqual([]);
    expect(fleet.vm.db.state.frozen).toBe(false);
    expect((await rejection(g.freeze.groups.create({ vms: ['db', 'db'] }, BACKUP))).code).toBe('VALIDATION_FAILED');
  });

  it('the group deadline thaws every member; an admin can force a group thaw', async () => {
    fleet = await simFleet(['a1', 'a2', 'b1', 'b2']);
    g = await rig(fleet, { ...storeOpts(), freeze: { sweepIntervalMs: 200 } });
    const ga = await g.freeze.groups.create({ vms: ['a1', 'a2'], ttlSeconds: 1 }, BACKUP);
    const gb = await g.freeze.groups.create({ vms: ['b1', 'b2'], ttlSeconds: 60 }, BACKUP);
    expect(frozenVms()).toEqual(['a1', 'a2', 'b1', 'b2']);
    await waitFor(() => !fleet.vm.a1.state.frozen && !fleet.vm.a2.state.frozen, 5_000, 'group auto-thaw');
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(ga.expiresAt));
    expect((await rejection(g.freeze.groups.delete(gb.id, { force: true }, BACKUP))).code).toBe('FORBIDDEN');
    const forced = await g.freeze.groups.delete(gb.id, { force: true }, ADMIN);
    expect(forced.forced).toBe(true);
    expect(frozenVms()).toEqual([]);
  });
});

// Redis only: the memory store takes a group at once, never pending
describe('a freeze group still being taken (redis store)', () => {
  let fleet: SimFleet;
  let g: Rig;
  afterEach(async () => {
    await g?.close();
    await fleet?.close();
  });

  it('a member of a group still being taken (Redis: locked one by one): 409 saying so, with Retry-After until an abandoned one is rolled back', async () => {
    const opts = (stores.find(([kind]) => kind === 'redis') as (typeof stores)[number])[1]();
    fleet = await simFleet(['p1', 'p2']);
    g = await rig(fleet, opts);
    // as an acquirer that died after locking p1 left it: the pending record, p1's lock
    const P = opts.keyPrefix as string;
    const [sec] = (await redis.command('TIME')).split('\r\n').filter((l) => /^[0-9]+$/.test(l));
    const now = Number(sec) * 1000;
    const lid = '00000000-0000-4000-8000-00000000abcd';
    const rec = ['session', 'group:pq', 'leaseId', lid, 'owner', 'ghost', 'fence', '0', 'createdAt', String(now - 2_000), 'expiresAt', String(now + 8_000), 'hardDeadline', String(now + 58_000), 'idem', '', 'epoch', '', 'keys', JSON.stringify(['vm:p1', 'vm:p2']), 'data', '{}', 'state', 'pending'];
    expect(await redis.command('HSET', `${P}{group:pq}:session`, ...rec)).toMatch(/^:/);
    expect(await redis.command('HSET', `${P}{vm:p1}:lock`, 'session', 'group:pq', 'leaseId', lid)).toMatch(/^:/);
    const e = await rejection(g.freeze.freeze('p1', {}, OTHER));
    expect(e.code).toBe('LEASE_CONFLICT');
    expect(e.extra).toMatchObject({ acquiring: true, group: 'pq', holder: 'ghost', pendingThaw: false });
    expect(e.message).toMatch(/is being locked by freeze group pq of ghost \(begun at .*nothing frozen by it yet\); .* rolled back by the next freeze from /);
    expect(e.retryAfter).toBeGreaterThanOrEqual(26);
    expect(e.retryAfter).toBeLessThanOrEqual(29);
    expect(agentCommands(fleet.vm.p1)).toEqual([]);
  });
});
