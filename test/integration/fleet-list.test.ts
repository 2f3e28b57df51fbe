/**
 * Issue 15 item 2: GET /v1/vms a page at a time (limit, opaque cursor stable while VMs come and
 * go), filtered by label, agent state and capability, always within the caller's VM globs; and
 * GET /v1/freezes and GET /v1/freeze-groups (lease owner, deadline, leaseId only to its owner
 * and admin, groups only when every member is visible, VMs frozen outside the gateway as
 * "external"). Agents are simulator VMs; the 10,000-VM fleet is TCP endpoints nobody dials.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Simulator } from '../../sim/index.js';
import { makeApp } from '../helpers/app.js';

const dir = mkdtempSync(join(tmpdir(), 'qga-fleet-'));
const sim = new Simulator({ dir });
const TOKENS = [
  { name: 'admin', token: 'admin-token-0123456789abcdef', scopes: ['read', 'write', 'admin'] },
  { name: 'alice', token: 'alice-token-0123456789abcdef', scopes: ['read', 'write'] },
  { name: 'bob', token: 'bob-token-0123456789abcdef0', scopes: ['read', 'write'] },
  { name: 'webreader', token: 'webr-token-0123456789abcdef', scopes: ['read'], vms: ['web-*'] },
  { name: 'areader', token: 'area-token-0123456789abcdef', scopes: ['read'], vms: ['sim-a'] },
];
const as = (name: string) => ({ authorization: `Bearer ${TOKENS.find((t) => t.name === name)?.token}` });
let app: FastifyInstance;

// 24 config VMs: web-00..web-11 (env=prod on even numbers) and db-00..db-11, on TCP ports nobody dials
const CONFIG_VMS = ['web', 'db'].flatMap((kind) =>
  Array.from({ length: 12 }, (_, i) => ({
    name: `${kind}-${String(i).padStart(2, '0')}`,
    endpoint: { type: 'tcp' as const, host: '127.0.0.1', port: 9 },
    labels: { kind, ...(i % 2 === 0 ? { env: 'prod' } : {}) },
  })),
);

beforeAll(async () => {
  await Promise.all([
    sim.addVm({ name: 'sim-a' }),
    sim.addVm({ name: 'sim-b', disabled: ['guest-exec'] }),
    sim.addVm({ name: 'web-sim' }),
    sim.addVm({ name: 'sim-ext', frozen: true }),
  ]);
  const simVms = sim.list().map((v) => ({ name: v.name, endpoint: v.endpoint }));
  app = await makeApp({
    vms: [...CONFIG_VMS, ...simVms],
    config: { auth: { tokens: TOKENS, anonymousScopes: [] }, registry: { allowedTcpEndpoints: ['127.0.0.1:*'] }, agent: { probeIntervalMs: 0 } },
  });
});

afterAll(async () => {
  await app?.close();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

async function page(url: string, who = 'admin'): Promise<{ items: Array<{ name: string; labels?: Record<string, string>; endpoint?: unknown }>; next: string | null }> {
  const r = await app.inject({ method: 'GET', url, headers: as(who) });
  expect(r.statusCode, r.body).toBe(200);
  return r.json();
}

async function all(query: string, who = 'admin', limit = 5): Promise<string[]> {
  const names: string[] = [];
  let next: string | null = null;
  for (let n = 0; n < 100; n++) {
    const p = await page(`/v1/vms?limit=${limit}${query}${next ? `&cursor=${next}` : ''}`, who);
    expect(p.items.length).toBeLessThanOrEqual(limit);
    names.push(...p.items.map((v) => v.name));
    next = p.next;
    if (next === null) return names;
  }
  throw new Error('paging did not end');
}

describe('GET /v1/vms: pages, cursor, filters', () => {
  it('answers {items, next}: 100 by default, every VM once in name order, next null on the last page', async () => {
    const first = await page('/v1/vms');
    expect(first.items).toHaveLength(28);
    expect(first.next).toBeNull();
    const names = first.items.map((v) => v.name);
    expect(names).toEqual([...names].sort());
    expect(await all('', 'admin', 5)).toEqual(names);
    expect(await all('', 'admin', 1)).toEqual(names);
  });

  it('a cursor survives VMs registered and deregistered between pages: none repeated, none skipped', async () => {
    const p1 = await page('/v1/vms?limit=10');
    expect(p1.items.map((v) => v.name)).toEqual([...CONFIG_VMS.map((v) => v.name).filter((n) => n.startsWith('db-')).slice(0, 10)]);
    let port = 10_000;
    const reg = (name: string) => app.inject({ method: 'POST', url: '/v1/vms', headers: as('admin'), payload: { name, endpoint: { type: 'tcp', host: '127.0.0.1', port: ++port } } });
    // one before the cursor (never seen), one after it (seen on a later page)
    expect((await reg('aaa-new')).statusCode).toBe(201);
    expect((await reg('zzz-new')).statusCode).toBe(201);
    const rest: string[] = [];
    let next = p1.next;
    while (next !== null) {
      const p = await page(`/v1/vms?limit=10&cursor=${next}`);
      rest.push(...p.items.map((v) => v.name));
      next = p.next;
      if (rest.length === 10) expect((await app.inject({ method: 'DELETE', url: '/v1/vms/zzz-new', headers: as('admin') })).statusCode).toBe(204);
    }
    expect(rest[0]).toBe('db-10');
    expect(rest).not.toContain('aaa-new');
    expect(new Set([...p1.items.map((v) => v.name), ...rest]).size).toBe(p1.items.length + rest.length);
    expect(rest).not.toContain('zzz-new');
    expect((await app.inject({ method: 'DELETE', url: '/v1/vms/aaa-new', headers: as('admin') })).statusCode).toBe(204);
  });

  it('label filters (repeatable, all must match) and the caller’s VM globs', async () => {
    expect(await all('&label=env=prod')).toEqual(CONFIG_VMS.filter((v) => v.labels.env === 'prod').map((v) => v.name).sort());
    expect(await all('&label=env=prod&label=kind=web')).toEqual(['web-00', 'web-02', 'web-04', 'web-06', 'web-08', 'web-10']);
    expect(await all('&label=kind=nope')).toEqual([]);
    // a key that names an inherited member of a plain object is just a label nobody has (was a 500)
    for (const key of ['toString', 'valueOf', 'constructor', '__proto__', 'hasOwnProperty']) expect(await all(`&label=${key}=x`), key).toEqual([]);
    // a token limited to web-*: only those, on every page, and no endpoint (not admin)
    const seen = await all('', 'webreader', 4);
    expect(seen).toEqual([...CONFIG_VMS.filter((v) => v.name.startsWith('web-')).map((v) => v.name), 'web-sim'].sort());
    const p = await page('/v1/vms?limit=3', 'webreader');
    for (const v of p.items) expect(v).not.toHaveProperty('endpoint');
    expect((await page('/v1/vms?limit=1', 'admin')).items[0].endpoint).toEqual({ type: 'tcp', host: '127.0.0.1', port: 9 });
  });

  it('state and capability filters use the agent state kept from calls', async () => {
    // one failed connect marks db-00 down; a sync with sim-a and sim-b marks them up and caches guest-info
    expect((await app.inject({ method: 'GET', url: '/v1/vms/db-00/ping', headers: as('admin') })).statusCode).toBe(503);
    for (const vm of ['sim-a', 'sim-b']) expect((await app.inject({ method: 'GET', url: `/v1/vms/${vm}/agent`, headers: as('admin') })).statusCode).toBe(200);
    expect(await all('&state=down')).toEqual(['db-00']);
    expect(await all('&state=up')).toEqual(['sim-a', 'sim-b']);
    expect(await all('&capability=guest-exec')).toEqual(['sim-a']);
    expect(await all('&state=up&capability=guest-exec', 'webreader')).toEqual([]);
  });

  it('refuses a limit over 1,000, a limit of 0, a forged cursor and an unknown parameter with 400 VALIDATION_FAILED', async () => {
    for (const q of ['limit=1001', 'limit=0', `cursor=${Buffer.from('x:web-01').toString('base64url')}`, 'cursor=%2F%2F', 'labels=env=prod', 'state=sleeping']) {
      const r = await app.inject({ method: 'GET', url: `/v1/vms?${q}`, headers: as('admin') });
      expect(r.statusCode, q).toBe(400);
      expect(r.json().code, q).toBe('VALIDATION_FAILED');
    }
  });
});

describe('GET /v1/freezes and GET /v1/freeze-groups', () => {
  it('lists VM and group leases with owner and deadline; leaseId to owner and admin only; groups only when every VM is visible; external freezes', async () => {
    const f = await app.inject({ method: 'POST', url: '/v1/vms/web-sim/fsfreeze', headers: as('alice'), payload: { ttlSeconds: 60 } });
    expect(f.statusCode, f.body).toBe(201);
    const g = await app.inject({ method: 'POST', url: '/v1/freeze-groups', headers: as('bob'), payload: { vms: ['sim-a', 'sim-b'], ttlSeconds: 120 } });
    expect(g.statusCode, g.body).toBe(201);
    // reading sim-ext's status shows it frozen with no lease of ours: an external freeze
    expect((await app.inject({ method: 'GET', url: '/v1/vms/sim-ext/fsfreeze', headers: as('admin') })).statusCode).toBe(200);
    try {
      const list = async (who: string) => {
        const r = await app.inject({ method: 'GET', url: '/v1/freezes', headers: as(who) });
        expect(r.statusCode, r.body).toBe(200);
        return r.json().freezes as Array<Record<string, unknown>>;
      };
      const admin = await list('admin');
      expect(admin.map((e) => e.vm ?? e.group)).toEqual(['web-sim', g.json().id, 'sim-ext']);
      expect(admin[0]).toMatchObject({ vm: 'web-sim', vms: ['web-sim'], owner: 'alice', leaseId: f.json().leaseId, state: 'frozen', expired: false });
      const left = Date.parse(admin[0].expiresAt as string) - Date.parse(admin[0].frozenAt as string);
      expect(left).toBeGreaterThanOrEqual(59_000);
      expect(left).toBeLessThanOrEqual(60_000);
      expect(admin[1]).toMatchObject({ group: g.json().id, vms: ['sim-a', 'sim-b'], owner: 'bob', leaseId: g.json().leaseId });
      expect(admin[2]).toEqual({ vm: 'sim-ext', vms: ['sim-ext'], owner: 'external', state: 'frozen', frozenAt: expect.any(String) });
      const alice = await list('alice');
      expect(alice[0].leaseId).toBe(f.json().leaseId);
      expect(alice[1]).not.toHaveProperty('leaseId');
      // web-* only: its own VM's freeze, without the lease id; not bob's group (sim-a, sim-b are outside), not sim-ext
      const web = await list('webreader');
      expect(web).toHaveLength(1);
      expect(web[0]).toMatchObject({ vm: 'web-sim', owner: 'alice' });
      expect(web[0]).not.toHaveProperty('leaseId');
      // sim-a only: its VM frozen by bob's group is listed, without the group's id or its other VM
      const a = await list('areader');
      expect(a).toEqual([{ vms: ['sim-a'], partOfGroup: true, owner: 'bob', state: 'frozen', frozenAt: expect.any(String), expiresAt: g.json().expiresAt, hardDeadline: expect.any(String), expired: false }]);
      expect(JSON.stringify(a)).not.toContain('sim-b');
      expect(JSON.stringify(a)).not.toContain(g.json().id);

      const groups = async (who: string) => (await app.inject({ method: 'GET', url: '/v1/freeze-groups', headers: as(who) })).json().groups as Array<Record<string, unknown>>;
      const ga = await groups('admin');
      expect(ga).toEqual([expect.objectContaining({ id: g.json().id, vms: ['sim-a', 'sim-b'], owner: 'bob', leaseId: g.json().leaseId, expiresAt: g.json().expiresAt, expired: false })]);
      expect((await groups('alice'))[0]).not.toHaveProperty('leaseId');
      expect(await groups('webreader')).toEqual([]);
    } finally {
      await app.inject({ method: 'DELETE', url: `/v1/vms/web-sim/fsfreeze?leaseId=${f.json().leaseId}`, headers: as('alice') });
      await app.inject({ method: 'DELETE', url: `/v1/freeze-groups/${g.json().id}?leaseId=${g.json().leaseId}`, headers: as('bob') });
    }
    const after = (await app.inject({ method: 'GET', url: '/v1/freezes', headers: as('admin') })).json().freezes as Array<Record<string, unknown>>;
    expect(after.map((e) => e.vm)).toEqual(['sim-ext']);
  });
});

describe('10,000 VMs', () => {
  it('a page of 1,000 in under 100 ms and the whole fleet paged through in under 1 s', async () => {
    const vms = Array.from({ length: 10_000 }, (_, i) => ({ name: `vm-${String(i).padStart(5, '0')}`, endpoint: { type: 'tcp' as const, host: '127.0.0.1', port: 9 } }));
    const big = await makeApp({ vms, config: { agent: { probeIntervalMs: 0 } } });
    try {
      const t0 = performance.now();
      let next: string | null = null;
      let count = 0;
      const pageMs: number[] = [];
      do {
        const p0 = performance.now();
        const r = await big.inject({ method: 'GET', url: `/v1/vms?limit=1000${next ? `&cursor=${next}` : ''}` });
        pageMs.push(performance.now() - p0);
        const body = r.json() as { items: Array<{ name: string }>; next: string | null };
        expect(body.items).toHaveLength(1000);
        expect(body.items[0].name).toBe(`vm-${String(count).padStart(5, '0')}`);
        count += body.items.length;
        next = body.next;
      } while (next !== null);
      const total = performance.now() - t0;
      expect(count).toBe(10_000);
      pageMs.sort((a, b) => a - b);
      // the median page: the first pays for JIT warm-up
      expect(pageMs[5]).toBeGreaterThan(0);
      expect(pageMs[5]).toBeLessThan(100);
      expect(total).toBeGreaterThan(0);
      expect(total).toBeLessThan(1_000);
    } finally {
      await big.close();
    }
  }, 60_000);
});
