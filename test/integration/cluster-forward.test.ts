/**
 * Forwarding (issue 17 item 2): in-process gateways in cluster mode on ONE real redis-server (M's
 * membership, not a fake), each with its own simulated VMs, over real HTTP on 127.0.0.1. A request
 * for a VM another node serves is answered through any node as that node answers it: JSON, problem
 * bodies, streamed files both ways with Range, exec wait; the serving node enforces the carried
 * principal; a forwarded request is never forwarded again; a node that dies mid-way is 503 at once.
 * The directory's `gone` and `conflict` (which need a node to stop heartbeating, or a name served
 * twice) are driven by a fake ClusterService at the end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import pino from 'pino';
import { request as httpRequest } from 'undici';
import { buildApp } from '../../src/app.js';
import type { ClusterService, VmLocation } from '../../src/cluster/directory.js';
import { signHop } from '../../src/cluster/hop.js';
import { createGateway } from '../../src/gateway.js';
import { testConfig } from '../helpers/app.js';
import type { TestRedis } from '../helpers/redis.js';
import { startClusterRig, type ClusterRig, type RigNode } from './cluster-rig.js';
import { pseudoRandom, sha256, until } from './files-support.js';

const SECRET = `cluster-forward-test-secret-${'y'.repeat(24)}`;
const TOKENS = { ops: 'ops-token-0123456789abcdef01', reader: 'reader-token-0123456789abcdef', aonly: 'aonly-token-0123456789abcdef0' };
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

type TestNode = RigNode;

let rig: ClusterRig;
let redis: TestRedis;
let secretFile: string;
let nodes: Record<string, TestNode>;

async function call(node: TestNode, method: string, url: string, headers: Record<string, string> = {}, body?: unknown) {
  const res = await httpRequest(`${node.url}${url}`, {
    method: method as 'GET',
    headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, body: text && /json/.test(String(res.headers['content-type'])) ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

beforeAll(async () => {
  rig = await startClusterRig({
    tag: 'cfw',
    secret: SECRET,
    tokens: [
      { name: 'ops', token: TOKENS.ops, scopes: ['read', 'write', 'admin'] },
      { name: 'reader', token: TOKENS.reader, scopes: ['read'] },
      { name: 'aonly', token: TOKENS.aonly, scopes: ['read', 'write', 'admin'], vms: ['a*'] },
    ],
    nodes: { A: ['a1'], B: ['b1'], C: ['c1'] },
    disabled: { b1: ['guest-get-users'] },
    cluster: { forwardTimeoutMs: 1_000 },
    // a body that arrived is not cut by the body timer while its forwarded answer is awaited
    server: { requestTimeoutMs: 1_000, headersTimeoutMs: 1_000 },
    config: { exec: { pollInitialMs: 50, pollMaxMs: 100 }, files: { readChunkBytes: 65_536, writeChunkBytes: 65_536 } },
    logEnv: 'FWD_LOG',
  });
  ({ redis, secretFile, nodes } = rig);
}, 20_000);

afterAll(async () => {
  await rig?.close();
});

describe('forwarded requests are answered as the serving node answers them', () => {
  it('JSON GET: same status, body and headers, X-Qga-Node and the same request id on both nodes', async () => {
    const direct = await call(nodes.B, 'GET', '/v1/vms/b1/hostname', bearer(TOKENS.ops));
    const via = await call(nodes.A, 'GET', '/v1/vms/b1/hostname', { ...bearer(TOKENS.ops), 'x-request-id': 'fwd-get-1' });
    expect(direct.status).toBe(200);
    expect(via.status).toBe(200);
    expect(via.body).toEqual(direct.body);
    expect(via.headers['content-type']).toBe(direct.headers['content-type']);
    expect(via.headers['x-qga-node']).toBe('B');
    expect(via.headers['x-request-id']).toBe('fwd-get-1');
    expect(via.headers.connection).toBe('keep-alive');
    // the entry node's own Date and a length matching the body (not copied from the serving node's answer)
    expect([typeof via.headers.date, Number(via.headers['content-length'])]).toEqual(['string', Buffer.byteLength(via.text)]);
    // Fastify's HEAD of a GET route is forwarded too
    const head = await call(nodes.A, 'HEAD', '/v1/vms/b1/hostname', bearer(TOKENS.ops));
    expect(head.status).toBe(200);
    expect(head.headers['x-qga-node']).toBe('B');
    expect(head.text).toBe('');
    // a long poll: its own timeout bounds the forwarded call
    const waited = await call(nodes.C, 'GET', '/v1/vms/b1/wait?for=agent&timeout=5', bearer(TOKENS.ops));
    expect(waited.status).toBe(200);
    expect(waited.headers['x-qga-node']).toBe('B');
    // a VM served here: no forwarding, no X-Qga-Node
    const local = await call(nodes.A, 'GET', '/v1/vms/a1/hostname', bearer(TOKENS.ops));
    expect(local.status).toBe(200);
    expect(local.headers['x-qga-node']).toBeUndefined();
  });

  it('JSON POST (exec, 202 + Location) and exec wait beyond cluster.forwardTimeoutMs (bound from the wait)', async () => {
    const started = await call(nodes.A, 'POST', '/v1/vms/b1/exec', bearer(TOKENS.ops), { path: '/bin/echo', arg: ['hi'] });
    expect(started.status).toBe(202);
    expect(started.headers['x-qga-node']).toBe('B');
    const pid = Number(started.body?.pid);
    expect(started.headers.location).toBe(`/v1/vms/b1/exec/${pid}`);
    const status = await call(nodes.C, 'GET', `/v1/vms/b1/exec/${pid}?wait=5`, bearer(TOKENS.ops));
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ pid, exited: true, exitcode: 0, outText: 'hi\n' });
    // forwardTimeoutMs and server.requestTimeoutMs are 1000 ms: the 1.5 s sleep is answered because
    // the bound counts the wait, and the body (sent 100 ms after the headers) is in
    const t0 = Date.now();
    const json = Buffer.from(JSON.stringify({ path: '/bin/sleep', arg: ['1.5'], wait: 10 }));
    const body = new PassThrough();
    const pending = httpRequest(`${nodes.A.url}/v1/vms/b1/exec`, {
      method: 'POST',
      headers: { ...bearer(TOKENS.ops), 'content-type': 'application/json', 'content-length': String(json.length) },
      body,
    });
    setTimeout(() => body.end(json), 100);
    const res = await pending;
    const waited = (await res.body.json()) as Record<string, unknown>;
    const ms = Date.now() - t0;
    expect(res.statusCode).toBe(200);
    expect(waited).toMatchObject({ exited: true, exitcode: 0 });
    expect(ms).toBeGreaterThanOrEqual(1_400);
    expect(ms).toBeLessThan(4_000);
  });

  it('a problem answer (404) crosses unchanged', async () => {
    const direct = await call(nodes.B, 'GET', '/v1/vms/b1/exec/987654', bearer(TOKENS.ops));
    const via = await call(nodes.A, 'GET', '/v1/vms/b1/exec/987654', bearer(TOKENS.ops));
    expect(direct.status).toBe(404);
    expect(via.status).toBe(404);
    expect(via.headers['content-type']).toBe('application/problem+json; charset=utf-8');
    expect(via.body).toEqual(direct.body);
    expect(via.headers['x-qga-node']).toBe('B');
  });

  it('streamed upload (4 MiB, written on B while the client still sends) and download with Range and HEAD', async () => {
    const data = pseudoRandom(4 * 1024 * 1024, 7);
    const body = new PassThrough();
    const writes = () => nodes.B.vm.b1.stats.commandLog.filter((c) => c.command === 'guest-file-write').length;
    const before = writes();
    const put = httpRequest(`${nodes.A.url}/v1/vms/b1/files/content?path=/tmp/big.bin`, {
      method: 'PUT',
      headers: { ...bearer(TOKENS.ops), 'content-type': 'application/octet-stream', 'content-length': String(data.length) },
      body,
    });
    body.write(data.subarray(0, data.length / 2));
    // the first half reached B's agent before the second half is even sent: streamed, not buffered at A
    await until(() => writes() - before >= 8, 5_000, 'writes on B during the upload');
    body.end(data.subarray(data.length / 2));
    const res = await put;
    const result = (await res.body.json()) as Record<string, unknown>;
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-qga-node']).toBe('B');
    expect(result).toMatchObject({ path: '/tmp/big.bin', bytesWritten: data.length });

    const whole = await httpRequest(`${nodes.C.url}/v1/vms/b1/files/content?path=/tmp/big.bin`, { headers: bearer(TOKENS.ops) });
    const got = Buffer.from(await whole.body.arrayBuffer());
    expect(whole.statusCode).toBe(200);
    expect(whole.headers['content-length']).toBe(String(data.length));
    expect(whole.headers['x-qga-node']).toBe('B');
    expect(sha256(got)).toBe(sha256(data));

    const part = await httpRequest(`${nodes.A.url}/v1/vms/b1/files/content?path=/tmp/big.bin`, { headers: { ...bearer(TOKENS.ops), range: 'bytes=1000000-1999999' } });
    const bytes = Buffer.from(await part.body.arrayBuffer());
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 1000000-1999999/${data.length}`);
    expect(part.headers['accept-ranges']).toBe('bytes');
    expect(bytes.equals(data.subarray(1_000_000, 2_000_000))).toBe(true);

    const head = await httpRequest(`${nodes.A.url}/v1/vms/b1/files/content?path=/tmp/big.bin`, { method: 'HEAD', headers: bearer(TOKENS.ops) });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe(String(data.length));
    expect(head.headers['x-qga-node']).toBe('B');
    expect((await head.body.arrayBuffer()).byteLength).toBe(0);

    const outside = await call(nodes.A, 'GET', '/v1/vms/b1/files/content?path=/tmp/big.bin', { ...bearer(TOKENS.ops), range: `bytes=${data.length + 10}-` });
    expect(outside.status).toBe(416);
    expect(outside.headers['content-range']).toBe(`bytes */${data.length}`);
    expect(outside.body?.code).toBe('RANGE_NOT_SATISFIABLE');
  });
});

describe('a body over the limit', () => {
  it('declared: refused at the entry node as the serving node would (413), the connection closed before the body is read', async () => {
    const total = 20 * 1024 * 1024;
    const s = net.connect(nodes.A.port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    let response = '';
    let written = 0;
    let closed = false;
    s.on('data', (d: Buffer) => (response += d.toString('latin1')));
    s.on('error', () => undefined);
    const done = new Promise<void>((r) => s.once('close', () => ((closed = true), r())));
    s.write(`POST /v1/vms/b1/qga/guest-ping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKENS.ops}\r\nContent-Type: application/json\r\nContent-Length: ${total}\r\n\r\n`);
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    while (!closed && written < total) {
      written += chunk.length;
      if (!s.write(chunk)) await Promise.race([new Promise((r) => s.once('drain', r)), done]);
    }
    await Promise.race([done, new Promise((r) => setTimeout(r, 5_000))]);
    s.destroy();
    expect(response.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
    expect(response).toContain('"code":"PAYLOAD_TOO_LARGE"');
    expect(closed).toBe(true);
    expect(written).toBeLessThan(total / 2);
  });
});

describe('the serving node enforces the carried principal', () => {
  const hopHeaders = (method: string, url: string, principal: { name: string; scopes: string[]; vms?: string[] }, secret = SECRET) =>
    signHop(secret, { method, url, entryNode: 'A', principal });

  it('a principal limited to a1* is refused for b1 at the entry node', async () => {
    const r = await call(nodes.A, 'GET', '/v1/vms/b1/hostname', bearer(TOKENS.aonly));
    expect(r.status).toBe(403);
    expect(r.body?.code).toBe('FORBIDDEN');
    expect(r.headers['x-qga-node']).toBeUndefined();
  });

  it('a hop with a wrong or stale signature is 401; a valid one for a principal lacking the scope or the VM is 403 at B', async () => {
    const url = '/v1/vms/b1/hostname';
    const forged = await call(nodes.B, 'GET', url, hopHeaders('GET', url, { name: 'ops', scopes: ['read'] }, `${SECRET}-wrong`));
    expect(forged.status).toBe(401);
    expect(forged.body?.code).toBe('UNAUTHENTICATED');
    const stale = await call(nodes.B, 'GET', url, signHop(SECRET, { method: 'GET', url, entryNode: 'A', principal: { name: 'ops', scopes: ['read'] }, now: Date.now() - 120_000 }));
    expect(stale.status).toBe(401);
    // a valid hop with a bearer token of more scopes: the carried principal counts, not the token
    const execUrl = '/v1/vms/b1/exec';
    const noScope = await call(nodes.B, 'POST', execUrl, { ...hopHeaders('POST', execUrl, { name: 'reader', scopes: ['read'] }), ...bearer(TOKENS.ops) }, { path: '/bin/true' });
    expect(noScope.status).toBe(403);
    expect(noScope.body?.code).toBe('FORBIDDEN');
    expect(noScope.headers['x-qga-node']).toBe('B');
    const noVm = await call(nodes.B, 'GET', url, hopHeaders('GET', url, { name: 'aonly', scopes: ['read'], vms: ['a*'] }));
    expect(noVm.status).toBe(403);
    const ok = await call(nodes.B, 'GET', url, hopHeaders('GET', url, { name: 'aonly', scopes: ['read'], vms: ['b*'] }));
    expect(ok.status).toBe(200);
    expect(ok.headers['x-qga-node']).toBe('B');
  });

  it('GET /v1/nodes to a token restricted to some VMs: the answering node and the nodes serving a VM it may see, vmCount counting those only', async () => {
    const { B } = rig.nodes;
    const all = await call(B, 'GET', '/v1/nodes', bearer(TOKENS.ops));
    expect((all.body?.items as Array<{ id: string; vmCount: number }>).map((n) => [n.id, n.vmCount])).toEqual([['A', 1], ['B', 1], ['C', 1]]);
    // one secret: the others sign with it (the answering node itself is not compared)
    expect((all.body?.items as Array<{ id: string; sameSecret?: boolean }>).map((n) => [n.id, n.sameSecret])).toEqual([['A', true], ['B', undefined], ['C', true]]);
    const some = await call(B, 'GET', '/v1/nodes', bearer(TOKENS.aonly));
    expect(some.status).toBe(200);
    expect((some.body?.items as Array<{ id: string; vmCount: number; self: boolean }>).map((n) => [n.id, n.vmCount, n.self])).toEqual([['A', 1, false], ['B', 0, true]]);
  });

  it("a 403 COMMAND_DISABLED (the guest admin's choice) is not audited as an access denial, on the entry node nor the serving one; a scope refusal (at the entry node) is", async () => {
    const { A, B } = rig.nodes;
    const before = { A: A.audits.length, B: B.audits.length };
    const disabled = await call(A, 'GET', '/v1/vms/b1/users', bearer(TOKENS.ops));
    expect([disabled.status, disabled.body?.code, disabled.headers['x-qga-node']]).toEqual([403, 'COMMAND_DISABLED', 'B']);
    const scope = await call(A, 'PUT', '/v1/vms/b1/time', bearer(TOKENS.reader), {});
    expect([scope.status, scope.body?.code]).toEqual([403, 'FORBIDDEN']);
    // the scope refusal's record (the entry node checks scopes before forwarding) comes after the other request's
    await until(() => A.audits.length > before.A, 3_000, 'the scope refusal audited');
    const denied = (n: typeof A, from: number) => n.audits.slice(from).filter((a) => a.action === 'denied').map((a) => [a.route, a.status]);
    expect(denied(A, before.A)).toEqual([['/v1/vms/:vm/time', 403]]);
    expect(denied(B, before.B)).toEqual([]);
  });

  it('a forwarded request for a VM not served there is 503 NODE_UNAVAILABLE, not forwarded again (no loop)', async () => {
    const url = '/v1/vms/a1/hostname';
    const t0 = Date.now();
    const r = await call(nodes.B, 'GET', url, hopHeaders('GET', url, { name: 'ops', scopes: ['read'] }));
    expect(Date.now() - t0).toBeLessThan(500);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ code: 'NODE_UNAVAILABLE', vm: 'a1', node: 'B' });
    expect(r.body?.detail).toMatch(/\(it moved or is gone\)/);
    expect(r.headers['retry-after']).toMatch(/^[1-9][0-9]*$/);
    expect(r.headers['x-qga-node']).toBe('B');
    // B cannot read Redis (its directory stale): the detail says so, not that the VM moved
    const cluster = nodes.B.app.services.cluster as object;
    const since = Date.parse('2026-12-01T10:00:00.000Z');
    Object.defineProperty(cluster, 'staleSince', { configurable: true, get: () => since });
    try {
      const s = await call(nodes.B, 'GET', url, hopHeaders('GET', url, { name: 'ops', scopes: ['read'] }));
      expect([s.status, s.body?.code]).toEqual([503, 'NODE_UNAVAILABLE']);
      expect(s.body?.detail).toContain('this node has not read Redis since 2026-12-01T10:00:00.000Z');
    } finally {
      delete (cluster as { staleSince?: unknown }).staleSince;
    }
  });
});

describe('a client that goes away', () => {
  it('takes its forwarded exec wait with it: the serving node sees the call end (its per-node count back to 0)', async () => {
    const ac = new AbortController();
    const pending = httpRequest(`${nodes.A.url}/v1/vms/b1/exec`, {
      method: 'POST',
      headers: { ...bearer(TOKENS.ops), 'content-type': 'application/json' },
      body: JSON.stringify({ path: '/bin/sleep', arg: ['20'], wait: 30 }),
      signal: ac.signal,
    }).catch((e: unknown) => e);
    // counted at B against node A (not against the principal), as long as it is in flight
    await until(() => nodes.B.app.admission.inFlight({ node: 'A' }) === 1, 5_000, 'forwarded call in flight at B');
    expect(nodes.B.app.admission.inFlight({ token: 'ops' })).toBe(0);
    expect(nodes.A.app.admission.inFlight({ token: 'ops' })).toBe(1);
    const t0 = Date.now();
    ac.abort();
    expect(await pending).toBeInstanceOf(Error);
    await until(() => nodes.B.app.admission.inFlight({ node: 'A' }) === 0 && nodes.A.app.admission.inFlight({ token: 'ops' }) === 0, 2_000, 'call ended on both nodes');
    expect(Date.now() - t0).toBeLessThan(1_000);
  });
});

describe('a node that dies mid-way', () => {
  it('an exec wait in flight to C is 503 NODE_UNAVAILABLE as soon as C goes, and so is the next request', async () => {
    const c = nodes.C;
    const pending = call(nodes.A, 'POST', '/v1/vms/c1/exec', bearer(TOKENS.ops), { path: '/bin/sleep', arg: ['20'], wait: 30 });
    await until(() => c.vm.c1.stats.commandLog.some((x) => x.command === 'guest-exec'), 5_000, 'exec started on C');
    const t0 = Date.now();
    // the process dies: its listening socket and every connection go at once
    c.app.server.close();
    c.app.server.closeAllConnections();
    const r = await pending;
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ code: 'NODE_UNAVAILABLE', vm: 'c1', node: 'C' });
    expect(r.headers['x-qga-node']).toBe('C');
    const t1 = Date.now();
    const next = await call(nodes.A, 'GET', '/v1/vms/c1/hostname', bearer(TOKENS.ops));
    expect(Date.now() - t1).toBeLessThan(1_000);
    expect(next.status).toBe(503);
    expect(next.body?.code).toBe('NODE_UNAVAILABLE');
    // answered and logged in their request lines: not also one warning with a stack each from
    // reply-from (h12 F5)
    expect(nodes.A.warnings.filter((w) => w.msg === 'response errored')).toEqual([]);
  });
});

describe('the directory says gone or conflict (fake ClusterService)', () => {
  it('answers 503 NODE_UNAVAILABLE at once, naming the node(s)', async () => {
    const where: Record<string, VmLocation> = {
      lost: { kind: 'gone', node: { id: 'Z', url: 'http://127.0.0.1:9', lastSeen: Date.now() - 60_000, vmCount: 1, version: 'x', alive: false } },
      twice: { kind: 'conflict', nodes: ['X', 'Y'] },
    };
    const fake: ClusterService = {
      selfId: 'F',
      selfUrl: 'http://127.0.0.1:1',
      locate: (vm) => where[vm] ?? { kind: 'unknown' },
      nodes: () => [],
      node: () => undefined,
    };
    const config = testConfig({ config: { cluster: { enabled: true, id: 'F', advertiseUrl: 'http://127.0.0.1:1', secretFile }, store: { type: 'redis', redisUrl: redis.url } } });
    const gateway = createGateway(testConfig(), pino({ level: 'silent' }));
    const app = await buildApp({ config, gateway: { ...gateway, config, cluster: fake }, logger: pino({ level: 'silent' }), env: {} });
    await app.ready();
    try {
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const r = await app.inject({ method: 'GET', url: '/v1/vms/lost/hostname' });
        expect(performance.now() - t0).toBeLessThan(100);
        expect(r.statusCode).toBe(503);
        expect(r.json()).toMatchObject({ code: 'NODE_UNAVAILABLE', vm: 'lost', node: 'Z', sent: false });
        expect(r.headers['x-qga-node']).toBe('Z');
        expect(r.headers['retry-after']).toBe(String(Math.ceil(config.cluster.heartbeatIntervalMs / 1000)));
      }
      const c = await app.inject({ method: 'POST', url: '/v1/vms/twice/exec', payload: { path: '/bin/true' } });
      expect(c.statusCode).toBe(503);
      // the same node list as a group member's conflict (remote-agent.ts), no `node` (several serve it);
      // no Retry-After: it lasts until a rename
      expect(c.json()).toMatchObject({ code: 'NODE_UNAVAILABLE', vm: 'twice', nodes: ['X', 'Y'], sent: false });
      expect(c.json()).not.toHaveProperty('node');
      expect(c.headers['retry-after']).toBeUndefined();
      const unknown = await app.inject({ method: 'GET', url: '/v1/vms/nobody/hostname' });
      expect(unknown.statusCode).toBe(404);
      expect(unknown.json().code).toBe('VM_NOT_FOUND');
    } finally {
      await app.close();
    }
  });
});
