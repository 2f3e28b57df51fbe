/**
 * Issue 17: the cluster's keys on a real 3-master Redis Cluster (test/helpers/redis-cluster.ts):
 * the membership MULTI and MGET stay in one slot (`{cluster}`), the ownership script in its VM's
 * (`{vm:<name>}`). Two cluster parts (ClusterNode, without HTTP) on the store's Cluster client:
 * they see each other, locate each other's VMs, and exactly one owns a VM reachable from both,
 * which moves to the other when its owner leaves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { ClusterNode } from '../../src/cluster/service.js';
import type { VmRecord } from '../../src/registry/types.js';
import { RedisStore } from '../../src/store/redis.js';
import { startRedisCluster, type TestRedisCluster } from '../helpers/redis-cluster.js';

let cluster: TestRedisCluster;
const stores: RedisStore[] = [];
const parts: ClusterNode[] = [];

function node(id: string, own: string[]): ClusterNode {
  const store = new RedisStore({ clusterNodes: cluster.nodes, keyPrefix: 'tp:', commandTimeoutMs: 1_000 });
  stores.push(store);
  const recs: VmRecord[] = [
    ...own.map((name) => ({ name, source: 'config' as const, endpoint: { type: 'unix' as const, path: `/run/${id}/${name}.sock` } })),
    { name: 'both-tcp', source: 'config' as const, endpoint: { type: 'tcp' as const, host: '10.9.9.9', port: 4000 } },
  ];
  const byName = new Map(recs.map((r) => [r.name, r]));
  const { client, keyPrefix } = store.connection;
  const part = new ClusterNode({
    settings: { id, advertiseUrl: `http://${id}.test:1`, heartbeatTtlMs: 1500, heartbeatIntervalMs: 250 },
    client,
    keyPrefix,
    registry: { resolve: (vm) => byName.get(vm)?.endpoint, list: async () => recs, servableApiVms: async (all) => new Set(all.filter((r) => r.source === 'api').map((r) => r.name)) },
    summaries: {
      fleetState: () => ({ agent: { state: 'up', since: '2026-01-01T00:00:00.000Z' } }),
      frozen: () => false,
      externalSince: () => undefined,
      channel: () => 'idle',
    },
    release: async () => undefined,
    version: 'test',
    logger: pino({ level: 'silent' }),
  });
  parts.push(part);
  return part;
}

async function until(what: string, fn: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  cluster = await startRedisCluster();
}, 30_000);

afterAll(async () => {
  for (const p of parts) await p.stop();
  for (const s of stores) await s.close();
  await cluster?.stop();
});

describe('cluster membership on a 3-master Redis Cluster', () => {
  it('two nodes see each other, locate each other\'s VMs, and one owns the shared TCP VM until it leaves', async () => {
    const a = node('a', ['a-1', 'a-2']);
    const b = node('b', ['b-1']);
    await Promise.all(stores.map((s) => s.ready(5_000)));
    await a.start();
    await b.start();
    await until('both see both', () => a.node('b')?.alive === true && b.node('a')?.alive === true);
    expect(a.locate('b-1')).toMatchObject({ kind: 'remote', node: { id: 'b' } });
    expect(b.locate('a-2')).toMatchObject({ kind: 'remote', node: { id: 'a' } });
    expect(a.staleSince).toBeUndefined();
    // a started first and claimed it; b finds it owned by a live node
    expect(a.locate('both-tcp')).toEqual({ kind: 'local' });
    await until('b sees a as the owner', () => b.locate('both-tcp').kind === 'remote');
    expect(() => b.assertMayConnect('both-tcp', { type: 'tcp', host: '10.9.9.9', port: 4000 })).toThrow(/node a holds its ownership lease/);
    // the directory keys live on one master, the ownership keys on the VM's
    const owner = await Promise.all(cluster.ports.map((p) => cluster.command(p, 'KEYS', 'tp:{vm:both-tcp}:owner')));
    expect(owner.filter((r) => r.includes('owner'))).toHaveLength(1);
    // a leaves cleanly: lease released, heartbeat deleted; b takes the VM at its next round
    const leftAt = Date.now();
    await a.stop();
    await until('b owns it', () => b.locate('both-tcp').kind === 'local', 3_000);
    expect(Date.now() - leftAt).toBeLessThan(1_000);
    expect(b.locate('a-1')).toMatchObject({ kind: 'gone', node: { id: 'a' } });
  }, 20_000);
});
