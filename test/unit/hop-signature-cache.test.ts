import { describe, expect, it } from 'vitest';
import { FORWARD_SIGNATURE_REUSE_MS, HOP_WINDOW_MS, SIGNATURE_HEADER, signForward, signHop, verifyHop, type HopPrincipal } from '../../src/cluster/hop.js';

const SECRET = 'x'.repeat(40);
const reader: HopPrincipal = { name: 'reader', scopes: ['read'] };

describe('forward signatures: reused by the entry node, verified once by the serving node (issue 17 item 6)', () => {
  it('reuses a signature for the same principal, method and URL within FORWARD_SIGNATURE_REUSE_MS only', () => {
    const t = 1_700_000_000_000;
    const parts = { method: 'GET', url: '/v1/vms/c001/ping', entryNode: 'a', principal: reader };
    const first = signForward(SECRET, parts, t);
    expect(signForward(SECRET, parts, t + FORWARD_SIGNATURE_REUSE_MS - 1)).toBe(first);
    expect(signForward(SECRET, parts, t + FORWARD_SIGNATURE_REUSE_MS)[SIGNATURE_HEADER]).not.toBe(first[SIGNATURE_HEADER]);
    expect(signForward(SECRET, { ...parts, url: '/v1/vms/c002/ping' }, t)[SIGNATURE_HEADER]).not.toBe(first[SIGNATURE_HEADER]);
    expect(signForward(SECRET, { ...parts, method: 'POST' }, t)[SIGNATURE_HEADER]).not.toBe(first[SIGNATURE_HEADER]);
    expect(signForward(SECRET, { ...parts, principal: { name: 'writer', scopes: ['write'] } }, t)[SIGNATURE_HEADER]).not.toBe(first[SIGNATURE_HEADER]);
    expect(signForward('y'.repeat(40), parts, t)[SIGNATURE_HEADER]).not.toBe(first[SIGNATURE_HEADER]);
    // a reused signature is one signHop would have made at its time
    expect(first).toEqual(signHop(SECRET, { ...parts, purpose: 'forward', now: t }));
  });

  it('a signature verified before still binds everything it covers and its time window', () => {
    const t = Date.now();
    const h = signHop(SECRET, { method: 'GET', url: '/v1/vms/c001/ping', entryNode: 'a', principal: reader, now: t });
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/c001/ping', t)?.principal.name).toBe('reader');
    // cached now: the same signature over other inputs is still refused
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/c001/ping', t)?.entryNode).toBe('a');
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/c002/ping', t)).toBeUndefined();
    expect(verifyHop(SECRET, h, 'POST', '/v1/vms/c001/ping', t)).toBeUndefined();
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/c001/ping', t, 'agent-call')).toBeUndefined();
    expect(verifyHop(SECRET, { ...h, 'x-qga-hop': 'b' }, 'GET', '/v1/vms/c001/ping', t)).toBeUndefined();
    expect(verifyHop('y'.repeat(40), h, 'GET', '/v1/vms/c001/ping', t)).toBeUndefined();
    const admin = signHop(SECRET, { method: 'GET', url: '/v1/vms/c001/ping', entryNode: 'a', principal: { name: 'admin', scopes: ['admin'] }, now: t });
    expect(verifyHop(SECRET, { ...h, 'x-qga-principal': admin['x-qga-principal'] }, 'GET', '/v1/vms/c001/ping', t)).toBeUndefined();
    // out of the window: refused though verified before
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/c001/ping', t + HOP_WINDOW_MS + 1)).toBeUndefined();
  });
});

describe("the carried principal of any token the config accepts fits what the serving node reads", () => {
  it('the largest one (a 64-character name, every scope, 64 globs of 128 characters) verifies; the config refuses one more glob or a longer one', async () => {
    const { buildConfig } = await import('../../src/config/load.js');
    const { MAX_TOKEN_GLOBS, MAX_TOKEN_GLOB } = await import('../../src/config/schema.js');
    const globs = Array.from({ length: MAX_TOKEN_GLOBS }, (_, i) => `${String(i).padStart(2, '0')}${'x'.repeat(MAX_TOKEN_GLOB - 3)}*`);
    const token = (vms: string[]) => ({ auth: { tokens: [{ name: 'n'.repeat(64), token: 't'.repeat(32), scopes: ['read', 'write', 'admin'], vms }] } });
    // the config takes the largest, and refuses past it
    expect(buildConfig(token(globs)).auth.tokens[0].vms).toHaveLength(MAX_TOKEN_GLOBS);
    expect(() => buildConfig(token([...globs, 'y*']))).toThrow(/auth\.tokens\.0\.vms/);
    expect(() => buildConfig(token([`${'z'.repeat(MAX_TOKEN_GLOB)}*`]))).toThrow(/auth\.tokens\.0\.vms\.0/);
    const largest: HopPrincipal = { name: 'n'.repeat(64), scopes: ['read', 'write', 'admin'], vms: globs };
    const t = Date.now();
    const h = signHop(SECRET, { method: 'GET', url: '/v1/vms/c001/ping', entryNode: 'a', principal: largest, now: t });
    expect(verifyHop(SECRET, h, 'GET', '/v1/vms/c001/ping', t)?.principal.vms).toEqual(globs);
  });
});
