/**
 * Issue 12, item 9 — freeze answers a backup system can act on, through the real app on the
 * simulator, with the embedded store and with a real Redis:
 *  - a freeze that froze nothing (mountpoints the guest does not have, or a guest with no freezable
 *    filesystem) is 422 NOTHING_FROZEN, and the VM is left thawed with no lease; a group with such a
 *    member fails as a whole; a genuine agent error stays AGENT_ERROR;
 *  - a thaw or renew with a lease that has already ended is 409 LEASE_EXPIRED with `endedAt` and
 *    `endedBy` (deadline, forced; shutdown at the service level), and sends nothing to the agent;
 *  - a lease id that never existed, or belongs to another VM, stays 409 LEASE_CONFLICT.
 * The simulator answers guest-fsfreeze-freeze-list like the real qemu-ga 7.2 on the VM rig: 0 for
 * mountpoints it does not have (status stays "thawed"), 1 for ['/no/such', '/data'].
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { makeApp } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { BACKUP, rejection, rig, simFleet, sleep, storeVariants, waitFor, type Rig, type SimFleet as FreezeFleet } from '../integration/freeze-fixture.js';
import { agentCommands, body, expectProblem, startSim, type SimFleet } from '../integration/routes-support.js';

const TOKENS = { backup: 'backup-token-0123456789abcdef', ops: 'ops-token-0123456789abcdef01' };
const as = (who: keyof typeof TOKENS) => ({ authorization: `Bearer ${TOKENS[who]}` });

const VMS = ['nf1', 'nf2', 'nf3', 'ae1', 'g1', 'g2', 'g3', 'dl1', 'rn1', 'fc1', 'lc1', 'lc2', 'gd1', 'gd2', 'gf1', 'gf2'] as const;

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const stores = storeVariants(() => redis.url, 'fa');

describe.each(stores)('freeze answers over HTTP (%s store)', (_kind, storeOpts) => {
  let fleet: SimFleet;
  let app: FastifyInstance;
  const vm: Record<string, SimAgent> = {};

  beforeAll(async () => {
    fleet = await startSim();
    for (const name of VMS) vm[name] = await fleet.add({ name });
    const s = storeOpts();
    app = await makeApp({
      vms: VMS.map((name) => ({ name, endpoint: vm[name].endpoint })),
      config: {
        auth: {
          tokens: [
            { name: 'backup', token: TOKENS.backup, scopes: ['read', 'write'] },
            { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
          ],
        },
        freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 1200, sweepIntervalMs: 200 },
        ...(s.redisUrl ? { store: { type: 'redis', redisUrl: s.redisUrl, keyPrefix: s.keyPrefix, commandTimeoutMs: 1_000 } } : {}),
      },
    });
    await app.services.store.ready(5_000);
    expect(app.services.store.kind).toBe(s.redisUrl ? 'redis' : 'memory');
  });
  afterAll(async () => {
    await app?.close();
    await fleet?.close();
  });

  const freeze = (name: string, payload: Record<string, unknown>, who: keyof typeof TOKENS = 'backup'): InjectOptions => ({
    method: 'POST',
    url: `/v1/vms/${name}/fsfreeze`,
    headers: as(who),
    payload,
  });
  const thaw = (name: string, leaseId: string, who: keyof typeof TOKENS = 'backup'): InjectOptions => ({
    method: 'DELETE',
    url: `/v1/vms/${name}/fsfreeze?leaseId=${encodeURIComponent(leaseId)}`,
    headers: as(who),
  });
  const renew = (name: string, leaseId: string): InjectOptions => ({
    method: 'POST',
    url: `/v1/vms/${name}/fsfreeze/renew`,
    headers: as('backup'),
    payload: { leaseId, ttlSeconds: 60 },
  });
  const status = async (name: string) => body(await app.inject({ method: 'GET', url: `/v1/vms/${name}/fsfreeze`, headers: as('backup') }));
  const frozenLease = async (name: string, payload: Record<string, unknown> = {}) => {
    const r = await app.inject(freeze(name, payload));
    expect(r.statusCode, r.body).toBe(201);
    return body(r);
  };

  it('mountpoints the guest does not have → 422 NOTHING_FROZEN; the VM is thawed and no lease is left', async () => {
    const p = await expectProblem(app, freeze('nf1', { mountpoints: ['/no/such/mount'], ttlSeconds: 60 }), 422, 'NOTHING_FROZEN');
    expect(p).toMatchObject({ vm: 'nf1', command: 'guest-fsfreeze-freeze-list', frozen: 0, mountpoints: ['/no/such/mount'] });
    expect(String(p.detail)).toMatch(/froze no filesystem/);
    // the agent froze 0 and stays thawed; the rollback thaw costs one command and guarantees it
    expect(agentCommands(vm.nf1)).toEqual(['guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']);
    expect(vm.nf1.state.frozen).toBe(false);
    expect(await status('nf1')).toMatchObject({ status: 'thawed', lease: null, leaseStore: 'ok' });
    // nothing is locked: the same caller (or anyone) can freeze what does exist at once
    const mixed = await frozenLease('nf1', { mountpoints: ['/no/such/mount', '/data'] });
    expect(mixed.frozen).toBe(1); // like qemu-ga 7.2: the ones that exist are frozen, the others skipped
    expect(vm.nf1.state.frozen).toBe(true);
    const t = await app.inject(thaw('nf1', String(mixed.leaseId)));
    expect(t.statusCode).toBe(200);
    expect(body(t)).toMatchObject({ thawed: 1, frozen: 1, consistent: true });
  });

  it('a guest with no freezable filesystem → 422 NOTHING_FROZEN, thawed, no lease', async () => {
    vm.nf3.state.filesystems = [];
    const p = await expectProblem(app, freeze('nf3', {}), 422, 'NOTHING_FROZEN');
    expect(p).toMatchObject({ vm: 'nf3', command: 'guest-fsfreeze-freeze', frozen: 0 });
    expect(vm.nf3.state.frozen).toBe(false);
    expect(await status('nf3')).toMatchObject({ status: 'thawed', lease: null });
  });

  it('an agent that refuses mountpoints it does not have → NOTHING_FROZEN (missing listed); a genuine agent error stays AGENT_ERROR', async () => {
    vm.nf2.setFault({ command: 'guest-fsfreeze-freeze-list', kind: 'error', class: 'GenericError', desc: 'failed to open /no/such: No such file or directory', times: 1 });
    const p = await expectProblem(app, freeze('nf2', { mountpoints: ['/no/such'] }), 422, 'NOTHING_FROZEN');
    expect(p).toMatchObject({ vm: 'nf2', missing: ['/no/such'], qga: { class: 'GenericError' } });
    expect(vm.nf2.state.frozen).toBe(false);
    expect(await status('nf2')).toMatchObject({ status: 'thawed', lease: null });

    // the mountpoint exists: the agent's error is real and reported as such, and the VM is thawed
    vm.ae1.setFault({ command: 'guest-fsfreeze-freeze-list', kind: 'error', class: 'GenericError', desc: 'failed to freeze /data: Input/output error', times: 1 });
    const e = await expectProblem(app, freeze('ae1', { mountpoints: ['/data'] }), 422, 'AGENT_ERROR');
    expect(e).toMatchObject({ vm: 'ae1', qga: { class: 'GenericError', desc: 'failed to freeze /data: Input/output error' } });
    expect(agentCommands(vm.ae1)).toContain('guest-fsfreeze-thaw');
    expect(await status('ae1')).toMatchObject({ status: 'thawed', lease: null });
  });

  it('a group member that freezes 0 filesystems fails the whole group with NOTHING_FROZEN; every member is thawed', async () => {
    vm.g2.state.filesystems = vm.g2.state.filesystems.filter((f) => f.mountpoint !== '/data');
    const p = await expectProblem(
      app,
      { method: 'POST', url: '/v1/freeze-groups', headers: as('backup'), payload: { vms: ['g1', 'g2', 'g3'], mountpoints: ['/data'] } },
      422,
      'NOTHING_FROZEN',
    );
    expect(p.vm).toBe('g2');
    const perVm = p.vms as Array<{ vm: string; result: string; error?: { code: string }; thawAttempted: boolean; thawed?: boolean }>;
    expect(perVm.find((v) => v.vm === 'g2')).toMatchObject({ result: 'failed', error: { code: 'NOTHING_FROZEN' } });
    expect(perVm.filter((v) => v.result === 'frozen').map((v) => v.vm)).toEqual(['g1', 'g3']);
    expect(perVm.every((v) => v.thawAttempted && v.thawed)).toBe(true);
    expect(p.allThawed).toBe(true);
    for (const name of ['g1', 'g2', 'g3']) expect(agentCommands(vm[name]), name).toEqual(['guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw']);
    for (const name of ['g1', 'g2', 'g3']) {
      expect(vm[name].state.frozen, name).toBe(false);
      expect(await status(name)).toMatchObject({ status: 'thawed', lease: null });
    }
  });

  it('thaw and renew after the deadline thawed the VM → 409 LEASE_EXPIRED, endedBy deadline, endedAt after the deadline; nothing sent', async () => {
    const lease = await frozenLease('dl1', { ttlSeconds: 1 });
    await waitFor(() => !vm.dl1.state.frozen, 5_000, 'deadline thaw');
    await waitFor(async () => (await status('dl1')).lease === null, 5_000, 'lease released');
    const n = agentCommands(vm.dl1).length;
    const p = await expectProblem(app, thaw('dl1', String(lease.leaseId)), 409, 'LEASE_EXPIRED');
    expect(p).toMatchObject({ vm: 'dl1', endedBy: 'deadline', leaseId: lease.leaseId });
    expect(String(p.endedAt)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Date.parse(String(p.endedAt))).toBeGreaterThanOrEqual(Date.parse(String(lease.expiresAt)));
    expect(Date.parse(String(p.endedAt))).toBeLessThanOrEqual(Date.now());
    expect(String(p.detail)).toMatch(/may not be consistent/);
    const r = await expectProblem(app, renew('dl1', String(lease.leaseId)), 409, 'LEASE_EXPIRED');
    expect(r).toMatchObject({ endedBy: 'deadline', endedAt: p.endedAt });
    expect(agentCommands(vm.dl1).length).toBe(n);
    expect(vm.dl1.state.frozen).toBe(false);
  });

  it('renew of a lease that expired while the VM is frozen again under a new lease → LEASE_EXPIRED, the new lease untouched', async () => {
    const old = await frozenLease('rn1', { ttlSeconds: 1 });
    await waitFor(async () => (await status('rn1')).lease === null, 5_000, 'deadline thaw and release');
    const fresh = await frozenLease('rn1', { ttlSeconds: 60 });
    await expectProblem(app, renew('rn1', String(old.leaseId)), 409, 'LEASE_EXPIRED');
    const p = await expectProblem(app, thaw('rn1', String(old.leaseId)), 409, 'LEASE_EXPIRED');
    expect(p.endedBy).toBe('deadline');
    expect(vm.rn1.state.frozen).toBe(true);
    expect(await status('rn1')).toMatchObject({ status: 'frozen', lease: { leaseId: fresh.leaseId } });
    expect((await app.inject(thaw('rn1', String(fresh.leaseId)))).statusCode).toBe(200);
  });

  it('after a forced thaw, the holder\'s thaw and renew → LEASE_EXPIRED, endedBy forced', async () => {
    const lease = await frozenLease('fc1');
    const before = Date.now();
    const f = await app.inject({ method: 'DELETE', url: '/v1/vms/fc1/fsfreeze?force=true', headers: as('ops') });
    expect(f.statusCode).toBe(200);
    expect(body(f)).toMatchObject({ forced: true });
    const n = agentCommands(vm.fc1).length;
    const p = await expectProblem(app, thaw('fc1', String(lease.leaseId)), 409, 'LEASE_EXPIRED');
    expect(p).toMatchObject({ vm: 'fc1', endedBy: 'forced' });
    expect(Date.parse(String(p.endedAt))).toBeGreaterThanOrEqual(before - 5);
    expect(Date.parse(String(p.endedAt))).toBeLessThan(Date.parse(String(lease.expiresAt)));
    expect((await expectProblem(app, renew('fc1', String(lease.leaseId)), 409, 'LEASE_EXPIRED')).endedBy).toBe('forced');
    expect(agentCommands(vm.fc1).length).toBe(n);
  });

  it('a lease id that never existed, or is another VM\'s (live or ended), stays LEASE_CONFLICT; nothing sent', async () => {
    const mine = await frozenLease('lc1');
    const theirs = await frozenLease('lc2', { ttlSeconds: 60 });
    const n = agentCommands(vm.lc1).length;
    await expectProblem(app, thaw('lc1', randomUUID()), 409, 'LEASE_CONFLICT');
    await expectProblem(app, renew('lc1', randomUUID()), 409, 'LEASE_CONFLICT');
    await expectProblem(app, thaw('lc1', String(theirs.leaseId)), 409, 'LEASE_CONFLICT');
    await expectProblem(app, renew('lc1', String(theirs.leaseId)), 409, 'LEASE_CONFLICT');
    // lc2's lease ends by force: used on lc1 it is still not a lease lc1 ever had
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/lc2/fsfreeze?force=true', headers: as('ops') })).statusCode).toBe(200);
    await expectProblem(app, thaw('lc1', String(theirs.leaseId)), 409, 'LEASE_CONFLICT');
    await expectProblem(app, renew('lc1', String(theirs.leaseId)), 409, 'LEASE_CONFLICT');
    expect(agentCommands(vm.lc1).length).toBe(n);
    expect(vm.lc1.state.frozen).toBe(true);
    // the holder's own thaw ends its lease without a tombstone: a repeat is LEASE_CONFLICT, not LEASE_EXPIRED
    expect((await app.inject(thaw('lc1', String(mine.leaseId)))).statusCode).toBe(200);
    await expectProblem(app, thaw('lc1', String(mine.leaseId)), 409, 'LEASE_CONFLICT');
  });

  it('freeze groups: DELETE and renew after the group deadline or a forced thaw → LEASE_EXPIRED; an unknown group stays 404', async () => {
    const create = async (vms: string[], ttlSeconds: number) => {
      const r = await app.inject({ method: 'POST', url: '/v1/freeze-groups', headers: as('backup'), payload: { vms, ttlSeconds } });
      expect(r.statusCode, r.body).toBe(201);
      return body(r);
    };
    const byDeadline = await create(['gd1', 'gd2'], 1);
    const byForce = await create(['gf1', 'gf2'], 60);
    await waitFor(() => !vm.gd1.state.frozen && !vm.gd2.state.frozen, 5_000, 'group deadline thaw');
    await waitFor(async () => (await status('gd1')).lease === null && (await status('gd2')).lease === null, 5_000, 'group lease released');
    const gd = `/v1/freeze-groups/${String(byDeadline.id)}`;
    const p = await expectProblem(app, { method: 'DELETE', url: `${gd}?leaseId=${String(byDeadline.leaseId)}`, headers: as('backup') }, 409, 'LEASE_EXPIRED');
    expect(p).toMatchObject({ endedBy: 'deadline', group: byDeadline.id });
    expect(Date.parse(String(p.endedAt))).toBeGreaterThanOrEqual(Date.parse(String(byDeadline.expiresAt)));
    const r = await expectProblem(app, { method: 'POST', url: `${gd}/renew`, headers: as('backup'), payload: { leaseId: byDeadline.leaseId } }, 409, 'LEASE_EXPIRED');
    expect(r.endedBy).toBe('deadline');

    const gf = `/v1/freeze-groups/${String(byForce.id)}`;
    expect((await app.inject({ method: 'DELETE', url: `${gf}?force=true`, headers: as('ops') })).statusCode).toBe(200);
    expect((await expectProblem(app, { method: 'DELETE', url: `${gf}?leaseId=${String(byForce.leaseId)}`, headers: as('backup') }, 409, 'LEASE_EXPIRED')).endedBy).toBe('forced');
    expect((await expectProblem(app, { method: 'POST', url: `${gf}/renew`, headers: as('backup'), payload: { leaseId: byForce.leaseId } }, 409, 'LEASE_EXPIRED')).endedBy).toBe('forced');

    // another lease id, or a group that never was: 404 as before
    await expectProblem(app, { method: 'DELETE', url: `${gd}?leaseId=${randomUUID()}`, headers: as('backup') }, 404, 'NOT_FOUND');
    await expectProblem(app, { method: 'DELETE', url: `/v1/freeze-groups/${randomUUID()}?leaseId=${String(byForce.leaseId)}`, headers: as('backup') }, 404, 'NOT_FOUND');
  });
});

describe.each(stores)('freeze answers in the service (%s store)', (_kind, storeOpts) => {
  let fleet: FreezeFleet;
  let g: Rig;
  afterEach(async () => {
    await g?.close();
    await fleet?.close();
  });

  it('renew of a lease past its expiry whose thaw has not run yet → LEASE_EXPIRED with endedAt = expiresAt', async () => {
    fleet = await simFleet(['vm1']);
    // no sweep in the test's time and the local timer dropped: the lease expires, its thaw waits
    g = await rig(fleet, { ...storeOpts(), freeze: { sweepIntervalMs: 60_000 } });
    const lease = await g.freeze.freeze('vm1', { ttlSeconds: 1 }, BACKUP);
    g.freeze.engine.forget('vm:vm1');
    await sleep(1_200);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    const e = await rejection(g.freeze.renew('vm1', lease.leaseId, 60));
    expect(e.code).toBe('LEASE_EXPIRED');
    expect(e.extra).toMatchObject({ endedBy: 'deadline', endedAt: lease.expiresAt });
    // the holder may still thaw it: the guest stayed frozen all along, so the snapshot is consistent
    expect(await g.freeze.thaw('vm1', { leaseId: lease.leaseId }, BACKUP)).toMatchObject({ consistent: true, thawed: lease.frozen });
  });
});

describe('freeze answers at shutdown (memory store)', () => {
  let fleet: FreezeFleet | undefined;
  let g: Rig | undefined;
  afterEach(async () => {
    await g?.close();
    await fleet?.close();
  });

  // With Redis a shutdown leaves its leases to the other processes (nothing is thawed, no tombstone);
  // the embedded store is not durable, so shutdown thaws what it holds and says so.
  it('a thaw at shutdown leaves the tombstone endedBy shutdown; the holder\'s thaw is LEASE_EXPIRED', async () => {
    fleet = await simFleet(['vm1']);
    g = await rig(fleet);
    const lease = await g.freeze.freeze('vm1', { ttlSeconds: 60 }, BACKUP);
    await g.freeze.stop();
    expect(fleet.vm.vm1.state.frozen).toBe(false);
    expect(await g.services.store.ended(lease.leaseId)).toMatchObject({ session: 'vm:vm1', endedBy: 'shutdown' });
    const e = await rejection(g.freeze.thaw('vm1', { leaseId: lease.leaseId }, BACKUP));
    expect(e.code).toBe('LEASE_EXPIRED');
    expect(e.extra?.endedBy).toBe('shutdown');
  });
});
