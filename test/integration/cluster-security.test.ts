/**
 * Cluster security (the reviewer's traversal through the forwarder to /internal, closed at three
 * layers): two in-process gateways in cluster mode on ONE real redis-server, simulator VMs only.
 *  1. forward plugin: a path is forwarded exactly as received; a backslash, a `.`/`..` segment (also
 *     %2e), %2f/%5c, control characters → 400 VALIDATION_FAILED before anything is forwarded;
 *  2. hop.ts: a `forward` signature never verifies on /internal, an `agent-call` one never on /v1;
 *     the system principal only rides an agent-call;
 *  3. the internal route checks the carried principal's scopes and VM globs as the public routes do.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHmac } from 'node:crypto';
import net from 'node:net';
import { errors } from '../../src/errors.js';
import { HOP_HEADER, PRINCIPAL_HEADER, SIGNATURE_HEADER, SYSTEM_PRINCIPAL, signHop, unforwardablePath, verifyHop, type HopPrincipal, type HopPurpose } from '../../src/cluster/hop.js';
import { agentCallPath, bodyDigest } from '../../src/cluster/agent-call.js';
import type { SimAgent } from '../../sim/agent.js';
import { startClusterRig, type ClusterRig, type RigNode } from './cluster-rig.js';
import { agentCommands } from './freeze-fixture.js';

const SECRET = `cluster-security-test-secret-${'s'.repeat(24)}`;
const TOKENS = {
  ops: 'ops-token-0123456789abcdef01',
  adm: 'adm-token-0123456789abcdef01', // admin, but only VM b1
  grp: 'grp-token-0123456789abcdef01', // write, VMs a1 and b1
};
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

type TestNode = RigNode;

let rig: ClusterRig;
let nodes: Record<string, TestNode>;

/** a raw HTTP/1.1 request (fetch and undici normalise or refuse such paths); the status line, headers and body */
function raw(port: number, method: string, target: string, headers: Record<string, string>, body = ''): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    const lines = [`${method} ${target} HTTP/1.1`, `Host: 127.0.0.1:${port}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close'];
    const s = net.connect(port, '127.0.0.1', () => s.write(`${lines.join('\r\n')}\r\n\r\n${body}`));
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer to ${method} ${target}`));
    }, 5_000);
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('close', () => {
      clearTimeout(timer);
      const at = out.indexOf('\r\n\r\n');
      resolve({ status: Number(out.slice(9, 12)), head: out.slice(0, at).toLowerCase(), body: out.slice(at + 4) });
    });
    s.on('error', reject);
  });
}

async function json(node: TestNode, method: string, url: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${node.url}${url}`, { method, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
}

/** agent commands a simulated VM received since `since` (ms epoch), without the channel's handshakes */
const commandsSince = (vm: SimAgent, since: number): string[] => agentCommands(vm, since);

/** a signature made by hand (as hop.ts does) with any purpose and any principal header: what an attacker holding the secret could not, and what the nodes must refuse across purposes */
function handSigned(purpose: HopPurpose, method: string, url: string, principal: Record<string, unknown>, entryNode = 'A'): Record<string, string> {
  const header = Buffer.from(JSON.stringify(principal)).toString('base64url');
  const time = String(Date.now());
  const sig = createHmac('sha256', SECRET).update(`${purpose}\n${method}\n${url}\n${time}\n${entryNode}\n${header}`).digest('base64url');
  return { [HOP_HEADER]: entryNode, [PRINCIPAL_HEADER]: header, [SIGNATURE_HEADER]: `${time}.${sig}` };
}

/** an internal agent call to `node`, signed for `purpose` with `principal` */
async function agentCall(node: TestNode, vm: string, body: Record<string, unknown>, principal: HopPrincipal, purpose: HopPurpose = 'agent-call'): Promise<{ status: number; body: Record<string, unknown> }> {
  const text = JSON.stringify(body);
  const url = `${agentCallPath(vm)}?digest=${bodyDigest(text)}`;
  const headers = { ...signHop(SECRET, { purpose, method: 'POST', url, entryNode: 'A', principal }), 'content-type': 'application/json' };
  const res = await fetch(`${node.url}${url}`, { method: 'POST', headers, body: text });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function frozenB2(): Promise<{ leaseId: string; session: string; epoch: string }> {
  const r = await json(nodes.B, 'POST', '/v1/vms/b2/fsfreeze', bearer(TOKENS.ops), { ttlSeconds: 60 });
  expect(r.status).toBe(201);
  expect(nodes.B.vm.b2.state.frozen).toBe(true);
  const lease = await nodes.B.app.services.store.getByKey('vm:b2');
  return { leaseId: String(r.body.leaseId), session: lease!.session, epoch: lease!.epoch };
}

async function thawB2(): Promise<void> {
  const r = await json(nodes.B, 'DELETE', '/v1/vms/b2/fsfreeze?force=true', bearer(TOKENS.ops));
  expect(r.status).toBe(200);
  expect(nodes.B.vm.b2.state.frozen).toBe(false);
}

// every test starts with b2 thawed and unleased, whatever the previous one left
afterEach(async () => {
  await json(nodes.B, 'DELETE', '/v1/vms/b2/fsfreeze?force=true', bearer(TOKENS.ops));
});

beforeAll(async () => {
  rig = await startClusterRig({
    tag: 'csec',
    secret: SECRET,
    tokens: [
      { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
      { name: 'adm', token: TOKENS.adm, scopes: ['read', 'write', 'admin'], vms: ['b1'] },
      { name: 'grp', token: TOKENS.grp, scopes: ['read', 'write'], vms: ['a1', 'b1'] },
    ],
    nodes: { A: ['a1'], B: ['b1', 'b2'] },
    cluster: { forwardTimeoutMs: 2_000 },
    logEnv: 'SEC_LOG',
  });
  ({ nodes } = rig);
}, 20_000);

afterAll(async () => {
  await rig?.close();
});

describe('unforwardablePath', () => {
  it('lets plain paths under the located VM through and names every rewriting form', () => {
    for (const ok of ['/v1/vms/b1', '/v1/vms/b1/', '/v1/vms/b1/ping', '/v1/vms/b1/users/a.b/password', '/v1/vms/b1/files/content', '/v1/vms/b1/qga/guest-info', '/v1/vms/b1/users/x%20y/ssh-keys']) {
      expect([ok, unforwardablePath(ok, 'b1')]).toEqual([ok, undefined]);
    }
    const bad = [
      '/v1/vms/b1/qga/x\\..\\..\\internal', // backslashes
      '/v1/vms/b1/qga/x%5c..%5cinternal',
      '/v1/vms/b1/qga/x%5C..',
      '/v1/vms/b1/qga/x%2f..%2finternal',
      '/v1/vms/b1/qga/x%2F..',
      '/v1/vms/b1/../b2/ping',
      '/v1/vms/b1/./ping',
      '/v1/vms/b1/%2e%2e/b2/ping',
      '/v1/vms/b1/%2E./b2/ping',
      '/v1/vms/b1/.%2E',
      '/v1/vms/b1/qga/%2e',
      '/v1/vms/b1/qga/x%00',
      '/v1/vms/b1/qga/x%1F',
      '/v1/vms/b1/qga/x\u0001',
      '/v1/vms/b1/qga/x%zz',
      '/v1/vms/b1/qga/x{y}',
      '/v1/vms/b1/qga/\u00e9',
      '/v1/vms/b10/ping', // another VM than the one located
      '/v1/vms/web%2D1/ping'.replace('web%2D1', 'b%31'), // the VM name %-encoded
      '//v1/vms/b1/ping',
    ];
    for (const p of bad) expect([p, typeof unforwardablePath(p, 'b1')]).toEqual([p, 'string']);
  });
});

describe("the reviewer's traversal through the forwarder", () => {
  it('the exact attack (raw request with backslashes to A) is 400 before forwarding; b2 stays frozen; adm may not force-thaw b2 through the API either', async () => {
    await frozenB2();
    const since = Date.now();
    const body = JSON.stringify({ command: 'guest-fsfreeze-thaw', timeoutMs: 5000, by: 'adm', fence: { forced: true } });
    const target = `/v1/vms/b1/qga/x\\..\\..\\..\\..\\..\\internal\\cluster\\vms\\b2\\agent-call?digest=${bodyDigest(body)}`;
    const r = await raw(nodes.A.port, 'POST', target, { Authorization: `Bearer ${TOKENS.adm}`, 'Content-Type': 'application/json' }, body);
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).code).toBe('VALIDATION_FAILED');
    expect(r.head).toContain('content-type: application/problem+json');
    expect(r.head).not.toContain('x-qga-node'); // not forwarded
    // through the public API the same token is refused too
    const direct = await json(nodes.A, 'DELETE', '/v1/vms/b2/fsfreeze?force=true', bearer(TOKENS.adm));
    expect([direct.status, direct.body.code]).toEqual([403, 'FORBIDDEN']);
    expect(nodes.B.vm.b2.state.frozen).toBe(true);
    expect(commandsSince(nodes.B.vm.b2, since).filter((c) => c !== 'guest-fsfreeze-status')).toEqual([]);
    const status = await json(nodes.A, 'GET', '/v1/vms/b2/fsfreeze', bearer(TOKENS.ops));
    expect([status.status, status.body.status]).toEqual([200, 'frozen']);
    await thawB2();
  });

  it('variants (%2e%2e, %5c, %2f, /./ as the VM, mixed case, an encoded NUL) are 400 on the entry node and on the serving node; nothing forwarded', async () => {
    await frozenB2();
    const since = Date.now();
    const body = JSON.stringify({ command: 'guest-fsfreeze-thaw', timeoutMs: 5000, by: 'adm', fence: { forced: true } });
    const q = `?digest=${bodyDigest(body)}`;
    const targets = [
      `/v1/vms/b1/qga/x%5c..%5c..%5c..%5c..%5c..%5cinternal%5ccluster%5cvms%5cb2%5cagent-call${q}`,
      `/v1/vms/b1/qga/x%5C..%5C..%5C..%5C..%5C..%5Cinternal%5Ccluster%5Cvms%5Cb2%5Cagent-call${q}`,
      `/v1/vms/b1/qga/x%2f%2e%2e%2f%2E%2e%2f%2e%2E%2f%2E%2E%2f%2e%2e%2finternal%2fcluster%2fvms%2fb2%2fagent-call${q}`,
      `/v1/vms/b1/qga/%2e%2e${q}`,
      `/v1/vms/b1/qga/%2E%2e${q}`,
      `/v1/vms/./qga/x${q}`,
      `/v1/vms/b1/qga/.${q}`,
      `/v1/vms/b1/qga/x\\.\\b2${q}`,
      `/v1/vms/b1/qga/x%00${q}`,
    ];
    for (const node of [nodes.A, nodes.B]) {
      for (const t of targets) {
        // ops may reach every VM and has admin: the refusal is the path's, not the token's
        const r = await raw(node.port, 'POST', t, { Authorization: `Bearer ${TOKENS.ops}`, 'Content-Type': 'application/json' }, body);
        expect([node.id, t, r.status, (JSON.parse(r.body) as { code: string }).code, r.head.includes('x-qga-node')]).toEqual([node.id, t, 400, 'VALIDATION_FAILED', false]);
      }
    }
    // a dot segment outside the {vm} route's shape matches no route at all: 404, never forwarded
    const r = await raw(nodes.A.port, 'POST', `/v1/vms/b1/../../internal/cluster/vms/b2/agent-call${q}`, { Authorization: `Bearer ${TOKENS.adm}`, 'Content-Type': 'application/json' }, body);
    expect([r.status, r.head.includes('x-qga-node')]).toEqual([404, false]);
    expect(nodes.B.vm.b2.state.frozen).toBe(true);
    expect(commandsSince(nodes.B.vm.b2, since)).toEqual([]);
    await thawB2();
  });
});

describe('signature purposes (domain separation)', () => {
  it('a forwarding signature on /internal is 401; an agent-call signature on /v1 is 401; the right purpose passes', async () => {
    await frozenB2();
    const since = Date.now();
    const thaw = { command: 'guest-fsfreeze-thaw', timeoutMs: 5_000, by: 'ops', fence: { forced: true } };
    const ops: HopPrincipal = { name: 'ops', scopes: ['read', 'write', 'admin'] };
    const asForward = await agentCall(nodes.B, 'b2', thaw, ops, 'forward');
    expect([asForward.status, asForward.body.code]).toEqual([401, 'UNAUTHENTICATED']);
    expect(nodes.B.vm.b2.state.frozen).toBe(true);

    const url = '/v1/vms/b1/hostname'; // b1: not frozen (a frozen guest refuses most commands)
    const asAgentCall = await json(nodes.B, 'GET', url, signHop(SECRET, { purpose: 'agent-call', method: 'GET', url, entryNode: 'A', principal: ops }));
    expect([asAgentCall.status, asAgentCall.body.code]).toEqual([401, 'UNAUTHENTICATED']);
    const asForwardV1 = await json(nodes.B, 'GET', url, signHop(SECRET, { purpose: 'forward', method: 'GET', url, entryNode: 'A', principal: ops }));
    expect(asForwardV1.status).toBe(200);
    // the same signature does not verify under the other purpose
    const h = signHop(SECRET, { purpose: 'forward', method: 'GET', url, entryNode: 'A', principal: ops });
    expect([verifyHop(SECRET, h, 'GET', url, Date.now(), 'forward') !== undefined, verifyHop(SECRET, h, 'GET', url, Date.now(), 'agent-call')]).toEqual([true, undefined]);
    expect(commandsSince(nodes.B.vm.b2, since).filter((c) => c.startsWith('guest-fsfreeze'))).toEqual([]);
    await thawB2();
  });

  it('the system principal: refused on a forward (even validly signed) and by signHop; on an agent-call it may thaw, never freeze', async () => {
    expect(() => signHop(SECRET, { purpose: 'forward', method: 'GET', url: '/v1/vms/b1/ping', entryNode: 'A', principal: SYSTEM_PRINCIPAL })).toThrow(/agent-call/);
    const url = '/v1/vms/b1/ping';
    const forged = await json(nodes.B, 'GET', url, handSigned('forward', 'GET', url, { name: 'gateway', scopes: [], system: true }));
    expect([forged.status, forged.body.code]).toEqual([401, 'UNAUTHENTICATED']);
    // a client-sent principal header alone (no signature) is refused too
    const bare = await json(nodes.B, 'GET', url, { ...bearer(TOKENS.ops), [PRINCIPAL_HEADER]: Buffer.from(JSON.stringify({ name: 'gateway', scopes: [], system: true })).toString('base64url') });
    expect([bare.status, bare.body.code]).toEqual([401, 'UNAUTHENTICATED']);
    // a system principal with scopes (or any other shape) does not verify even as an agent-call
    const text = JSON.stringify({ command: 'guest-fsfreeze-status', timeoutMs: 5_000, by: 'gateway' });
    const callUrl = `${agentCallPath('b1')}?digest=${bodyDigest(text)}`;
    const widened = await fetch(`${nodes.B.url}${callUrl}`, { method: 'POST', headers: { ...handSigned('agent-call', 'POST', callUrl, { name: 'gateway', scopes: ['admin'], system: true }), 'content-type': 'application/json' }, body: text });
    expect(widened.status).toBe(401);

    const lease = await frozenB2();
    const freeze = await agentCall(nodes.B, 'b1', { command: 'guest-fsfreeze-freeze', timeoutMs: 5_000, by: 'gateway', fence: { session: lease.session, leaseId: lease.leaseId, epoch: lease.epoch } }, SYSTEM_PRINCIPAL);
    expect([freeze.status, freeze.body.code]).toEqual([403, 'FORBIDDEN']);
    expect(nodes.B.vm.b1.state.frozen).toBe(false);
    const status = await agentCall(nodes.B, 'b2', { command: 'guest-fsfreeze-status', timeoutMs: 5_000, by: 'gateway' }, SYSTEM_PRINCIPAL);
    expect([status.status, status.body.result]).toEqual([200, 'frozen']);
    // the deadline thaw's shape: the lease's fence, actor gateway
    const thaw = await agentCall(nodes.B, 'b2', { command: 'guest-fsfreeze-thaw', timeoutMs: 5_000, priority: 'thaw', by: 'gateway', actor: 'gateway', fence: lease }, SYSTEM_PRINCIPAL);
    expect(thaw.status).toBe(200);
    expect(nodes.B.vm.b2.state.frozen).toBe(false);
    await json(nodes.B, 'DELETE', `/v1/vms/b2/fsfreeze?leaseId=${lease.leaseId}`, bearer(TOKENS.ops));
  });
});

describe('the internal route checks the carried principal', () => {
  it('a forced thaw without admin is 403 (unless the lease store is down), outside the VM globs 403, without write 403; an admin reaching the VM thaws', async () => {
    await frozenB2();
    const since = Date.now();
    const forced = { command: 'guest-fsfreeze-thaw', timeoutMs: 5_000, by: 'x', fence: { forced: true } };
    const noAdmin = await agentCall(nodes.B, 'b2', forced, { name: 'wr', scopes: ['read', 'write'] });
    expect([noAdmin.status, noAdmin.body.code, noAdmin.body.detail]).toEqual([403, 'FORBIDDEN', 'force=true needs the admin scope']);
    const noGlob = await agentCall(nodes.B, 'b2', forced, { name: 'adm', scopes: ['read', 'write', 'admin'], vms: ['b1'] });
    expect([noGlob.status, noGlob.body.code, noGlob.body.vm]).toEqual([403, 'FORBIDDEN', 'b2']);
    const noWrite = await agentCall(nodes.B, 'b2', forced, { name: 'reader', scopes: ['read'] });
    expect([noWrite.status, noWrite.body.code]).toEqual([403, 'FORBIDDEN']);
    const noRead = await agentCall(nodes.B, 'b2', { command: 'guest-fsfreeze-status', timeoutMs: 5_000, by: 'x' }, { name: 'none', scopes: [] });
    expect([noRead.status, noRead.body.code]).toEqual([403, 'FORBIDDEN']);
    expect(nodes.B.vm.b2.state.frozen).toBe(true);
    expect(commandsSince(nodes.B.vm.b2, since)).toEqual([]);
    // the one exception, as on the public route: with the lease store down (here: B's store refusing
    // reads), a thaw without a verifiable lease goes for a write principal (the entry node sends its
    // unverified-lease thaw that way)
    const store = nodes.B.app.services.store;
    const getByKey = store.getByKey.bind(store);
    store.getByKey = async () => {
      throw errors.storeUnavailable('test: the store is down');
    };
    try {
      const unverified = await agentCall(nodes.B, 'b2', forced, { name: 'wr', scopes: ['read', 'write'], vms: ['b*'] });
      expect(unverified.status).toBe(200);
    } finally {
      store.getByKey = getByKey;
    }
    expect(nodes.B.vm.b2.state.frozen).toBe(false);
    expect(commandsSince(nodes.B.vm.b2, since)).toEqual(['guest-fsfreeze-thaw']);
    // (the internal call sends the thaw only; the lease is the entry node's to end)
    expect((await json(nodes.B, 'DELETE', '/v1/vms/b2/fsfreeze?force=true', bearer(TOKENS.ops))).status).toBe(200);
    await frozenB2();
    const ok = await agentCall(nodes.B, 'b2', forced, { name: 'adm2', scopes: ['read', 'write', 'admin'], vms: ['b*'] });
    expect(ok.status).toBe(200);
    expect(nodes.B.vm.b2.state.frozen).toBe(false);
    await json(nodes.B, 'DELETE', '/v1/vms/b2/fsfreeze?force=true', bearer(TOKENS.ops));
  });

  it("a group across nodes carries the caller's real principal: grp (write, a1+b1) freezes and thaws through A; adm (b1 only) may not reach a1", async () => {
    const created = await json(nodes.A, 'POST', '/v1/freeze-groups', bearer(TOKENS.grp), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect(created.status).toBe(201);
    expect([nodes.A.vm.a1.state.frozen, nodes.B.vm.b1.state.frozen]).toEqual([true, true]);
    const thawed = await json(nodes.A, 'DELETE', `/v1/freeze-groups/${String(created.body.id)}?leaseId=${String(created.body.leaseId)}`, bearer(TOKENS.grp));
    expect([thawed.status, thawed.body.consistent]).toEqual([200, true]);
    expect([nodes.A.vm.a1.state.frozen, nodes.B.vm.b1.state.frozen]).toEqual([false, false]);
    const out = await json(nodes.A, 'POST', '/v1/freeze-groups', bearer(TOKENS.adm), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect([out.status, out.body.code]).toEqual([403, 'FORBIDDEN']);
    // it named a1 itself: the refusal may say so
    expect(out.body.denied).toEqual(['a1']);
    expect([nodes.A.vm.a1.state.frozen, nodes.B.vm.b1.state.frozen]).toEqual([false, false]);
    // a group it names by id only: refused without naming the VM it may not see (h10 L5)
    const other = await json(nodes.A, 'POST', '/v1/freeze-groups', bearer(TOKENS.grp), { vms: ['a1', 'b1'], ttlSeconds: 30 });
    expect(other.status).toBe(201);
    const id = String(other.body.id);
    for (const [method, url] of [['GET', `/v1/freeze-groups/${id}`], ['DELETE', `/v1/freeze-groups/${id}?leaseId=${String(other.body.leaseId)}`]] as const) {
      const r = await json(nodes.B, method, url, bearer(TOKENS.adm));
      expect([r.status, r.body.code], `${method} ${url}`).toEqual([403, 'FORBIDDEN']);
      expect(r.body.denied).toBeUndefined();
      expect(String(r.body.detail)).not.toMatch(/\ba1\b/);
    }
    expect((await json(nodes.A, 'DELETE', `/v1/freeze-groups/${id}?leaseId=${String(other.body.leaseId)}`, bearer(TOKENS.grp))).status).toBe(200);
  });
});
