/**
 * Two nodes whose cluster.secretFile differ (a misconfiguration, h12 F2): the serving node refuses
 * the entry node's signature with 401, which is about the nodes, never the client's credentials.
 * The client gets 503 NODE_UNAVAILABLE naming the misconfiguration (`sent: false`, X-Qga-Node), not
 * 401 UNAUTHENTICATED, and the entry node does not audit it as denied; a group freeze with a member
 * there fails the same way and its other member is rolled back. Each node tells of the other at
 * once by the tags of the secrets they publish (an error line; GET /v1/nodes sameSecret: false).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClusterRig, type ClusterRig } from './cluster-rig.js';

const TOKEN = 'ops-token-0123456789abcdef0123';
let rig: ClusterRig;

beforeAll(async () => {
  rig = await startClusterRig({
    tag: 'cmis',
    secret: `the-cluster-secret-of-at-least-32-chars-${'a'.repeat(8)}`,
    ownSecret: { B: `another-secret-of-at-least-32-characters-${'b'.repeat(8)}` },
    tokens: [{ name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] }],
    nodes: { A: ['a1'], B: ['b1'] },
  });
});
afterAll(async () => {
  await rig?.close();
});

async function call(url: string, method = 'GET', body?: unknown): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

describe('nodes whose cluster secrets differ', () => {
  it('a forwarded request is 503 NODE_UNAVAILABLE naming the misconfiguration, not 401; the client is not audited as denied', async () => {
    const { A } = rig.nodes;
    const r = await call(`${A.url}/v1/vms/b1/ping`);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ code: 'NODE_UNAVAILABLE', node: 'B', vm: 'b1', sent: false });
    expect(String(r.body.detail)).toMatch(/refused this node's signed request \(401\): cluster\.secretFile differs/);
    expect(r.headers.get('x-qga-node')).toBe('B');
    expect(r.headers.get('www-authenticate')).toBeNull();
    expect(A.audits.filter((a) => a.action === 'denied' && a.by === 'ops')).toEqual([]);
    // B says why, in its own audit record
    expect(rig.nodes.B.audits.some((a) => a.action === 'hop-refused')).toBe(true);
    // A's own VM answers
    expect((await call(`${A.url}/v1/vms/a1/ping`)).status).toBe(200);
  });

  it('each node says so at once: one error line naming the other node, and GET /v1/nodes sameSecret: false', async () => {
    const { A, B } = rig.nodes;
    const told = (n: typeof A, other: string) => n.warnings.filter((w) => w.node === other && String(w.msg).includes('signs with another cluster secret'));
    expect(told(A, 'B')).toHaveLength(1);
    expect(told(B, 'A')).toHaveLength(1);
    const nodesSeen = await call(`${A.url}/v1/nodes`);
    const items = nodesSeen.body.items as Array<{ id: string; self: boolean; sameSecret?: boolean }>;
    expect(items.find((n) => n.id === 'B')?.sameSecret).toBe(false);
    expect(items.find((n) => n.id === 'A')).not.toHaveProperty('sameSecret');
    // told once, not at every heartbeat round
    await new Promise((r) => setTimeout(r, 500));
    expect(told(A, 'B')).toHaveLength(1);
  });

  it("a group freeze with a member on that node fails the same way; nothing stays frozen", async () => {
    const { A, B } = rig.nodes;
    const r = await call(`${A.url}/v1/freeze-groups`, 'POST', { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect(r.status).toBe(503);
    expect(r.body.code).toBe('NODE_UNAVAILABLE');
    expect(JSON.stringify(r.body)).toMatch(/refused this node's signed request \(401\)/);
    expect([A.vm.a1.state.frozen, B.vm.b1.state.frozen]).toEqual([false, false]);
  });
});
