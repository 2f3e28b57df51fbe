/**
 * Paced refusals in cluster mode (limits.refusalHoldMs, src/http/error-handler.ts): a 429 on a
 * request another node forwarded (hop-signed) is answered at once by the serving node, so held
 * answers never occupy the entry node's connections to it, and held by the entry node, where the
 * client is connected (src/http/plugins/forward.ts); the same refusal asked of the serving node
 * directly is held there. Two in-process nodes on a real redis-server (cluster-rig.ts); B's VM hangs
 * on guest-ping (simulator fault), its wire and queue (agent.maxQueue 1) held full by two pings.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClusterRig, type ClusterRig, type RigNode } from './cluster-rig.js';
import { until } from './files-support.js';

const SECRET = `refusal-hold-cluster-secret-${'z'.repeat(24)}`;
const TOKEN = 'refusal-hold-cluster-token-0123456789';
const HOLD = 1_500;

let rig: ClusterRig;
let a: RigNode;
let b: RigNode;
const occupiers: Array<Promise<unknown>> = [];

async function ping(node: RigNode): Promise<{ status: number; code: unknown; retryAfter: string | null; ms: number }> {
  const t0 = performance.now();
  const r = await fetch(`${node.url}/v1/vms/b1/ping`, { headers: { authorization: `Bearer ${TOKEN}` } });
  const body = (await r.json()) as { code?: unknown };
  return { status: r.status, code: body.code, retryAfter: r.headers.get('retry-after'), ms: performance.now() - t0 };
}

beforeAll(async () => {
  rig = await startClusterRig({
    tag: 'rhc',
    secret: SECRET,
    tokens: [{ name: 'ops', token: TOKEN, scopes: ['read', 'write', 'admin'] }],
    nodes: { A: ['a1'], B: ['b1'] },
    config: { limits: { refusalHoldMs: HOLD }, agent: { maxQueue: 1, idleReleaseMs: 0, timeouts: { fast: 60_000 } }, server: { shutdownGraceMs: 200 } },
  });
  ({ A: a, B: b } = rig.nodes);
  const vm = b.vm.b1;
  vm.setFault({ command: 'guest-ping', kind: 'hang' });
  occupiers.push(ping(b).catch(() => undefined));
  await until(() => vm.stats.commandLog.some((c) => c.command === 'guest-ping'), 5_000, 'the hung ping on the wire');
  occupiers.push(ping(b).catch(() => undefined));
  await until(() => b.app.services.pool.stats().channels.some((c) => c.vm === 'b1' && c.queued === 1 && c.inFlight === 1), 5_000, 'a full queue');
}, 30_000);

afterAll(async () => {
  b?.vm.b1.clearFaults();
  await rig?.close();
});

describe('limits.refusalHoldMs in cluster mode', () => {
  it('a refusal on a forwarded request is answered at once by the serving node (not held there) and held by the entry node; asked directly it is held', async () => {
    const heldBefore = b.app.refusals.heldTotal;
    const answered: number[] = [];
    const viaP = ping(a).then((r) => {
      answered.push(performance.now());
      return r;
    });
    // the serving node's answer reached the entry node at once: held there, not at b
    await until(() => a.app.refusals.size === 1, HOLD / 2, 'the relayed refusal held by the entry node');
    expect(b.app.refusals.heldTotal).toBe(heldBefore);
    expect(b.app.refusals.size).toBe(0);
    expect(answered).toEqual([]);
    const via = await viaP;
    expect(via).toMatchObject({ status: 429, code: 'QUEUE_FULL', retryAfter: '1' });
    expect(via.ms).toBeGreaterThanOrEqual(HOLD - 10);
    expect(via.ms).toBeLessThan(HOLD + 1_000);
    expect(a.app.refusals.heldTotal).toBe(1);
    expect(a.app.refusals.size).toBe(0);
    expect(b.app.refusals.heldTotal).toBe(heldBefore);

    const direct = await ping(b);
    expect(direct).toMatchObject({ status: 429, code: 'QUEUE_FULL', retryAfter: '1' });
    expect(direct.ms).toBeGreaterThanOrEqual(HOLD - 10);
    expect(direct.ms).toBeLessThan(HOLD + 1_000);
    expect(b.app.refusals.heldTotal).toBe(heldBefore + 1);
  });
});
