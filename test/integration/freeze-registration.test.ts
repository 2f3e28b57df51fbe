/**
 * A freeze and the VM's registration, through the real app on the simulator, with the embedded
 * store and with a real Redis:
 *  - DELETE /v1/vms/{vm} of an API-registered VM under a freeze lease (single or group) is 409
 *    LEASE_CONFLICT and the VM stays registered; known frozen without a lease: 409 VM_FROZEN; once
 *    thawed, 204;
 *  - a reload (SIGHUP) that removes a frozen configured VM keeps it registered until its lease
 *    ends: the deadline thaw reaches the guest, then the VM goes;
 *  - a freeze that never reached the agent (nothing listens) leaves no lease: 503 with
 *    `sent: false`, the other members of a group are thawed and can be frozen again at once;
 *  - a member whose thaw keeps failing: the retries thaw only it; the others are thawed once.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SimAgent } from '../../sim/index.js';
import { makeApp, testConfig } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { agentCommands, storeVariants, waitFor } from './freeze-fixture.js';
import { expectProblem as problemOf, startSim, type SimFleet } from './routes-support.js';

const TOKENS = { backup: 'backup-token-0123456789abcdef', ops: 'ops-token-0123456789abcdef01' };
const as = (who: keyof typeof TOKENS) => ({ authorization: `Bearer ${TOKENS[who]}` });
const AUTH = {
  tokens: [
    { name: 'backup', token: TOKENS.backup, scopes: ['read', 'write'] },
    { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
  ],
};

const body = <T>(res: { body: string }): T => JSON.parse(res.body) as T;

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const stores = storeVariants(() => redis.url, 'fr');

describe.each(stores)('freeze and registration (%s store)', (_kind, storeOpts) => {
  let fleet: SimFleet;
  let app: FastifyInstance | undefined;
  const vm: Record<string, SimAgent> = {};

  const configFor = (names: string[]) => {
    const s = storeOpts();
    return {
      vms: names.map((name) => ({ name, endpoint: vm[name].endpoint })),
      config: {
        auth: AUTH,
        agent: { connectTimeoutMs: 500 },
        freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 1200, sweepIntervalMs: 200 },
        ...(s.redisUrl ? { store: { type: 'redis', redisUrl: s.redisUrl, keyPrefix: s.keyPrefix, commandTimeoutMs: 1_000 } } : {}),
      },
    };
  };
  const start = async (names: string[]) => {
    app = await makeApp(configFor(names));
    await app.services.store.ready(5_000);
    return app;
  };

  beforeAll(async () => {
    fleet = await startSim();
    for (const name of ['cfg1', 'cfg2', 'kept', 'db', 'app1', 'dead', 'api1', 'mover', 'target', 'gone']) vm[name] = await fleet.add({ name });
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });
  afterAll(async () => {
    await fleet?.close();
  });

  const freezes = async (a: FastifyInstance) => body<{ freezes: unknown[] }>(await a.inject({ method: 'GET', url: '/v1/freezes', headers: as('ops') })).freezes;

  it('DELETE of an API-registered VM under a freeze lease: 409, still registered; after the thaw: 204', async () => {
    const a = await start(['cfg1']);
    const reg = await a.inject({ method: 'POST', url: '/v1/vms', headers: as('ops'), payload: { name: 'api1', endpoint: vm.api1.endpoint } });
    expect(reg.statusCode).toBe(201);
    const fr = await a.inject({ method: 'POST', url: '/v1/vms/api1/fsfreeze', headers: as('backup'), payload: { ttlSeconds: 60 } });
    expect(fr.statusCode).toBe(201);
    const { leaseId } = body<{ leaseId: string }>(fr);
    const p = await problemOf(a, { method: 'DELETE', url: '/v1/vms/api1', headers: as('ops') }, 409, 'LEASE_CONFLICT');
    expect(p.detail).toContain('frozen under a freeze lease held by backup');
    expect(p.holder).toBe('backup');
    expect((await a.inject({ method: 'GET', url: '/v1/vms/api1', headers: as('ops') })).statusCode).toBe(200);
    // a group's lease holds it the same way
    expect((await a.inject({ method: 'DELETE', url: `/v1/vms/api1/fsfreeze?leaseId=${leaseId}`, headers: as('backup') })).statusCode).toBe(200);
    const grp = await a.inject({ method: 'POST', url: '/v1/freeze-groups', headers: as('backup'), payload: { vms: ['cfg1', 'api1'], ttlSeconds: 60 } });
    expect(grp.statusCode).toBe(201);
    expect((await problemOf(a, { method: 'DELETE', url: '/v1/vms/api1', headers: as('ops') }, 409, 'LEASE_CONFLICT')).detail).toContain("a freeze group's lease");
    expect((await a.inject({ method: 'DELETE', url: `/v1/freeze-groups/${body<{ id: string }>(grp).id}?leaseId=${body<{ leaseId: string }>(grp).leaseId}`, headers: as('backup') })).statusCode).toBe(200);
    // known frozen outside any lease of the gateway (as after a freeze by another tool): VM_FROZEN
    a.services.agent.setKnownFrozen('api1', true);
    (await problemOf(a, { method: 'DELETE', url: '/v1/vms/api1', headers: as('ops') }, 409, 'VM_FROZEN'));
    a.services.agent.setKnownFrozen('api1', false);
    expect((await a.inject({ method: 'DELETE', url: '/v1/vms/api1', headers: as('ops') })).statusCode).toBe(204);
    expect(vm.api1.state.frozen).toBe(false);
  });

  it('a reload that removes a frozen configured VM keeps it until its lease ends: the deadline thaw reaches the guest, then it goes', async () => {
    const a = await start(['cfg2', 'kept']);
    expect((await a.inject({ method: 'POST', url: '/v1/vms/kept/fsfreeze', headers: as('backup'), payload: { ttlSeconds: 1 } })).statusCode).toBe(201);
    expect(vm.kept.state.frozen).toBe(true);
    const next = testConfig(configFor(['cfg2']));
    const summary = await a.reloadConfig(next);
    expect(summary.removed).toEqual([]);
    expect(summary.kept).toEqual(['kept']);
    expect((await a.inject({ method: 'GET', url: '/v1/vms/kept', headers: as('ops') })).statusCode).toBe(200);
    // the deadline thaw (1 s) reaches the guest; the next check (every sweepIntervalMs) drops the VM
    await waitFor(() => !vm.kept.state.frozen, 5_000, 'the deadline thaw of the removed VM');
    await waitFor(async () => (await a.inject({ method: 'GET', url: '/v1/vms/kept', headers: as('ops') })).statusCode === 404, 5_000, 'the kept VM to go');
    expect(await freezes(a)).toEqual([]);
    // a VM removed while not frozen goes at once
    const again = await a.reloadConfig(testConfig(configFor([])));
    expect([again.removed, again.kept]).toEqual([['cfg2'], []]);
  });

  it("a removed frozen VM whose agent is gone for good is let go at the lease's hard deadline: the lease is dropped, no thaw is retried for ever (h11 F1)", async () => {
    const cfg = configFor(['cfg2', 'gone']);
    cfg.config.freeze = { ...cfg.config.freeze, defaultTtlSeconds: 1, maxTtlSeconds: 2, maxTotalSeconds: 2 };
    app = await makeApp(cfg);
    await app.services.store.ready(5_000);
    const a = app;
    expect((await a.inject({ method: 'POST', url: '/v1/vms/gone/fsfreeze', headers: as('backup'), payload: { ttlSeconds: 1 } })).statusCode).toBe(201);
    // the VM goes away (destroyed) and leaves the configuration: kept for its lease meanwhile
    await vm.gone.kill();
    expect((await a.reloadConfig(testConfig({ ...configFor(['cfg2']), config: { ...configFor(['cfg2']).config, freeze: cfg.config.freeze } }))).kept).toEqual(['gone']);
    // its deadline thaw fails (no socket) and is retried until the hard deadline (2 s); then it goes
    await waitFor(async () => (await a.inject({ method: 'GET', url: '/v1/vms/gone', headers: as('ops') })).statusCode === 404, 8_000, 'the kept VM to go');
    await waitFor(async () => (await freezes(a)).length === 0, 5_000, 'the lease dropped');
  });

  it('a reload that moves a frozen VM to another endpoint keeps the old one until its lease ends: the thaw reaches the guest it froze', async () => {
    const a = await start(['mover']);
    expect((await a.inject({ method: 'POST', url: '/v1/vms/mover/fsfreeze', headers: as('backup'), payload: { ttlSeconds: 1 } })).statusCode).toBe(201);
    expect(vm.mover.state.frozen).toBe(true);
    const moved = testConfig(configFor([]));
    moved.vms = [{ name: 'mover', endpoint: vm.target.endpoint }];
    const summary = await a.reloadConfig(moved);
    expect([summary.changed, summary.kept]).toEqual([[], ['mover']]);
    await waitFor(() => !vm.mover.state.frozen, 5_000, 'the deadline thaw of the guest that was frozen');
    expect(agentCommands(vm.target).filter((c) => c.startsWith('guest-fsfreeze'))).toEqual([]);
    // once the lease has ended, the new endpoint applies
    const endpointOf = async () => body<{ endpoint?: { path?: string } }>(await a.inject({ method: 'GET', url: '/v1/vms/mover', headers: as('ops') })).endpoint?.path;
    await waitFor(async () => (await endpointOf()) === (vm.target.endpoint as { path: string }).path, 5_000, 'the new endpoint');
  });

  it('a freeze that never reached the agent (nothing listens) leaves no lease; the group\'s other member is thawed and free at once', async () => {
    const a = await start(['db', 'dead']);
    await vm.dead.kill();
    try {
      const single = (await problemOf(a, { method: 'POST', url: '/v1/vms/dead/fsfreeze', headers: as('backup'), payload: { ttlSeconds: 30 } }, 503, 'AGENT_UNAVAILABLE'));
      expect(single.sent).toBe(false);
      expect(await freezes(a)).toEqual([]);
      const grp = (await problemOf(a, { method: 'POST', url: '/v1/freeze-groups', headers: as('backup'), payload: { vms: ['db', 'dead'], ttlSeconds: 30 } }, 503, 'AGENT_UNAVAILABLE'));
      const perVm = grp.vms as Array<{ vm: string; result: string; thawAttempted: boolean; thawed?: boolean }>;
      expect(perVm.find((v) => v.vm === 'dead')).toMatchObject({ result: 'failed', thawAttempted: false });
      expect(perVm.find((v) => v.vm === 'db')).toMatchObject({ result: 'frozen', thawAttempted: true, thawed: true });
      expect(vm.db.state.frozen).toBe(false);
      expect(await freezes(a)).toEqual([]);
      const fr = await a.inject({ method: 'POST', url: '/v1/vms/db/fsfreeze', headers: as('backup'), payload: { ttlSeconds: 30 } });
      expect(fr.statusCode).toBe(201);
      expect((await a.inject({ method: 'DELETE', url: `/v1/vms/db/fsfreeze?leaseId=${body<{ leaseId: string }>(fr).leaseId}`, headers: as('backup') })).statusCode).toBe(200);
    } finally {
      await vm.dead.restart();
    }
  });

  it('a member whose deadline thaw keeps failing: the retries thaw only it, the other is thawed (and audited) once', async () => {
    const a = await start(['db', 'app1']);
    const since = Date.now();
    const grp = await a.inject({ method: 'POST', url: '/v1/freeze-groups', headers: as('backup'), payload: { vms: ['db', 'app1'], ttlSeconds: 1 } });
    expect(grp.statusCode).toBe(201);
    // the deadline thaw and the first two retries (0.5 s, 1 s later) fail on app1; the third thaws it
    vm.app1.setFault({ command: 'guest-fsfreeze-thaw', kind: 'error', class: 'GenericError', desc: 'thaw failed: Device or resource busy', times: 3 });
    await waitFor(() => !vm.app1.state.frozen, 10_000, 'app1 thawed by a retry');
    await waitFor(async () => (await freezes(a)).length === 0, 5_000, 'the group lease to end');
    expect(vm.db.state.frozen).toBe(false);
    expect(agentCommands(vm.db, since)).toEqual(['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw']);
    expect(agentCommands(vm.app1, since).filter((c) => c === 'guest-fsfreeze-thaw')).toHaveLength(4);
  }, 20_000);
});
