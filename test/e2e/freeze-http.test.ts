/**
 * The freeze routes through HTTP (app.inject) on simulated agents: status codes, problem+json
 * codes, the Idempotency-Key header, scopes, bad input, Redis down, and the OpenAPI entries.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { makeApp } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { simFleet, waitFor, type SimFleet } from '../integration/freeze-fixture.js';

const TOKENS = {
  backup: 'backup-token-0123456789',
  other: 'other-token-0123456789',
  ops: 'ops-token-0123456789abc',
  reader: 'reader-token-0123456789',
};
const auth = (who: keyof typeof TOKENS) => ({ authorization: `Bearer ${TOKENS[who]}` });

let fleet: SimFleet;
let app: FastifyInstance;

async function build(extra: Record<string, unknown> = {}): Promise<void> {
  app = await makeApp({
    vms: Object.values(fleet.vm).map((a) => ({ name: a.name, endpoint: a.endpoint })),
    config: {
      auth: {
        tokens: [
          { name: 'backup', token: TOKENS.backup, scopes: ['read', 'write'] },
          { name: 'other', token: TOKENS.other, scopes: ['read', 'write'] },
          { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
          { name: 'reader', token: TOKENS.reader, scopes: ['read'] },
        ],
      },
      freeze: { defaultTtlSeconds: 60, maxTtlSeconds: 600, maxTotalSeconds: 1200, sweepIntervalMs: 200 },
      ...extra,
    },
  });
}

afterEach(async () => {
  await app?.close();
  await fleet?.close();
});

describe('fsfreeze over HTTP', () => {
  it('freeze → 201 lease; retry with Idempotency-Key → 200 same lease; conflict → 409 problem', async () => {
    fleet = await simFleet(['vm1']);
    await build();
    const r1 = await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: { ...auth('backup'), 'idempotency-key': 'job-7' }, payload: { ttlSeconds: 120 } });
    expect(r1.statusCode).toBe(201);
    const lease = r1.json();
    expect(lease).toMatchObject({ frozen: fleet.vm.vm1.state.filesystems.length, reused: false });
    expect(Date.parse(lease.expiresAt) - Date.parse(lease.createdAt)).toBe(120_000);
    expect(Number.isSafeInteger(lease.fence)).toBe(true);

    const r2 = await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: { ...auth('backup'), 'idempotency-key': 'job-7' }, payload: { ttlSeconds: 120 } });
    expect(r2.statusCode).toBe(200);
    expect(r2.json()).toMatchObject({ leaseId: lease.leaseId, expiresAt: lease.expiresAt, reused: true });
    // the same key with another request is not a retry: 409 naming what differs, nothing sent
    const freezesBefore = fleet.vm.vm1.stats.commandLog.filter((e) => e.command.startsWith('guest-fsfreeze-freeze')).length;
    for (const [payload, differs] of [
      [{ ttlSeconds: 60 }, /ttlSeconds 120 \(this one: 60\)/],
      [{ ttlSeconds: 120, mountpoints: ['/data'] }, /mountpoints \(all\) \(this one: \/data\)/],
    ] as const) {
      const other = await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: { ...auth('backup'), 'idempotency-key': 'job-7' }, payload });
      expect(other.statusCode, other.body).toBe(409);
      expect(other.json()).toMatchObject({ code: 'LEASE_CONFLICT', leaseId: lease.leaseId });
      expect(other.json().detail).toMatch(differs);
    }
    expect(fleet.vm.vm1.stats.commandLog.filter((e) => e.command.startsWith('guest-fsfreeze-freeze')).length).toBe(freezesBefore);

    const r3 = await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: auth('other'), payload: {} });
    expect(r3.statusCode).toBe(409);
    expect(r3.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(r3.json()).toMatchObject({ code: 'LEASE_CONFLICT', holder: 'backup', expiresAt: lease.expiresAt, vm: 'vm1' });
    expect(r3.json().leaseId).toBeUndefined();

    const st = await app.inject({ method: 'GET', url: '/v1/vms/vm1/fsfreeze', headers: auth('reader') });
    expect(st.statusCode).toBe(200);
    expect(st.json()).toMatchObject({ status: 'frozen', leaseStore: 'ok', lease: { owner: 'backup', expired: false } });
    expect(st.json().lease.leaseId).toBeUndefined();

    const rn = await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze/renew', headers: auth('backup'), payload: { leaseId: lease.leaseId, ttlSeconds: 300 } });
    expect(rn.statusCode).toBe(200);
    expect(Date.parse(rn.json().expiresAt)).toBeGreaterThan(Date.parse(lease.expiresAt));

    const bad = await app.inject({ method: 'DELETE', url: `/v1/vms/vm1/fsfreeze?leaseId=not-mine`, headers: auth('backup') });
    expect(bad.statusCode).toBe(409);
    expect(bad.json().code).toBe('LEASE_CONFLICT');
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/vm1/fsfreeze', headers: auth('backup') })).statusCode).toBe(400);
    expect(fleet.vm.vm1.state.frozen).toBe(true);

    const th = await app.inject({ method: 'DELETE', url: `/v1/vms/vm1/fsfreeze?leaseId=${lease.leaseId}`, headers: auth('backup') });
    expect(th.statusCode).toBe(200);
    expect(th.json()).toMatchObject({ vm: 'vm1', thawed: lease.frozen, frozen: lease.frozen, consistent: true });
    expect(fleet.vm.vm1.state.frozen).toBe(false);
  });

  it('bad input is refused with 400/404 and nothing is frozen', async () => {
    fleet = await simFleet(['vm1']);
    await build();
    const cases: Array<[string, unknown, number]> = [
      ['/v1/vms/vm1/fsfreeze', { ttlSeconds: 0 }, 400],
      ['/v1/vms/vm1/fsfreeze', { ttlSeconds: 601 }, 400], // above freeze.maxTtlSeconds
      ['/v1/vms/vm1/fsfreeze', { ttlSeconds: 'ten' }, 400],
      ['/v1/vms/vm1/fsfreeze', { mountpoints: ['data'] }, 400],
      ['/v1/vms/vm1/fsfreeze', { mountpoints: [] }, 400],
      ['/v1/vms/vm1/fsfreeze', { never: true }, 400],
      ['/v1/vms/ghost/fsfreeze', {}, 404],
    ];
    for (const [url, payload, status] of cases) {
      const r = await app.inject({ method: 'POST', url, headers: auth('backup'), payload: payload as Record<string, unknown> });
      expect(r.statusCode, JSON.stringify(payload)).toBe(status);
      expect(r.json().code).toBe(status === 404 ? 'VM_NOT_FOUND' : 'VALIDATION_FAILED');
    }
    const g = await app.inject({ method: 'POST', url: '/v1/freeze-groups', headers: auth('backup'), payload: { vms: ['vm1', 'ghost'] } });
    expect(g.statusCode).toBe(404);
    expect(g.json()).toMatchObject({ code: 'VM_NOT_FOUND', missing: ['ghost'] });
    expect(fleet.vm.vm1.stats.commandLog.filter((c) => c.command.startsWith('guest-fsfreeze'))).toEqual([]);
    expect(fleet.vm.vm1.state.frozen).toBe(false);
  });

  it('scopes: read cannot freeze; force needs admin and is allowed to it', async () => {
    fleet = await simFleet(['vm1']);
    await build();
    expect((await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: auth('reader'), payload: {} })).statusCode).toBe(403);
    const lease = (await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: auth('backup'), payload: {} })).json();
    const denied = await app.inject({ method: 'DELETE', url: '/v1/vms/vm1/fsfreeze?force=true', headers: auth('other') });
    expect(denied.statusCode).toBe(403);
    expect(fleet.vm.vm1.state.frozen).toBe(true);
    const forced = await app.inject({ method: 'DELETE', url: '/v1/vms/vm1/fsfreeze?force=true', headers: auth('ops') });
    expect(forced.statusCode).toBe(200);
    expect(forced.json()).toMatchObject({ forced: true, thawed: lease.frozen });
    expect(fleet.vm.vm1.state.frozen).toBe(false);
  });

  it('freeze groups: 201, GET, DELETE; a failing member → every member thawed and reported', async () => {
    fleet = await simFleet(['db', 'app']);
    await build();
    const c = await app.inject({ method: 'POST', url: '/v1/freeze-groups', headers: auth('backup'), payload: { vms: ['db', 'app'], ttlSeconds: 30 } });
    expect(c.statusCode).toBe(201);
    const grp = c.json();
    expect(c.headers.location).toBe(`/v1/freeze-groups/${grp.id}`);
    const g = await app.inject({ method: 'GET', url: `/v1/freeze-groups/${grp.id}`, headers: auth('backup') });
    expect(g.json()).toMatchObject({ id: grp.id, lease: { leaseId: grp.leaseId }, vms: [{ vm: 'db', status: 'frozen' }, { vm: 'app', status: 'frozen' }] });
    const d = await app.inject({ method: 'DELETE', url: `/v1/freeze-groups/${grp.id}?leaseId=${grp.leaseId}`, headers: auth('backup') });
    expect(d.statusCode).toBe(200);
    expect(d.json()).toMatchObject({ id: grp.id, consistent: true });
    expect(fleet.vm.db.state.frozen || fleet.vm.app.state.frozen).toBe(false);

    fleet.vm.app.setFault({ command: 'guest-fsfreeze-freeze', kind: 'error', class: 'GenericError', desc: 'fsfreeze hook failed', times: 1 });
    const f = await app.inject({ method: 'POST', url: '/v1/freeze-groups', headers: auth('backup'), payload: { vms: ['db', 'app'] } });
    expect(f.statusCode).toBe(422);
    expect(f.json()).toMatchObject({ code: 'AGENT_ERROR', allThawed: true });
    expect(f.json().vms).toHaveLength(2);
    expect(fleet.vm.db.state.frozen || fleet.vm.app.state.frozen).toBe(false);
  });

  it('documents every freeze operation in OpenAPI with operationId and x-qga-command', async () => {
    fleet = await simFleet(['vm1']);
    await build();
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const op = (path: string, method: string) => doc.paths[path]?.[method];
    expect(op('/v1/vms/{vm}/fsfreeze', 'get')).toMatchObject({ operationId: 'getFsfreezeStatus', 'x-qga-command': 'guest-fsfreeze-status' });
    expect(op('/v1/vms/{vm}/fsfreeze', 'post')).toMatchObject({ operationId: 'freezeFilesystems', 'x-qga-command': ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list'] });
    expect(op('/v1/vms/{vm}/fsfreeze', 'delete')).toMatchObject({ operationId: 'thawFilesystems', 'x-qga-command': 'guest-fsfreeze-thaw' });
    expect(op('/v1/vms/{vm}/fsfreeze/renew', 'post')?.operationId).toBe('renewFreezeLease');
    expect(op('/v1/freeze-groups', 'post')?.operationId).toBe('createFreezeGroup');
    expect(op('/v1/freeze-groups/{id}', 'get')?.operationId).toBe('getFreezeGroup');
    expect(op('/v1/freeze-groups/{id}', 'delete')?.operationId).toBe('thawFreezeGroup');
    expect(op('/v1/freeze-groups/{id}/renew', 'post')?.operationId).toBe('renewFreezeGroup');
    expect(Object.keys(op('/v1/vms/{vm}/fsfreeze', 'post').responses)).toEqual(expect.arrayContaining(['201', '409', '503']));
  });
});

describe('fsfreeze over HTTP with Redis', () => {
  let redis: TestRedis;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('Redis down: freeze → 503 STORE_UNAVAILABLE without touching the agent; thaw → 200', async () => {
    fleet = await simFleet(['vm1', 'vm2']);
    await build({ store: { type: 'redis', redisUrl: redis.url, keyPrefix: 'h:', commandTimeoutMs: 500 } });
    await waitFor(async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200, 10_000, 'ready with Redis');
    const lease = (await app.inject({ method: 'POST', url: '/v1/vms/vm1/fsfreeze', headers: auth('backup'), payload: {} })).json();
    expect(lease.leaseId).toBeTruthy();
    await redis.kill();
    const f = await app.inject({ method: 'POST', url: '/v1/vms/vm2/fsfreeze', headers: auth('backup'), payload: {} });
    expect(f.statusCode).toBe(503);
    expect(f.json().code).toBe('STORE_UNAVAILABLE');
    expect(fleet.vm.vm2.stats.commandLog.filter((c) => c.command.startsWith('guest-fsfreeze'))).toEqual([]);
    const t = await app.inject({ method: 'DELETE', url: `/v1/vms/vm1/fsfreeze?leaseId=${lease.leaseId}`, headers: auth('backup') });
    expect(t.statusCode).toBe(200);
    expect(t.json()).toMatchObject({ leaseCheck: 'local', thawed: lease.frozen });
    expect(fleet.vm.vm1.state.frozen).toBe(false);
    await redis.restart({ empty: true });
  });
});
