/** src/cluster/hop.ts: signed node-to-node calls (the forwarding suite uses them end to end). */
import { describe, expect, it } from 'vitest';
import { HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER, signHop, verifyHop } from '../../src/cluster/hop.js';

const SECRET = 'a-shared-secret-of-at-least-32-characters';
const principal = { name: 'ops', scopes: ['read', 'write'], vms: ['web-*'] };

describe('hop signature', () => {
  it('verifies what it signed: entry node and principal with its globs', () => {
    const h = signHop(SECRET, { method: 'GET', url: '/v1/vms/web-1/ping', entryNode: 'node-a', principal, now: 1_000_000 });
    expect(Object.keys(h).sort()).toEqual([HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER].sort());
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/web-1/ping', 1_000_000)).toEqual({ entryNode: 'node-a', principal });
    expect(verifyHop(SECRET, h, 'get', '/v1/vms/web-1/ping', 1_059_999)?.entryNode).toBe('node-a');
  });

  it('refuses another secret, method, URL, node, principal, or a time outside ±60 s', () => {
    const h = signHop(SECRET, { method: 'POST', url: '/v1/vms/a/exec?x=1', entryNode: 'n1', principal, now: 5_000_000 });
    const ok = (headers: Record<string, string>, m = 'POST', u = '/v1/vms/a/exec?x=1', now = 5_000_000) => verifyHop(SECRET, headers, m, u, now) !== undefined;
    expect(ok(h)).toBe(true);
    expect(verifyHop(`${SECRET}x`, h, 'POST', '/v1/vms/a/exec?x=1', 5_000_000)).toBeUndefined();
    expect(ok(h, 'PUT')).toBe(false);
    expect(ok(h, 'POST', '/v1/vms/b/exec?x=1')).toBe(false);
    expect(ok({ ...h, [HOP_HEADER]: 'n2' })).toBe(false);
    const admin = Buffer.from(JSON.stringify({ name: 'ops', scopes: ['admin'] })).toString('base64url');
    expect(ok({ ...h, [PRINCIPAL_HEADER]: admin })).toBe(false);
    expect(ok(h, 'POST', '/v1/vms/a/exec?x=1', 5_060_001)).toBe(false);
    expect(ok(h, 'POST', '/v1/vms/a/exec?x=1', 4_939_999)).toBe(false);
    expect(ok({ ...h, [SIGNATURE_HEADER]: 'garbage' })).toBe(false);
    const { [SIGNATURE_HEADER]: _s, ...unsigned } = h;
    expect(ok(unsigned)).toBe(false);
  });

  it('refuses a validly signed principal of an unknown scope', () => {
    const h = signHop(SECRET, { method: 'GET', url: '/x', entryNode: 'n', principal: { name: 'p', scopes: ['root'] }, now: 1 });
    expect(verifyHop(SECRET, h, 'GET', '/x', 1)).toBeUndefined();
  });
});
