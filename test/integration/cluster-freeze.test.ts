/**
 * Freeze across the cluster (issue 17 item 4): in-process gateways in cluster mode on ONE real
 * redis-server, each with its own simulated VMs (never the real qemu-ga), over real HTTP.
 *  - a group with members on two nodes: frozen through A (each member's freeze runs on its own
 *    node, which writes its audit records with A's principal and request id), listed, renewed and
 *    thawed through B;
 *  - a group's deadline thaw with members on two nodes;
 *  - the serving node gone at the deadline: the thaw is not lost, it is retried when the node returns;
 *    the members thawed meanwhile leave the group's lease and can be frozen again;
 *  - a node that restarts reconciles the overdue leases at start (its VM thawed before any sweep);
 *  - the internal endpoint: a forged or tampered call is 401, a fenced-out one 409, and nothing
 *    reaches the agent;
 *  - a group member refused or unreachable on its node: the same answer as there, nothing left locked;
 *  - a single-VM freeze taken through A and thawed through B (by forwarding).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { signHop } from '../../src/cluster/hop.js';
import { agentCallPath, bodyDigest } from '../../src/cluster/agent-call.js';
import { groupKey } from '../../src/store/types.js';
import type { SimAgent } from '../../sim/agent.js';
import type { SimVmOptions } from '../../sim/types.js';
import { Simulator } from '../../sim/simulator.js';
import { testConfig } from '../helpers/app.js';
import { startRedis, type TestRedis } from '../helpers/redis.js';
import { freePort } from '../e2e/freeze-gateways.js';
import { agentCommands, waitFor } from './freeze-fixture.js';

const SECRET = `cluster-freeze-test-secret-${'x'.repeat(24)}`;
const TOKENS = { backup: 'backup-token-0123456789abcdef', ops: 'ops-token-0123456789abcdef01' };
const auth = (t: string, more: Record<string, string> = {}): Record<string, string> => ({ authorization: `Bearer ${t}`, ...more });

interface TestNode {
  id: string;
  url: string;
  vm: Record<string, SimAgent>;
  app?: FastifyInstance;
  /** the audit records this node wrote (pino lines with audit: true) */
  audit: Array<Record<string, unknown>>;
  start(freeze?: Record<string, unknown>): Promise<void>;
  /** graceful close; with handoverOnShutdown its leases stay in Redis (a node that went away) */
  stop(): Promise<void>;
}

let redis: TestRedis | undefined;
let dir: string | undefined;
const sims: Simulator[] = [];
const nodes: TestNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const s of sims.splice(0)) await s.close();
  await redis?.stop();
  redis = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function cluster(spec: Record<string, Array<string | SimVmOptions>>, freeze: Record<string, unknown> = {}): Promise<TestNode[]> {
  redis = await startRedis();
  dir = await mkdtemp(path.join(os.tmpdir(), 'qga-cfreeze-'));
  const secretFile = path.join(dir, 'secret');
  await writeFile(secretFile, SECRET, { mode: 0o600 });
  const prefix = `cf${randomUUID().slice(0, 6)}:`;
  const out: TestNode[] = [];
  for (const [id, vms] of Object.entries(spec)) {
    const names = vms.map((v) => (typeof v === 'string' ? v : v.name));
    const simDir = path.join(dir, `sim-${id}`);
    await mkdir(simDir);
    const sim = new Simulator({ dir: simDir });
    sims.push(sim);
    const vm: Record<string, SimAgent> = {};
    for (const v of vms) vm[typeof v === 'string' ? v : v.name] = await sim.addVm(typeof v === 'string' ? { name: v } : v);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const r = redis;
    const node: TestNode = {
      id,
      url,
      vm,
      audit: [],
      async start(more = {}) {
        const config = testConfig({
          vms: names.map((name) => ({ name, endpoint: vm[name].endpoint })),
          logLevel: 'info',
          config: {
            server: { host: '127.0.0.1', port },
            auth: {
              tokens: [
                { name: 'backup', token: TOKENS.backup, scopes: ['read', 'write'] },
                { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
              ],
            },
            store: { type: 'redis', redisUrl: r.url, keyPrefix: prefix, commandTimeoutMs: 1_000 },
            cluster: { enabled: true, id, advertiseUrl: url, secretFile, heartbeatTtlMs: 1_000, heartbeatIntervalMs: 150 },
            freeze: { sweepIntervalMs: 250, handoverOnShutdown: true, ...freeze, ...more },
          },
        });
        const sink = new Writable({
          write: (chunk: Buffer, _enc, cb) => {
            for (const line of chunk.toString().split('\n')) {
              if (!line.includes('"audit":true')) continue;
              try {
                node.audit.push(JSON.parse(line) as Record<string, unknown>);
              } catch {
                // a partial line: not an audit record we look at
              }
            }
            cb();
          },
        });
        const app = await buildApp({ config, logger: pino({ level: 'info' }, sink), env: {} });
        await app.listen({ host: '127.0.0.1', port });
        node.app = app;
      },
      async stop() {
        const app = node.app;
        node.app = undefined;
        await app?.close();
      },
    };
    out.push(node);
  }
  nodes.push(...out);
  await Promise.all(out.map((n) => n.start()));
  // every node sees every other node's VMs
  // (a name both serve is local to each: a conflict, which a test waits for itself)
  await waitFor(() => out.every((n) => out.every((m) => m === n || Object.keys(m.vm).every((v) => v in n.vm || n.app?.services.cluster?.locate(v).kind === 'remote'))), 5_000, 'directory filled');
  return out;
}

/** the store's clock (Redis TIME), ms */
async function redisNow(): Promise<number> {
  const reply = await redis!.command('TIME');
  const [sec, usec] = reply.split('\r\n').filter((l) => /^[0-9]+$/.test(l));
  return Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
}

async function call(node: TestNode, method: string, url: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${node.url}${url}`, {
    method,
    headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function commandRecords(n: TestNode, vm: string, command: string): Array<Record<string, unknown>> {
  return n.audit.filter((a) => a.action === 'agent-command' && a.vm === vm && a.command === command);
}

describe('freeze groups spanning nodes', () => {
  it('frozen through A (each freeze on its own node, audited there), listed, renewed and thawed through B', async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const created = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup, { 'x-request-id': 'req-group-1' }), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect(created.status).toBe(201);
    expect(a.vm.a1.state.frozen).toBe(true);
    expect(b.vm.b1.state.frozen).toBe(true);
    const id = String(created.body.id);
    const leaseId = String(created.body.leaseId);
    expect(created.body.vms).toEqual([
      { vm: 'a1', frozen: expect.any(Number) },
      { vm: 'b1', frozen: expect.any(Number) },
    ]);
    // the node that sent each freeze wrote its start and end records, with A's principal and request id
    for (const [n, vm] of [[a, 'a1'], [b, 'b1']] as const) {
      const recs = commandRecords(n, vm, 'guest-fsfreeze-freeze');
      expect(recs.map((r) => r.phase)).toEqual(['start', 'end']);
      expect(recs.every((r) => r.by === 'backup' && r.requestId === 'req-group-1')).toBe(true);
    }
    expect(commandRecords(a, 'b1', 'guest-fsfreeze-freeze')).toEqual([]);

    const listed = await call(b, 'GET', '/v1/freeze-groups', auth(TOKENS.backup));
    expect(listed.status).toBe(200);
    expect((listed.body.groups as Array<{ id: string; vms: string[] }>).map((g) => [g.id, g.vms])).toEqual([[id, ['a1', 'b1']]]);
    const status = await call(a, 'GET', `/v1/freeze-groups/${id}`, auth(TOKENS.backup));
    expect(status.status).toBe(200);
    expect(status.body.vms).toEqual([
      { vm: 'a1', status: 'frozen' },
      { vm: 'b1', status: 'frozen' },
    ]);
    const renewed = await call(b, 'POST', `/v1/freeze-groups/${id}/renew`, auth(TOKENS.backup), { leaseId, ttlSeconds: 40 });
    expect(renewed.status).toBe(200);

    const thawed = await call(b, 'DELETE', `/v1/freeze-groups/${id}?leaseId=${leaseId}`, auth(TOKENS.backup, { 'x-request-id': 'req-thaw-1' }));
    expect(thawed.status).toBe(200);
    expect(thawed.body.consistent).toBe(true);
    expect(a.vm.a1.state.frozen).toBe(false);
    expect(b.vm.b1.state.frozen).toBe(false);
    // a1's thaw, orchestrated on B, ran on A and was audited there with B's request
    const thawRecs = commandRecords(a, 'a1', 'guest-fsfreeze-thaw');
    expect(thawRecs.map((r) => [r.phase, r.by, r.requestId])).toEqual([
      ['start', 'backup', 'req-thaw-1'],
      ['end', 'backup', 'req-thaw-1'],
    ]);
    expect(await a.app!.services.store.getSession(groupKey(id))).toBeUndefined();
  });

  it("the group's deadline thaws the members on both nodes, each on its own node", async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const created = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 1 });
    expect(created.status).toBe(201);
    const expiresAt = Date.parse(String(created.body.expiresAt));
    await waitFor(() => !a.vm.a1.state.frozen && !b.vm.b1.state.frozen, 5_000, 'deadline thaw of both members');
    const late = Date.now() - expiresAt;
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThanOrEqual(2_000);
    await waitFor(async () => (await a.app!.services.store.getSession(groupKey(String(created.body.id)))) === undefined, 3_000, 'lease released');
    // b1's thaw was sent by B, as the gateway's own action
    const recs = commandRecords(b, 'b1', 'guest-fsfreeze-thaw');
    expect(recs.map((r) => [r.phase, r.by])).toEqual([
      ['start', 'gateway'],
      ['end', 'gateway'],
    ]);
  });
});

describe('a forced group thaw', () => {
  it("an admin's forced thaw through B thaws the member A serves (sent by A, audited there as the admin's)", async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const created = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect(created.status).toBe(201);
    const forced = await call(b, 'DELETE', `/v1/freeze-groups/${String(created.body.id)}?force=true`, auth(TOKENS.ops, { 'x-request-id': 'req-force-1' }));
    expect([forced.status, forced.body.forced]).toEqual([200, true]);
    expect(a.vm.a1.state.frozen).toBe(false);
    expect(b.vm.b1.state.frozen).toBe(false);
    expect(b.audit.filter((r) => r.action === 'force-thaw-group').map((r) => [r.by, r.requestId])).toEqual([['ops', 'req-force-1']]);
    expect(commandRecords(a, 'a1', 'guest-fsfreeze-thaw').map((r) => [r.phase, r.by, r.requestId])).toEqual([
      ['start', 'ops', 'req-force-1'],
      ['end', 'ops', 'req-force-1'],
    ]);
  });
});

describe('a group freeze that fails on another node', () => {
  it("a member's refusal comes back as the serving node gave it (code, status, detail); the other member is rolled back", async () => {
    const [a, b] = await cluster({ A: ['a1'], B: [{ name: 'b1', disabled: ['guest-fsfreeze-freeze'] }] });
    // what B itself answers for b1
    const direct = await call(b, 'POST', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 30 });
    expect(direct.status).toBeGreaterThanOrEqual(400);
    const group = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect([group.status, group.body.code, group.body.vm, group.body.command, group.body.detail]).toEqual([direct.status, direct.body.code, 'b1', 'guest-fsfreeze-freeze', direct.body.detail]);
    process.stdout.write(`[cluster-freeze] b1's refusal: ${group.status} ${String(group.body.code)}\n`);
    expect(group.body.vms).toEqual([
      expect.objectContaining({ vm: 'a1', result: 'frozen', thawAttempted: true, thawed: true }),
      expect.objectContaining({ vm: 'b1', result: 'failed', thawAttempted: false }),
    ]);
    expect(a.vm.a1.state.frozen).toBe(false);
    expect(b.vm.b1.state.frozen).toBe(false);
    expect(await a.app!.services.store.listSessions()).toEqual([]);
  });

  it('a member on a node that hangs: the call ends when that node is declared gone, and the other member is rolled back then', { timeout: 40_000 }, async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    // b1's freeze never answers, and B stops heartbeating meanwhile (a hung host: its HTTP answers nothing)
    b.vm.b1.setFault({ command: 'guest-fsfreeze-freeze', kind: 'hang' });
    const t0 = performance.now();
    const pending = call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 20 });
    await waitFor(() => agentCommands(b.vm.b1).includes('guest-fsfreeze-freeze') && a.vm.a1.state.frozen, 5_000, 'both freezes sent');
    await b.app!.services.cluster!.leave!();
    const group = await pending;
    const ms = performance.now() - t0;
    // not after the member's freeze timeout (the lease's 20 s + 5 s): when A saw B gone (h10 F10)
    expect([group.status, group.body.code]).toEqual([503, 'NODE_UNAVAILABLE']);
    expect(ms).toBeLessThan(8_000);
    expect(a.vm.a1.state.frozen).toBe(false);
    b.vm.b1.clearFaults();
  });

  it('a member whose node is gone: 503 NODE_UNAVAILABLE before anything is locked or frozen', async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    await b.stop();
    await waitFor(() => a.app!.services.cluster?.locate('b1').kind === 'gone', 3_000, 'B seen gone');
    const since = Date.now();
    const group = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect([group.status, group.body.code, group.body.vm, group.body.node]).toEqual([503, 'NODE_UNAVAILABLE', 'b1', 'B']);
    expect(agentCommands(a.vm.a1, since)).toEqual([]);
    expect(await a.app!.services.store.listSessions()).toEqual([]);
  });
});

describe('the serving node away at the deadline', () => {
  it('the thaw is not released as done: it is retried, and sent when the node returns', async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const created = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 1 });
    expect(created.status).toBe(201);
    const session = groupKey(String(created.body.id));
    await b.stop(); // the simulator (the VM) stays, frozen
    await waitFor(() => a.app!.services.cluster?.locate('b1').kind === 'gone', 3_000, 'B seen gone');
    await waitFor(() => !a.vm.a1.state.frozen, 3_000, 'a1 thawed at the deadline');
    // several sweeps (250 ms) and retries later — an absence, so a plain wait: b1 still frozen,
    // and the lease (its claim) is kept
    await new Promise((r) => setTimeout(r, 1_000));
    expect(b.vm.b1.state.frozen).toBe(true);
    expect((await a.app!.services.store.getSession(session))?.leaseId).toBe(created.body.leaseId);
    // a1, thawed, has left the group's lease (which keeps b1): it can be frozen again at once
    expect((await a.app!.services.store.getSession(session))?.keys).toEqual(['vm:b1']);
    const again = await call(a, 'POST', '/v1/vms/a1/fsfreeze', auth(TOKENS.ops), { ttlSeconds: 30 });
    expect(again.status).toBe(201);
    expect((await call(a, 'DELETE', `/v1/vms/a1/fsfreeze?leaseId=${String(again.body.leaseId)}`, auth(TOKENS.ops))).status).toBe(200);
    const back = Date.now();
    await b.start({ sweepIntervalMs: 60_000 });
    await waitFor(() => !b.vm.b1.state.frozen, 8_000, 'b1 thawed once B is back');
    process.stdout.write(`[cluster-freeze] b1 thawed ${Date.now() - back} ms after B came back\n`);
    await waitFor(async () => (await a.app!.services.store.getSession(session)) === undefined, 3_000, 'lease released');
  });

  it("a node restarting after the deadline thaws its VM at start although another node's sweeper claimed the lease meanwhile (h12 F1)", { timeout: 30_000 }, async () => {
    // no sweep but the one at start: the claim below stands for another node's sweeper
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] }, { sweepIntervalMs: 60_000 });
    const frozen = await call(a, 'POST', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 1 });
    expect(frozen.status).toBe(201);
    await b.stop(); // handover: the lease stays in Redis; the VM stays frozen
    await waitFor(() => a.app!.services.cluster?.locate('b1').kind === 'gone', 3_000, 'B seen gone');
    const expiresAt = Date.parse(String(frozen.body.expiresAt));
    await waitFor(async () => (await redisNow()) > expiresAt + 50, 5_000, 'the lease expired');
    // what A's sweeper does with an overdue lease: claim it (its deadline moves on; with the
    // defaults by 10 s at each sweep), then try the thaw, which fails while B is away
    expect(await a.app!.services.store.claim('vm:b1', String(frozen.body.leaseId), 30_000)).toBe(true);
    expect(b.vm.b1.state.frozen).toBe(true);
    const t0 = Date.now();
    await b.start({ sweepIntervalMs: 60_000 }); // only the start-up reconciliation can thaw it soon
    const ready = Date.now() - t0;
    await waitFor(() => !b.vm.b1.state.frozen, 10_000, 'b1 thawed');
    const after = Date.now() - t0;
    process.stdout.write(`[cluster-freeze] b1 (claimed by A) thawed ${after} ms after B's start (ready after ${ready} ms)\n`);
    expect(after - ready).toBeLessThan(1_500);
    await waitFor(async () => (await a.app!.services.store.getSession('vm:b1')) === undefined, 3_000, 'lease released');
  });

  it('a node restarting after the deadline reconciles at start: its VM is thawed before any sweep; the other member when its node returns', async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] }, { sweepIntervalMs: 60_000 });
    const created = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['a1', 'b1'], ttlSeconds: 1 });
    expect(created.status).toBe(201);
    const session = groupKey(String(created.body.id));
    // both nodes go away (handover: the lease stays in Redis, nobody watches it)
    await a.stop();
    await b.stop();
    // past the lease's expiry on the store's clock (the reconciliation thaws only expired leases)
    const expiresAt = Date.parse(String(created.body.expiresAt));
    await waitFor(async () => (await redisNow()) > expiresAt + 50, 5_000, 'the lease expired');
    expect(a.vm.a1.state.frozen).toBe(true);
    expect(b.vm.b1.state.frozen).toBe(true);
    const t0 = Date.now();
    await b.start(); // sweep interval 60 s: only the start-up reconciliation can thaw now
    await waitFor(() => !b.vm.b1.state.frozen, 3_000, 'b1 thawed by reconciliation');
    process.stdout.write(`[cluster-freeze] b1 reconciled ${Date.now() - t0} ms after B's start\n`);
    expect(a.vm.a1.state.frozen).toBe(true); // its node is away: not dropped, retried
    expect((await b.app!.services.store.getSession(session))?.leaseId).toBe(created.body.leaseId);
    await a.start();
    await waitFor(() => !a.vm.a1.state.frozen, 8_000, 'a1 thawed once A is back');
    await waitFor(async () => (await b.app!.services.store.getSession(session)) === undefined, 3_000, 'lease released');
  });
});

describe('the internal endpoint', () => {
  const signed = (vm: string, body: unknown, secret = SECRET, tamper?: (s: string) => string): { url: string; headers: Record<string, string>; text: string } => {
    const text = JSON.stringify(body);
    const url = `${agentCallPath(vm)}?digest=${bodyDigest(text)}`;
    return {
      url,
      text: tamper ? tamper(text) : text,
      headers: { ...signHop(secret, { purpose: 'agent-call', method: 'POST', url, entryNode: 'A', principal: { name: 'backup', scopes: ['write'] } }), 'content-type': 'application/json' },
    };
  };
  const post = async (n: TestNode, s: { url: string; headers: Record<string, string>; text: string }): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`${n.url}${s.url}`, { method: 'POST', headers: s.headers, body: s.text });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it('a forged or tampered call is 401, a fenced-out one 409, another command 403; nothing reaches the agent', async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const since = Date.now();
    const freeze = { command: 'guest-fsfreeze-freeze', timeoutMs: 5_000, priority: 'freeze', by: 'backup' };
    // signed with another secret
    const forged = await post(b, signed('b1', { ...freeze, fence: { forced: true } }, `another-secret-${'y'.repeat(32)}`));
    expect([forged.status, forged.body.code]).toEqual([401, 'UNAUTHENTICATED']);
    // the operator is told why (a secret that differs, clocks apart, or a forgery), once per 10 s per claimed node
    expect(b.audit.filter((l) => l.action === 'hop-refused')).toEqual([expect.objectContaining({ level: 40, entryNode: 'A', route: '/internal/cluster/vms/:vm/agent-call' })]);
    // no signature at all
    const bare = await fetch(`${b.url}${agentCallPath('b1')}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(freeze) });
    expect(bare.status).toBe(401);
    // a client's valid bearer token: 401 saying the route takes node calls only (not "unknown token": h10 L4)
    const token = await fetch(`${b.url}${agentCallPath('b1')}`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth(TOKENS.ops) }, body: JSON.stringify(freeze) });
    expect(token.status).toBe(401);
    expect(((await token.json()) as { detail: string }).detail).toMatch(/only another cluster node's calls/);
    // a valid signature, but the body is not the one signed (its digest is in the signed URL)
    const tampered = await post(b, signed('b1', { ...freeze, command: 'guest-fsfreeze-status' }, SECRET, (t) => t.replace('guest-fsfreeze-status', 'guest-fsfreeze-freeze')));
    expect([tampered.status, tampered.body.code]).toEqual([401, 'UNAUTHENTICATED']);

    // a lease that holds the VM now, taken through A…
    const created = await call(a, 'POST', '/v1/freeze-groups', auth(TOKENS.backup), { vms: ['b1'], ttlSeconds: 30 });
    expect(created.status).toBe(201);
    const live = await a.app!.services.store.getSession(groupKey(String(created.body.id)));
    expect(live).toBeDefined();
    const freezesBefore = agentCommands(b.vm.b1, since).filter((c) => c.startsWith('guest-fsfreeze-freeze')).length;
    expect(freezesBefore).toBe(1);
    // …and a stale orchestrator's freeze under a lease it no longer holds
    const stale = await post(b, signed('b1', { ...freeze, fence: { session: 'group:stale', leaseId: randomUUID(), epoch: live!.epoch } }));
    expect([stale.status, stale.body.code, stale.body.reason]).toEqual([409, 'LEASE_CONFLICT', 'fenced']);
    // a freeze without a fence, or forced, is refused the same way
    const unfenced = await post(b, signed('b1', freeze));
    expect([unfenced.status, unfenced.body.code]).toEqual([409, 'LEASE_CONFLICT']);
    const forcedFreeze = await post(b, signed('b1', { ...freeze, fence: { forced: true } }));
    expect([forcedFreeze.status, forcedFreeze.body.code]).toEqual([409, 'LEASE_CONFLICT']);
    // a thaw under a lease that does not hold the VM: refused too (it would undo another's freeze)
    const staleThaw = await post(b, signed('b1', { command: 'guest-fsfreeze-thaw', timeoutMs: 5_000, by: 'backup', fence: { session: 'vm:b1', leaseId: randomUUID(), epoch: live!.epoch } }));
    expect([staleThaw.status, staleThaw.body.code]).toEqual([409, 'LEASE_CONFLICT']);
    // anything outside the freeze family
    const exec = await post(b, signed('b1', { command: 'guest-exec', args: { path: '/bin/true' }, timeoutMs: 5_000, by: 'backup' }));
    expect([exec.status, exec.body.code]).toEqual([403, 'FORBIDDEN']);
    expect(agentCommands(b.vm.b1, since).filter((c) => c !== 'guest-fsfreeze-status')).toEqual(['guest-fsfreeze-freeze']);
    expect(b.vm.b1.state.frozen).toBe(true);

    // not part of the API
    const doc = (await (await fetch(`${b.url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/internal'))).toEqual([]);
    expect(Object.keys(doc.paths).length).toBeGreaterThan(20);

    // the holder's own fenced thaw goes through
    const ok = await post(b, signed('b1', { command: 'guest-fsfreeze-thaw', timeoutMs: 5_000, by: 'backup', fence: { session: live!.session, leaseId: live!.leaseId, epoch: live!.epoch } }));
    expect(ok.status).toBe(200);
    expect(typeof ok.body.result).toBe('number');
    expect(b.vm.b1.state.frozen).toBe(false);
  });
});

describe('a single VM across nodes', () => {
  // forwarding (src/http/plugins/forward.ts) carries every /v1/vms/{vm}/… route to the serving node
  it('frozen through A, thawed through B with its lease (either node serving it)', async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    for (const [vm, sim] of [['a1', a.vm.a1], ['b1', b.vm.b1]] as const) {
      const frozen = await call(a, 'POST', `/v1/vms/${vm}/fsfreeze`, auth(TOKENS.backup), { ttlSeconds: 30 });
      expect(frozen.status).toBe(201);
      expect(sim.state.frozen).toBe(true);
      const thawed = await call(b, 'DELETE', `/v1/vms/${vm}/fsfreeze?leaseId=${String(frozen.body.leaseId)}`, auth(TOKENS.backup));
      expect([thawed.status, thawed.body.consistent]).toEqual([200, true]);
      expect(sim.state.frozen).toBe(false);
    }
  });
});

describe('a VM name two nodes serve (a conflict: two guests)', () => {
  it("a freeze through B is thawed on B's guest, whichever node the holder's or an admin's forced thaw comes through; C's guest of the same name gets nothing", async () => {
    const [b, c] = await cluster({ B: ['dup'], C: ['dup'] });
    await waitFor(() => [b, c].every((n) => (n.app?.services.cluster?.locate('dup') as { conflict?: string[] } | undefined)?.conflict !== undefined), 5_000, 'both to see the conflict');
    const frozen = await call(b, 'POST', '/v1/vms/dup/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 60 });
    expect(frozen.status).toBe(201);
    expect([b.vm.dup.state.frozen, c.vm.dup.state.frozen]).toEqual([true, false]);
    // the holder's thaw through C (which serves its own "dup"): it goes to B's guest, the frozen one
    const thawed = await call(c, 'DELETE', `/v1/vms/dup/fsfreeze?leaseId=${String(frozen.body.leaseId)}`, auth(TOKENS.backup));
    expect([thawed.status, thawed.body.consistent, thawed.body.thawed]).toEqual([200, true, frozen.body.frozen]);
    expect(b.vm.dup.state.frozen).toBe(false);
    // an admin's forced thaw through C of a lease taken through B: the same
    const again = await call(b, 'POST', '/v1/vms/dup/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 60 });
    expect(again.status).toBe(201);
    const forced = await call(c, 'DELETE', '/v1/vms/dup/fsfreeze?force=true', auth(TOKENS.ops));
    expect([forced.status, forced.body.thawed]).toEqual([200, again.body.frozen]);
    expect(b.vm.dup.state.frozen).toBe(false);
    expect(agentCommands(c.vm.dup).filter((x) => x.startsWith('guest-fsfreeze'))).toEqual([]);
    await waitFor(async () => (await call(b, 'GET', '/v1/vms/dup/fsfreeze', auth(TOKENS.backup))).body.lease === null, 5_000, 'the lease released');
  });
});

describe('a thaw forwarded while long requests fill the connections to its node', () => {
  it('goes over the freeze lane: answered at once, not after the long requests', { timeout: 30_000 }, async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1', 'b2'] });
    const frozen = await call(a, 'POST', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 60 });
    expect(frozen.status).toBe(201);
    // 130 long polls through A to B (an IPv6 global address the simulated guest never gets): more
    // than A's FORWARD_CONNECTIONS (128) to B, each held 6 s
    const polls = Array.from({ length: 130 }, () => call(a, 'GET', '/v1/vms/b2/wait?for=ip&family=ipv6&scope=global&timeout=6', auth(TOKENS.backup)));
    await waitFor(
      () => new Promise<boolean>((r) => b.app!.server.getConnections((_e, n) => r(n >= 128))),
      10_000,
      'the connections from A to B to be full',
    );
    const t0 = performance.now();
    const thawed = await call(a, 'DELETE', `/v1/vms/b1/fsfreeze?leaseId=${String(frozen.body.leaseId)}`, auth(TOKENS.backup));
    const ms = performance.now() - t0;
    expect([thawed.status, thawed.body.consistent]).toEqual([200, true]);
    expect(b.vm.b1.state.frozen).toBe(false);
    // well before the first long poll ends (6 s)
    expect(ms).toBeLessThan(3_500);
    const ended = await Promise.all(polls);
    expect(ended.filter((p) => p.status === 408).length).toBeGreaterThanOrEqual(128);
  });
});

describe('a thaw forwarded while clients poll the freeze status of a VM whose agent is slow', () => {
  it('is answered at once: status reads (GET /fsfreeze) do not share the thaw lane', { timeout: 30_000 }, async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1', 'b2'] });
    const frozen = await call(a, 'POST', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 60 });
    expect(frozen.status).toBe(201);
    // b2's agent answers a status 3 s late; 40 clients poll it through A (h10 F3: they held the 8
    // connections the thaws used, and a thaw of b1 waited behind them)
    b.vm.b2.setFault({ command: 'guest-fsfreeze-status', kind: 'delay', ms: 3_000 });
    let polling = true;
    const pollers = Array.from({ length: 40 }, async () => {
      while (polling) await call(a, 'GET', '/v1/vms/b2/fsfreeze', auth(TOKENS.backup));
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const t0 = performance.now();
    const thawed = await call(a, 'DELETE', `/v1/vms/b1/fsfreeze?leaseId=${String(frozen.body.leaseId)}`, auth(TOKENS.backup));
    const ms = performance.now() - t0;
    polling = false;
    expect([thawed.status, thawed.body.consistent]).toEqual([200, true]);
    expect(b.vm.b1.state.frozen).toBe(false);
    // not behind the status reads (each 3 s, 40 of them)
    expect(ms).toBeLessThan(2_000);
    b.vm.b2.clearFaults();
    await Promise.all(pollers);
  });
});

describe('Redis restarted empty while a VM frozen through another node is frozen', () => {
  it("the holder's thaw through the entry node still goes through: the freeze was forwarded to the serving node, which knows the lease (leaseCheck local)", async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const frozen = await call(a, 'POST', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 60 });
    expect(frozen.status).toBe(201);
    expect(b.vm.b1.state.frozen).toBe(true);
    // the store loses everything (a restart without persistence)
    await redis!.command('FLUSHALL');
    await waitFor(() => a.app?.services.cluster?.locate('b1').kind === 'remote', 5_000, 'A to see B serving b1 again');
    const thawed = await call(a, 'DELETE', `/v1/vms/b1/fsfreeze?leaseId=${String(frozen.body.leaseId)}`, auth(TOKENS.backup));
    expect(thawed.status, JSON.stringify(thawed.body)).toBe(200);
    expect(thawed.body.leaseCheck).toBe('local');
    expect(b.vm.b1.state.frozen).toBe(false);
  });

  it("a renewal refused meanwhile (Redis lost the lease) does not make the holder's thaw fail: redis-server killed and started empty", async () => {
    const [a, b] = await cluster({ A: ['a1'], B: ['b1'] });
    const frozen = await call(a, 'POST', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup), { ttlSeconds: 60 });
    expect(frozen.status).toBe(201);
    await redis!.kill();
    await new Promise((r) => setTimeout(r, 500));
    await redis!.restart({ empty: true });
    await waitFor(() => a.app?.services.cluster?.locate('b1').kind === 'remote' && a.app?.services.cluster?.staleSince === undefined, 10_000, 'A to see B serving b1 again');
    // the store has no lease: the status (from B, which froze it) shows the one B holds as lost by the
    // store, and a renewal is refused (the holder learns it there)
    const status = await call(a, 'GET', '/v1/vms/b1/fsfreeze', auth(TOKENS.backup));
    expect(status.body).toMatchObject({ status: 'frozen', lease: { leaseId: frozen.body.leaseId }, leaseStore: 'lost' });
    const renewed = await call(a, 'POST', '/v1/vms/b1/fsfreeze/renew', auth(TOKENS.backup), { leaseId: frozen.body.leaseId, ttlSeconds: 60 });
    expect([renewed.status, renewed.body.code, renewed.body.reason]).toEqual([409, 'LEASE_CONFLICT', 'not-found']);
    // B, which froze it, still knows the lease: the holder's thaw goes through
    const thawed = await call(a, 'DELETE', `/v1/vms/b1/fsfreeze?leaseId=${String(frozen.body.leaseId)}`, auth(TOKENS.backup));
    expect([thawed.status, thawed.body.leaseCheck, thawed.body.consistent], JSON.stringify(thawed.body)).toEqual([200, 'local', true]);
    expect(b.vm.b1.state.frozen).toBe(false);
  });
});
