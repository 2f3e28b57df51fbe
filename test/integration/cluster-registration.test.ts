/**
 * Cluster mode and API registration (POST /v1/vms): no registration makes a second name for a VM
 * another node serves (h10 F4). Two in-process gateways on one real redis-server, each with its own
 * simulator folder: node a (roots: its own folder AND b's, as an operator may set
 * registry.allowedSocketRoots) and node b (the default roots: its own folder). A registration is
 * checked by the node it enters against the endpoints the other nodes publish, and a registration
 * already in the store (made through a node that had not read them yet) is served by no node whose
 * own VM, or whose directory's VM of another name, uses that endpoint.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Simulator } from '../../sim/index.js';
import { buildApp } from '../../src/app.js';
import type { ClusterService } from '../../src/cluster/directory.js';
import type { Endpoint } from '../../src/qga/types.js';
import { VmRegistry } from '../../src/registry/registry.js';
import type { VmRecord } from '../../src/registry/types.js';
import { testConfig } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';

const dir = mkdtempSync(join(tmpdir(), 'qga-cluster-reg-'));
const dirA = join(dir, 'a');
const dirB = join(dir, 'b');
mkdirSync(dirA);
mkdirSync(dirB);
const secretFile = join(dir, 'cluster.secret');
writeFileSync(secretFile, 'cluster-secret-0123456789abcdef0123456789', { mode: 0o600 });
const simA = new Simulator({ dir: dirA });
const simB = new Simulator({ dir: dirB });
let redis: TestRedis;

interface Node {
  app: FastifyInstance;
  cluster: ClusterService;
  logs: Array<Record<string, unknown>>;
}
const nodes: Record<string, Node> = {};
let b1: Endpoint;
let spare: Endpoint;

async function startNode(id: string, vms: Array<{ name: string; endpoint: Endpoint }>, registry: Record<string, unknown>): Promise<Node> {
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const config = testConfig({
    vms,
    config: {
      store: { type: 'redis', redisUrl: redis.url, keyPrefix: 'creg:', commandTimeoutMs: 1_000 },
      cluster: { enabled: true, id, advertiseUrl: `http://${id}.cluster.test:8080`, secretFile, heartbeatTtlMs: 1_500, heartbeatIntervalMs: 250 },
      registry,
    },
  });
  const app = await buildApp({ config, logger, env: {} });
  await app.ready();
  const cluster = app.services.cluster;
  if (!cluster) throw new Error('cluster mode is off');
  return (nodes[id] = { app, cluster, logs });
}

async function until(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  redis = await startRedis();
  const a1 = (await simA.addVm({ name: 'a1' })).endpoint;
  b1 = (await simB.addVm({ name: 'b1' })).endpoint;
  spare = (await simB.addVm({ name: 'spare' })).endpoint;
  await startNode('a', [{ name: 'a1', endpoint: a1 }], { allowedSocketRoots: [dirA, dirB] });
  await startNode('b', [{ name: 'b1', endpoint: b1 }], {});
  await until('each node to see the other', () => nodes.a.cluster.locate('b1').kind === 'remote' && nodes.b.cluster.locate('a1').kind === 'remote');
}, 30_000);

afterAll(async () => {
  for (const n of Object.values(nodes)) await n.app.close();
  await simA.close();
  await simB.close();
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('API registration in a cluster', () => {
  it("is refused through a node that can reach another node's VM socket: 409 ENDPOINT_IN_USE naming that VM", async () => {
    const r = await nodes.a.app.inject({ method: 'POST', url: '/v1/vms', payload: { name: 'alias', endpoint: b1 } });
    expect(r.statusCode, r.body).toBe(409);
    expect(r.json()).toMatchObject({ code: 'ENDPOINT_IN_USE' });
    expect(r.body).toContain('b1');
    // a socket nobody serves is registered, and served by one node
    const ok = await nodes.a.app.inject({ method: 'POST', url: '/v1/vms', payload: { name: 'spare-vm', endpoint: spare } });
    expect(ok.statusCode, ok.body).toBe(201);
    await until('spare-vm served', () => ['a', 'b'].some((id) => nodes[id].cluster.locate('spare-vm').kind === 'local'));
  });

  it("a registration of another node's VM socket already in the store (made before the directory knew) is served by no node", async () => {
    // as a node that had not read b's VMs yet would have stored it
    expect(await nodes.a.app.services.store.putVm({ name: 'alias2', endpoint: b1 })).toBe(true);
    await until('both nodes to have read it', async () => (await nodes.a.app.services.registry.lookup('alias2')) !== undefined && (await nodes.b.app.services.registry.lookup('alias2')) !== undefined);
    // several rounds (250 ms each): nobody claims it
    await new Promise((r) => setTimeout(r, 1_500));
    for (const id of ['a', 'b']) expect(nodes[id].cluster.locate('alias2').kind, `node ${id}`).not.toBe('local');
    const ping = await nodes.b.app.inject({ method: 'GET', url: '/v1/vms/alias2/ping' });
    expect(ping.statusCode).not.toBe(200);
    // each node said why, once
    expect(nodes.b.logs.filter((l) => String(l.msg).startsWith('registry: the API-registered VM alias2 uses the endpoint of VM b1'))).toHaveLength(1);
    expect(nodes.a.logs.filter((l) => String(l.msg).startsWith('registry: the API-registered VM alias2 uses the endpoint of VM b1'))).toHaveLength(1);
  });
});

describe('VmRegistry.servableApiVms (the serving side, without a cluster)', () => {
  it("refuses an API record on one of the node's own VM sockets or outside its roots, serves the others", async () => {
    const registry = new VmRegistry({ vms: [{ name: 'own', endpoint: b1 }], registry: { directories: [], allowApiRegistration: true, allowedTcpEndpoints: [] } } as never);
    const api = (name: string, endpoint: Endpoint): VmRecord => ({ name, endpoint, source: 'api' });
    const servable = await registry.servableApiVms([api('alias', b1), api('free', spare), api('outside', { type: 'unix', path: join(dir, 'elsewhere.sock') }), { name: 'own', endpoint: b1, source: 'config' }]);
    expect([...servable]).toEqual(['free']);
  });
});
